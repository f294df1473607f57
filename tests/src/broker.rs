//! RabbitMQ isolation for tests: every exchange and queue of a test carries
//! a prefix of its own, deleted when the test ends.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use workers::topology::Names;

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into())
}

pub struct Broker {
    pub prefix: String,
    pub names: Names,
    /// The broker these names live on.
    pub url: String,
}

impl Broker {
    pub fn new() -> Broker {
        Broker::on(&amqp_url())
    }

    /// A prefix of its own on another broker (a private node, say).
    pub fn on(url: &str) -> Broker {
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        Broker { names: Names::new(&prefix), prefix, url: url.to_owned() }
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default()).await.expect("RabbitMQ is up")
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

    /// Publishes raw bytes as the relay publishes an event of type
    /// `routing_key` (into each consumer's queue that must have it, and the
    /// topic exchange), as a duplicate or a poison would arrive.
    ///
    /// Each copy is published until its queue takes it. A quorum queue that
    /// a worker is still declaring (its name already passively declarable,
    /// its Raft group maybe not yet running) can refuse a publish with a
    /// nack, and one not declared yet returns it; the relay republishes in
    /// both cases. This republishes only the refused copy, so no queue ever
    /// holds two.
    pub async fn publish(&self, routing_key: &str, message_id: &str, body: &[u8]) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for route in self.names.routes(routing_key) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let copy =
                    workers::relay::publish_copy(&ch, &route, message_id, routing_key, body, None).await.unwrap();
                match workers::relay::settle(message_id, vec![copy]).await {
                    Ok(workers::relay::Settled::Delivered) => break,
                    refused if std::time::Instant::now() < deadline => {
                        eprintln!("{route:?} refused {message_id} ({refused:?}); publishing it again");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    refused => panic!("{route:?} refused {message_id} for 30 s: {refused:?}"),
                }
            }
        }
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
        let (names, url) = (self.names.clone(), self.url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let connect = Connection::connect(&url, ConnectionProperties::default());
                // A private node may be gone already, with everything on it.
                let Ok(Ok(conn)) = tokio::time::timeout(std::time::Duration::from_secs(5), connect).await else {
                    return;
                };
                let Ok(ch) = conn.create_channel().await else { return };
                let retired: Vec<String> = names.retired().into_iter().map(|r| r.name).collect();
                for q in names.queues().into_iter().chain(retired.iter().map(String::as_str)) {
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
