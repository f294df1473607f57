//! Outages for real: PostgreSQL stopped or killed under the workers (a
//! private cluster), and a dead-letter queue the broker cannot reach (a
//! private RabbitMQ node). A database outage is not a message's fault: it
//! dead-letters nothing, and every paid order's reservation is committed
//! once the database is back. Dead-lettering itself drops nothing.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use ledger_tests::broker::Broker;
use ledger_tests::proxy::Proxy;
use ledger_tests::servers::{PrivatePostgres, PrivateRabbit};
use ledger_tests::shop::{shop, shop_on, Shop};
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, spawn_worker_process, start_workers, Role};

/// A worker process, killed when the test ends however it ends.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three paid orders whose `charge.succeeded` waits in the inventory queue,
/// no inventory worker running yet; returns their reservations.
async fn three_paid_orders_queued(s: &Shop, broker: &Broker) -> Vec<String> {
    // The relay declares the queues when it connects, which a loaded machine delays.
    eventually(30, "the relay declared the queues", || async { broker.exists(&broker.names.inventory).await }).await;
    let mut holds = Vec::new();
    for i in 0..3 {
        holds.push(s.purchase(&format!("outage-{i}"), 1).await);
    }
    eventually(20, "three paid orders wait in the inventory queue", || async {
        broker.depth(&broker.names.inventory).await == 3
    })
    .await;
    holds
}

/// The set-up of the outage tests: a shop on a private PostgreSQL (so that
/// it can be stopped), its broker names and mail sink, the relay running,
/// and three paid orders waiting in the inventory queue. `tweak` adjusts the
/// workers' settings before the relay declares the queues.
struct Held {
    pg: PrivatePostgres,
    s: Shop,
    broker: Broker,
    smtp: SmtpServer,
    config: workers::config::Config,
    _relay: ledger_tests::Workers,
}

async fn three_paid_orders_held(tweak: impl FnOnce(&mut workers::config::Config)) -> Held {
    let pg = PrivatePostgres::new().await.unwrap();
    let s = shop_on(&pg).await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let mut config = s.config(&broker, &smtp);
    tweak(&mut config);
    let _relay = start_workers(&config, &[Role::Relay]);
    three_paid_orders_queued(&s, &broker).await;
    Held { pg, s, broker, smtp, config, _relay }
}

const COMMITTED: &str = "SELECT count(*) FROM reservations WHERE status = 'committed'";

/// Waits, checking every second that nothing is dead-lettered meanwhile.
async fn nothing_dead_lettered_for(broker: &Broker, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "a paid order was dead-lettered");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The `x-delivery-count` of every message in `queue`, read with
/// `basic.get` and left there. (Closing the channel returns them, which
/// counts one more delivery each.)
async fn delivery_counts(broker: &Broker, queue: &str) -> Vec<i64> {
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let mut counts = Vec::new();
    while let Some(m) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.unwrap() {
        let count = m.delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
        counts.push(match count {
            None => 0,
            Some(AMQPValue::LongLongInt(n)) => n,
            Some(AMQPValue::LongInt(n)) => i64::from(n),
            Some(other) => panic!("x-delivery-count {other:?}"),
        });
    }
    let _ = conn.close(200, "".into()).await;
    counts
}

