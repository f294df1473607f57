//! The relay marks an event published only once every queue that must have
//! it confirmed it: an event no such queue took stays unpublished and is
//! retried, and a batch the broker refused (a nack) stays unpublished until
//! the broker accepts it. Queues of the previous version are retired into
//! their successors without losing a message. Real PostgreSQL and RabbitMQ.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use ledger_tests::broker::Broker;
use ledger_tests::servers::PrivateRabbit;
use ledger_tests::shop::{shop, Shop};
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{eventually, spawn_worker_logged, start_workers, Role};

async fn committed(s: &Shop, holds: &[String]) -> bool {
    for h in holds {
        if s.status(h).await != "committed" {
            return false;
        }
    }
    true
}

#[actix_web::test]
async fn hole_6_an_event_the_inventory_queue_did_not_get_is_never_marked_published() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _others = start_workers(&config, &[Role::Relay, Role::Email]);
    eventually(10, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;

    // The inventory queue loses its binding (a hand-made change, a half-applied deploy).
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_unbind(
        broker.names.inventory.as_str().into(),
        broker.names.events.as_str().into(),
        "charge.succeeded".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut holds = Vec::new();
    for i in 0..3 {
        holds.push(s.purchase(&format!("unbound-{i}"), 1).await);
    }
    eventually(20, "the email queue got its copies", || async { smtp.mails().len() == 3 }).await;

    // The topology is declared again (what any worker does when it starts),
    // then the inventory worker runs: every paid order commits, once.
    workers::topology::declare(&ch, &broker.names, config.queue_delivery_limit).await.unwrap();
    let _inventory = start_workers(&config, &[Role::Inventory]);
    eventually(30, "every paid order's reservation is committed", || committed(&s, &holds)).await;
    eventually(30, "the pipeline settles", || s.settled(&broker)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 3);
    assert_eq!(s.on_hand().await, 7, "each taken once");
    assert_eq!(smtp.mails().len(), 3);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn hole_6_an_event_whose_queue_is_missing_stays_unpublished_until_the_queue_is_back() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    // Only the relay runs: every worker declares the whole topology when its
    // session starts, so a consumer reconnecting on a loaded machine would
    // bring the queue back early.
    let _relay = start_workers(&config, &[Role::Relay]);
    eventually(30, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;

    // The inventory queue is deleted while no inventory worker runs.
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(broker.names.inventory.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    let mut holds = Vec::new();
    for i in 0..3 {
        holds.push(s.purchase(&format!("missing-{i}"), 1).await);
    }
    eventually(20, "the email queue got its copies", || async { broker.depth(&broker.names.email).await == 3 }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unpublished = "SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded' AND published_at IS NULL";
    assert_eq!(s.scalar(unpublished).await, 3, "no queue took them for the inventory worker: not published");
    // An operator sees why, and when they are tried again.
    let pool = config.pool().unwrap();
    let deferred = ledger::outbox::deferred(&**pool.get().await.unwrap()).await.unwrap();
    assert_eq!(deferred.len(), 3, "{deferred:?}");
    for d in &deferred {
        assert_eq!(d.event_type, "charge.succeeded");
        assert!(d.publish_attempts >= 1 && d.retry_at.is_some(), "{d:?}");
        let why = d.last_error.as_deref().unwrap_or_default();
        assert!(why.contains(&broker.names.inventory) && why.contains("NO_ROUTE"), "{d:?}");
    }

    // The inventory worker starts and declares its queue: the relay's retry delivers.
    let _consumers = start_workers(&config, &[Role::Inventory, Role::Email]);
    eventually(60, "every paid order's reservation is committed", || committed(&s, &holds)).await;
    eventually(30, "the pipeline settles", || s.settled(&broker)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 3);
    assert_eq!(smtp.mails().len(), 3, "the retries sent no second email");
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn a_returned_copy_is_matched_to_its_own_event_whatever_confirm_carries_it() {
    // The broker acks a batch with `multiple` acks, and lapin hands a
    // returned message to whichever confirm it completes first: matching a
    // return by the confirm that carries it marks some returned events
    // published (and blames delivered ones). Events to the missing
    // inventory queue alternate with events only the webhooks queue takes.
    let broker = Broker::new();
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    workers::topology::declare(&ch, &broker.names, 20).await.unwrap();
    ch.queue_delete(broker.names.inventory.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..1000 {
        let kind = if i % 2 == 0 { "charge.succeeded" } else { "charge.authorized" };
        let id = format!("event-{i}");
        let copies = workers::relay::publish_event(&ch, &broker.names, &id, kind, b"{}").await.unwrap();
        sent.push((id, copies));
    }
    let settled = workers::relay::settle_all(sent).await.unwrap();
    for (i, settled) in settled.iter().enumerate() {
        match settled {
            workers::relay::Settled::Returned(why) => {
                assert!(i % 2 == 0 && why.contains(&broker.names.inventory), "event {i}: {why}")
            }
            workers::relay::Settled::Delivered => assert!(i % 2 == 1, "event {i} was returned, not delivered"),
        }
    }
    assert_eq!(broker.depth(&broker.names.webhooks).await, 1000, "every event reached the webhooks queue");
    let _ = conn.close(200, "".into()).await;
}

#[actix_web::test]
async fn a_publisher_nack_leaves_the_batch_unpublished_until_the_broker_accepts_it() {
    // A node of its own: the test sets a policy on it.
    let rabbit = PrivateRabbit::new().await.unwrap();
    let s = shop().await;
    let broker = Broker::on(&rabbit.amqp_url());
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let relay = start_workers(&config, &[Role::Relay]);
    eventually(30, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;
    // The inventory queue is limited to one message and refuses the next
    // (a nack) once it holds more (a quorum queue checks its length before
    // each message, so it takes a second one first).
    let pattern = format!("^{}\\.inventory", broker.prefix);
    let policy = r#"{"max-length":1,"overflow":"reject-publish"}"#;
    rabbit.rabbitmqctl(&["set_policy", "full", &pattern, policy, "--apply-to", "queues"]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let unpublished = |order: String| {
        let s = &s;
        async move {
            let sql = format!("SELECT count(*) FROM outbox WHERE order_id = '{order}' AND published_at IS NULL");
            s.scalar(&sql).await
        }
    };
    let mut holds = Vec::new();
    let mut refused = None;
    for i in 1..=4 {
        let order = format!("nack-{i}");
        holds.push(s.purchase(&order, 1).await);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while unpublished(order.clone()).await > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if unpublished(order.clone()).await > 0 {
            refused = Some(order);
            break;
        }
    }
    let refused = refused.expect("the broker refused an event once the queue was full");
    let depth = broker.depth(&broker.names.inventory).await;
    let charge = format!(
        "SELECT count(*) FROM outbox WHERE order_id = '{refused}' AND event_type = 'charge.succeeded' \
           AND published_at IS NULL"
    );
    let batch = unpublished(refused.clone()).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(s.scalar(&charge).await, 1, "the broker refused it: not published");
        assert_eq!(unpublished(refused.clone()).await, batch, "nothing of its batch is marked");
        assert_eq!(broker.depth(&broker.names.inventory).await, depth);
    }

    // The broker accepts again: the batch goes out, and each order commits once.
    rabbit.rabbitmqctl(&["clear_policy", "full"]).await.unwrap();
    eventually(40, "every event is published", || async {
        s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    let _consumers = start_workers(&config, &[Role::Inventory, Role::Email]);
    eventually(30, "every order is committed", || committed(&s, &holds)).await;
    eventually(30, "the pipeline settles", || s.settled(&broker)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = holds.len() as i64;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, n);
    assert_eq!(smtp.mails().len() as i64, n);
    s.audit_clean(true).await;
    drop(relay);
}

#[actix_web::test]
async fn queues_of_the_previous_version_are_drained_into_their_successors_and_retired() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let names = &broker.names;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();

    // What the previous version declared: the consumers' queues bound to the
    // topic exchange, with at-most-once dead-lettering (arguments RabbitMQ
    // will not let the new version redeclare).
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(names.events.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .unwrap();
    ch.exchange_declare(
        names.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queue = QueueDeclareOptions { durable: true, ..Default::default() };
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare(names.dead_letter_queue.as_str().into(), queue, quorum.clone()).await.unwrap();
    ch.queue_bind(
        names.dead_letter_queue.as_str().into(),
        names.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let old = [format!("{}.inventory", broker.prefix), format!("{}.email", broker.prefix)];
    for q in &old {
        let mut args = quorum.clone();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.dead_letter_exchange.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(config.delivery_limit));
        ch.queue_declare(q.as_str().into(), queue, args).await.unwrap();
        ch.queue_bind(
            q.as_str().into(),
            names.events.as_str().into(),
            "charge.succeeded".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    // Three paid orders the previous relay published into the topic exchange.
    let mut holds = Vec::new();
    for i in 0..3 {
        holds.push(s.purchase(&format!("upgrade-{i}"), 1).await);
    }
    let db = s.app.db.client().await;
    for row in
        db.query("SELECT message_id::text, event_type, payload::text FROM outbox ORDER BY id", &[]).await.unwrap()
    {
        let (id, kind, body): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let props =
            BasicProperties::default().with_message_id(id.into()).with_type(kind.as_str().into()).with_delivery_mode(2);
        let confirm = ch
            .basic_publish(
                names.events.as_str().into(),
                kind.as_str().into(),
                Default::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }
    db.execute("UPDATE outbox SET published_at = now(), first_published_at = now()", &[]).await.unwrap();
    // One of them died there: a worker of the previous version rejected it.
    let dying = ch.basic_get(old[0].as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap().unwrap();
    dying.delivery.acker.reject(BasicRejectOptions { requeue: false }).await.unwrap();
    eventually(10, "it is dead-lettered", || async { broker.depth(&names.dead_letter_queue).await == 1 }).await;
    assert_eq!((broker.depth(&old[0]).await, broker.depth(&old[1]).await), (2, 3));

    // The new version starts: the old queues' messages move to the new
    // queues, the old queues go, and every order is handled once.
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    eventually(30, "the old queues are retired", || async {
        !broker.exists(&old[0]).await && !broker.exists(&old[1]).await
    })
    .await;
    eventually(30, "three emails, two commits", || async {
        smtp.mails().len() == 3 && s.scalar("SELECT count(*) FROM reservations WHERE status = 'committed'").await == 2
    })
    .await;
    // The dead letter names the retired queue; its redrive goes to the successor.
    let dead = workers::dlq::list(&config).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].queue.as_deref(), Some(old[0].as_str()));
    assert_eq!(workers::dlq::redrive(&config, &workers::dlq::Select::All).await.unwrap().len(), 1);
    eventually(30, "every paid order's reservation is committed", || committed(&s, &holds)).await;
    eventually(30, "the pipeline settles", || s.settled(&broker)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 3);
    assert_eq!(smtp.mails().len(), 3);
    assert_eq!(broker.depth(&names.dead_letter_queue).await, 0);
    s.audit_clean(true).await;
}

/// Every role in one process (`ledger-workers all`), starting while another
/// process holds the upgrade lock: the broker's expected answers to its
/// probes (404 to a passive declare of an older version's queue, 405 to the
/// lock's declare) are not logged as errors; the process starts and works.
#[actix_web::test]
async fn a_worker_process_starting_beside_another_logs_no_error_for_its_expected_probes() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let names = &broker.names;
    // "another process" retiring old queues: it holds the exclusive lock queue
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    ch.queue_declare(names.upgrade_lock.as_str().into(), exclusive, FieldTable::default()).await.unwrap();

    let worker = spawn_worker_logged(&config, "all");
    eventually(30, "the workers declared their queues", || async {
        broker.exists(&names.inventory).await && broker.exists(&names.email).await
    })
    .await;
    let hold = s.purchase("logs-1", 1).await;
    eventually(30, "the paid order is committed and emailed", || async {
        committed(&s, std::slice::from_ref(&hold)).await && smtp.mails().len() == 1
    })
    .await;
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || worker.wait_with_output().unwrap()).await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the workers stopped cleanly on SIGTERM: {log}");
    // Only the probes' answers are looked for: a broker may close a channel
    // for its own reasons meanwhile (a quorum queue consumed before its
    // process is up answers 541), which the workers log and survive.
    let probes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && (l.contains("reply_code: 404") || l.contains("reply_code: 405")))
        .collect();
    assert!(probes.is_empty(), "expected probe answers were logged as errors: {probes:#?}");
    drop(conn);
}

/// Nothing in the schema sends a notification: a transaction that notified
/// takes a database-wide lock at its commit and holds it through the WAL
/// flush, so a trigger notifying the relay of every outbox insert made every
/// transaction that wrote an event commit one after another. The relay
/// polls instead (`RELAY_POLL_MS`).
#[actix_web::test]
async fn no_commit_notifies() {
    let db = ledger_tests::TestDb::new().await;
    let client = db.client().await;
    let notifying: Vec<String> = client
        .query(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
              WHERE n.nspname = 'public' AND (p.prosrc ILIKE '%pg_notify%' OR p.prosrc ~* '\\mNOTIFY\\M')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(notifying.is_empty(), "functions that notify: {notifying:?}");
}
