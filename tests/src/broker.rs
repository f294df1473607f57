//! RabbitMQ isolation for tests: every exchange and queue of a test carries
//! a prefix of its own, deleted when the test ends.

use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use workers::topology::Names;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into())
}

pub struct Broker {
    pub prefix: String,
    pub names: Names,
}

impl Broker {
    pub fn new() -> Broker {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        Broker { names: Names::new(&prefix), prefix }
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("RabbitMQ is up")
    }

    /// Whether a queue exists (a passive declare succeeds).
    pub async fn exists(&self, queue: &str) -> bool {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let found = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await
            .is_ok();
        let _ = conn.close(200, "".into()).await;
        found
    }

    /// Messages waiting in a queue, and consumers attached to it.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "".into()).await;
        (q.message_count(), q.consumer_count())
    }

    /// Messages waiting in a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        self.counts(queue).await.0
    }

    /// Publishes raw bytes to the events exchange, as a duplicate or a poison would arrive.
    pub async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        ch.basic_publish(
            self.names.events.as_str().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_message_id(message_id.into()).with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = conn.close(200, "".into()).await;
    }
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let names = self.names.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await else { return };
                let Ok(ch) = conn.create_channel().await else { return };
                for q in names.queues() {
                    let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
                }
                for e in [&names.events, &names.dead_letter_exchange] {
                    let _ = ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default()).await;
                }
                let _ = conn.close(200, "".into()).await;
            });
        })
        .join();
    }
}