#[actix_web::test]
async fn hole_4_a_postgres_outage_dead_letters_no_paid_order() {
    let Held { pg, s, broker, smtp, config, _relay } = three_paid_orders_held(|_| {}).await;

    // PostgreSQL stops for 15 seconds under running inventory and email workers.
    pg.stop().await.unwrap();
    let _worker = Proc(spawn_worker_process(&config, "inventory", None));
    let _email = Proc(spawn_worker_process(&config, "email", None));
    nothing_dead_lettered_for(&broker, Duration::from_secs(15)).await;
    for queue in [&broker.names.inventory, &broker.names.email] {
        let (ready, consumers) = broker.counts(queue).await;
        assert_eq!((ready, consumers), (0, 1), "{queue}: the worker holds the deliveries while it waits");
    }

    pg.start().await.unwrap();
    let back = Instant::now();
    eventually(60, "every paid order's reservation is committed", || async { s.scalar(COMMITTED).await == 3 }).await;
    eprintln!("outage of 15 s: the three reservations committed {:?} after PostgreSQL was back", back.elapsed());
    eventually(30, "the inventory queue drains", || async { broker.depth(&broker.names.inventory).await == 0 }).await;
    assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "nothing dead-lettered");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 3, "each once");
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await, 3);
    // The email worker waited for the database before acking: no email lost.
    eventually(30, "every email is sent", || async { smtp.mails().len() == 3 }).await;
    // The mail server has it before the worker records it sent.
    eventually(10, "each email is recorded sent", || async {
        s.scalar("SELECT count(*) FROM emails WHERE status = 'sent'").await == 3
    })
    .await;
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn hole_4_an_outage_longer_than_the_delivery_limit_times_any_retry_delay_dead_letters_nothing() {
    // A third return of a message dead-letters it.
    let Held { pg, s, broker, smtp: _smtp, config, _relay } =
        three_paid_orders_held(|c| c.queue_delivery_limit = 2).await;

    // PostgreSQL crashes and stays away for 40 s: longer than the delivery
    // limit times the longest retry delay of the workers (2 × 10 s).
    let outage = Instant::now();
    pg.kill().await.unwrap();
    let mut worker = Proc(spawn_worker_process(&config, "inventory", None));
    nothing_dead_lettered_for(&broker, Duration::from_secs(15)).await;

    // The worker dies while it waits: its deliveries return to the queue,
    // which counts one delivery each, and only that one. Fifteen seconds of
    // waiting spent nothing.
    let _ = worker.0.kill();
    let _ = worker.0.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivery_counts(&broker, &broker.names.inventory).await, [1, 1, 1]);
    // Reading them returned them once more: one more return would dead-letter them.
    worker = Proc(spawn_worker_process(&config, "inventory", None));
    nothing_dead_lettered_for(&broker, Duration::from_secs(40).saturating_sub(outage.elapsed())).await;

    pg.start().await.unwrap();
    let back = Instant::now();
    eventually(60, "every paid order's reservation is committed", || async { s.scalar(COMMITTED).await == 3 }).await;
    eprintln!(
        "outage of {:?}: the three reservations committed {:?} after PostgreSQL was back",
        back - outage,
        back.elapsed()
    );
    // A purchase made after the outage goes through the whole pipeline too.
    let after = s.purchase("after-outage", 1).await;
    eventually(60, "the new order is committed", || async { s.status(&after).await == "committed" }).await;
    eprintln!("a purchase made after the outage was committed {:?} after PostgreSQL was back", back.elapsed());
    eventually(30, "the inventory queue drains", || async { broker.depth(&broker.names.inventory).await == 0 }).await;
    assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "nothing dead-lettered");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 4, "each once");
    s.audit_clean(true).await;
    drop(worker);
}

#[actix_web::test]
async fn hole_4_a_message_dead_lettered_while_the_dead_letter_queue_is_unreachable_is_kept_not_dropped() {
    let rabbit = PrivateRabbit::new().await.unwrap();
    // The node retries an unconfirmed dead-lettering after a second rather than three minutes.
    std::fs::write(
        rabbit.dir().join("advanced.config"),
        "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 1000}]}].\n",
    )
    .unwrap();
    rabbit.restart().await.unwrap();
    let s = shop().await;
    let broker = Broker::on(&rabbit.amqp_url());
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _inventory = start_workers(&config, &[Role::Inventory]);
    // The worker consumes once it has declared (and bound) everything, so the
    // unbinding below cannot be undone by its declaration.
    eventually(30, "the worker declared the queues and consumes", || async {
        broker.exists(&broker.names.inventory).await && broker.counts(&broker.names.inventory).await.1 == 1
    })
    .await;

    // The dead-letter queue loses its binding: dead letters have nowhere to go.
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (dlq, dlx) = (broker.names.dead_letter_queue.as_str(), broker.names.dead_letter_exchange.as_str());
    ch.queue_unbind(dlq.into(), dlx.into(), "".into(), FieldTable::default()).await.unwrap();
    // A poison message, rejected by the worker straight to dead-lettering.
    broker.publish("charge.succeeded", "poison-kept", b"{not json").await;
    eventually(20, "the worker rejected it", || async { broker.counts(&broker.names.inventory).await.0 == 0 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(broker.depth(dlq).await, 0, "nowhere to go yet");

    // The binding comes back: the dead letter was kept, and arrives.
    ch.queue_bind(dlq.into(), dlx.into(), "".into(), QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    eventually(30, "the dead letter arrives", || async { broker.depth(dlq).await == 1 }).await;
    let dead = workers::dlq::list(&config).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id.as_deref(), Some("poison-kept"));
    assert_eq!(dead[0].reason.as_deref(), Some("rejected"));
}

#[actix_web::test]
async fn hole_4_connections_lost_while_paid_orders_are_held_dead_letter_nothing() {
    let Held { pg, s, broker, smtp: _smtp, config, _relay } = three_paid_orders_held(|_| {}).await;

    // While PostgreSQL is away an inventory worker holds the three
    // deliveries, and loses its connection, again and again (killed here; a
    // broker restart or a network cut does the same): each loss brings them
    // back to the queue, which RabbitMQ 3.10 counts as one more delivery
    // each, though none of them failed. More losses than AMQP_DELIVERY_LIMIT.
    pg.stop().await.unwrap();
    let losses = config.delivery_limit + 3;
    for _ in 0..losses {
        let mut worker = Proc(spawn_worker_process(&config, "inventory", None));
        eventually(60, "the worker holds the three deliveries", || async {
            broker.counts(&broker.names.inventory).await == (0, 1)
        })
        .await;
        let _ = worker.0.kill();
        let _ = worker.0.wait();
        // the broker saw the loss: the deliveries are back in the queue and
        // the consumer gone (else the next worker's "holds" could still be
        // this one's, and a loss would go uncounted)
        eventually(60, "the deliveries are back in the queue", || async {
            broker.counts(&broker.names.inventory).await == (3, 0)
        })
        .await;
    }
    let counts = delivery_counts(&broker, &broker.names.inventory).await;
    assert_eq!(counts, vec![losses; 3], "each loss counted one delivery of each");
    assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "a held paid order was dead-lettered");

    pg.start().await.unwrap();
    let _worker = Proc(spawn_worker_process(&config, "inventory", None));
    eventually(60, "every paid order's reservation is committed", || async { s.scalar(COMMITTED).await == 3 }).await;
    eventually(30, "the inventory queue drains", || async { broker.depth(&broker.names.inventory).await == 0 }).await;
    assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "nothing dead-lettered after {losses} losses");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 3, "each once");
    s.audit_clean(true).await;
}

/// A proxy to the server of `url` (`scheme://user:password@host:port/rest`),
/// and the same URL through it.
async fn proxied(url: &str) -> (Proxy, String) {
    let (head, tail) = url.rsplit_once('@').unwrap();
    let (server, rest) = tail.split_once('/').unwrap();
    let proxy = Proxy::start(server).await;
    let through = format!("{head}@127.0.0.1:{}/{rest}", proxy.port);
    (proxy, through)
}

#[actix_web::test]
async fn hole_4_a_database_connection_that_never_answers_does_not_stall_the_workers() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let mut config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    // The inventory and email workers reach PostgreSQL through a proxy.
    let (proxy, through) = proxied(&config.database.database_url).await;
    config.database.database_url = through;
    let _inventory = Proc(spawn_worker_process(&config, "inventory", None));
    let _email = Proc(spawn_worker_process(&config, "email", None));
    let first = s.purchase("before-silence", 1).await;
    eventually(60, "the first order is committed", || async { s.status(&first).await == "committed" }).await;
    eventually(60, "its email is sent", || async { smtp.mails().len() == 1 }).await;

    // The path to PostgreSQL goes silent: the workers' pooled connections
    // stay open and never answer again, as with a server frozen or a host
    // lost without a reset (TCP keepalives never notice: the proxy's
    // kernel answers them). New connections get through again after 5 s.
    proxy.freeze();
    let mut holds = Vec::new();
    for i in 0..3 {
        holds.push(s.purchase(&format!("during-silence-{i}"), 1).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.thaw();
    assert!(proxy.silenced() > 0, "the workers' connections were silenced");

    // Every call that met a silent connection gave up within its bound and
    // the work went on through new connections.
    let bound = Duration::from_secs(120);
    let since = Instant::now();
    eventually(bound.as_secs(), "the paid orders' reservations are committed", || async {
        s.scalar(COMMITTED).await == 4
    })
    .await;
    eventually(bound.saturating_sub(since.elapsed()).as_secs().max(1), "their emails are sent", || async {
        smtp.mails().len() == 4
    })
    .await;
    eprintln!("a silent database path: the work resumed {:?} after new connections got through", since.elapsed());
    assert_eq!(broker.depth(&broker.names.dead_letter_queue).await, 0, "nothing dead-lettered");
    // The mail server has it before the worker records it sent.
    eventually(10, "each email is recorded sent", || async {
        s.scalar("SELECT count(*) FROM emails WHERE status = 'sent'").await == 4
    })
    .await;
    s.audit_clean(true).await;
}
