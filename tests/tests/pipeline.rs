//! The asynchronous half: outbox → relay → RabbitMQ → inventory and email
//! workers, with real PostgreSQL, RabbitMQ and an SMTP listener.

use awc::http::StatusCode;
use ledger_tests::broker::Broker;
use ledger_tests::shop::shop;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{crash_worker, eventually, spawn_worker_process, start_workers, Role};
use serde_json::json;

#[actix_web::test]
async fn every_effect_commits_with_its_event_and_declines_write_none() {
    let s = shop().await;
    let hold = s.purchase("o1", 1).await;
    let events = |sql: &'static str| {
        let s = &s;
        async move { s.scalar(sql).await }
    };
    assert_eq!(events("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
    assert_eq!(events("SELECT count(*) FROM outbox WHERE event_type = 'reservation.held'").await, 1);
    // a replay and a natural-key duplicate write no second event
    let body = json!({"order_id": "o1", "attempt": 1, "buyer_account_id": s.buyer, "seller_account_id": s.seller,
                      "amount": "12.00", "currency": "USD", "receipt_email": "o1@example.com"});
    assert!(s.app.post("/v1/charges", &s.key, "o1:1", body.clone()).await.replayed);
    assert!(s.app.post("/v1/charges", &s.key, "o1:1:again", body).await.natural_key_replayed);
    // a decline writes nothing
    let poor = s.app.account(&s.key, "poor", "USD", false).await;
    let declined = s
        .app
        .post(
            "/v1/charges",
            &s.key,
            "o2:1",
            json!({"order_id": "o2", "attempt": 1, "buyer_account_id": poor, "seller_account_id": s.seller, "amount": "1.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(declined.code(), "insufficient_funds");
    assert_eq!(events("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
    let released = s.app.send("POST", &format!("/v1/reservations/{hold}/release"), &s.key, Some("rel"), None).await;
    assert_eq!(released.status, StatusCode::OK);
    assert_eq!(events("SELECT count(*) FROM outbox WHERE event_type = 'reservation.released'").await, 1);
    // every event names its order and carries a versioned envelope
    let row = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT payload FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap();
    let payload: serde_json::Value = row.get(0);
    assert_eq!(
        (payload["type"].as_str(), payload["version"].as_u64(), payload["order_id"].as_str()),
        (Some("charge.succeeded"), Some(1), Some("o1"))
    );
    assert_eq!(payload["data"]["amount"], "12.00");
}

#[actix_web::test]
async fn a_purchase_commits_its_reservation_and_sends_exactly_one_email() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    let hold = s.purchase("order-1", 3).await;

    eventually(20, "the reservation is committed", || async {
        s.app.get(&format!("/v1/reservations/{hold}"), &s.key).await.json()["status"] == "committed"
    })
    .await;
    assert_eq!(s.on_hand().await, 7);
    eventually(20, "the email arrives", || async { smtp.mails().len() == 1 }).await;
    let mail = &smtp.mails()[0];
    assert_eq!(mail.to, ["order-1@example.com"]);
    assert!(mail.data.contains("Order order-1 confirmed"));
    eventually(10, "every event is published", || async {
        s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    // The mail server has it before the worker records it sent.
    eventually(10, "each email is recorded sent", || async {
        s.scalar("SELECT count(*) FROM emails WHERE status = 'sent'").await == 1
    })
    .await;
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 1);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn the_same_event_five_times_makes_one_stock_effect_and_one_email() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    s.purchase("order-5", 2).await;
    eventually(20, "the first delivery is handled", || async { smtp.mails().len() == 1 }).await;

    // republish the very same message four more times, as a relay crash or a redelivery would
    let row = s
        .app
        .db
        .client()
        .await
        .query_one("SELECT message_id::text, payload::text FROM outbox WHERE event_type = 'charge.succeeded'", &[])
        .await
        .unwrap();
    let (id, body): (String, String) = (row.get(0), row.get(1));
    for _ in 0..4 {
        broker.publish("charge.succeeded", &id, body.as_bytes()).await;
    }
    eventually(20, "the duplicates are consumed", || async {
        broker.depth(&broker.names.inventory).await == 0 && broker.depth(&broker.names.email).await == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.on_hand().await, 8, "stock taken once");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 1);
    assert_eq!(smtp.mails().len(), 1, "one email");
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await, 1);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn poison_messages_are_dead_lettered_and_do_not_block_the_queue() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory]);
    // wait for the topology, then poison: one unparseable, one that always fails (no order)
    eventually(10, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;
    broker.publish("charge.succeeded", "poison-1", b"{not json").await;
    let tenant: uuid::Uuid = s.app.db.client().await.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);
    let failing = json!({"message_id": uuid::Uuid::now_v7(), "type": "charge.succeeded", "version": 1, "tenant_id": tenant,
                         "order_id": null, "occurred_at": "2026-01-01T00:00:00Z", "data": {}});
    broker.publish("charge.succeeded", "poison-2", failing.to_string().as_bytes()).await;
    // a good purchase behind them is still processed
    let hold = s.purchase("order-after-poison", 1).await;
    eventually(30, "the good order is committed", || async {
        s.app.get(&format!("/v1/reservations/{hold}"), &s.key).await.json()["status"] == "committed"
    })
    .await;
    eventually(30, "both poisons are dead-lettered", || async {
        broker.depth(&broker.names.dead_letter_queue).await == 2
    })
    .await;
    assert_eq!(broker.depth(&broker.names.inventory).await, 0);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn inventory_worker_killed_after_commit_before_ack_takes_stock_once() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    let hold = s.purchase("order-k", 4).await;

    crash_worker(&config, "inventory", "inventory-after-commit").await;
    // it committed, and died before acking
    assert_eq!(s.app.get(&format!("/v1/reservations/{hold}"), &s.key).await.json()["status"], "committed");
    assert_eq!(s.on_hand().await, 6);

    let mut restarted = spawn_worker_process(&config, "inventory", None);
    eventually(20, "the redelivery is absorbed and acked", || async {
        broker.depth(&broker.names.inventory).await == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    restarted.kill().unwrap();
    let _ = restarted.wait();
    assert_eq!(s.on_hand().await, 6, "no double decrement");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 1);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn email_worker_killed_after_ack_loses_the_email_and_reconcile_sends_exactly_one() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _relay = start_workers(&config, &[Role::Relay]);
    s.purchase("order-e", 1).await;

    crash_worker(&config, "email", "email-after-ack").await;
    // acked, so never redelivered: a restarted worker has nothing to send
    let mut restarted = spawn_worker_process(&config, "email", None);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    restarted.kill().unwrap();
    let _ = restarted.wait();
    assert_eq!(smtp.mails().len(), 0, "at most once: the email was lost, not doubled");
    assert_eq!(broker.depth(&broker.names.email).await, 0);

    let pool = config.pool().unwrap();
    let mailer = workers::email::Mailer::from_config(&config).unwrap();
    let lost = workers::email::reconcile(&pool, &mailer, &config.email_from, 0, false).await.unwrap();
    assert_eq!(lost.iter().map(|l| l.order_id.as_str()).collect::<Vec<_>>(), ["order-e"]);
    assert_eq!(smtp.mails().len(), 0, "listing sends nothing");
    workers::email::reconcile(&pool, &mailer, &config.email_from, 0, true).await.unwrap();
    assert_eq!(smtp.mails().len(), 1);
    // a second run finds nothing left
    assert!(workers::email::reconcile(&pool, &mailer, &config.email_from, 0, true).await.unwrap().is_empty());
    assert_eq!(smtp.mails().len(), 1);
    // no inventory worker ran here, so only what holds at every instant
    s.audit_clean(false).await;
}

#[actix_web::test]
async fn relay_killed_between_publish_and_mark_republishes_and_consumers_absorb_it() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let hold = s.purchase("order-r", 2).await;

    crash_worker(&config, "relay", "relay-after-publish").await;
    assert!(s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await >= 2, "published but not marked");
    assert_eq!(broker.depth(&broker.names.inventory).await, 1, "the first copy is in the queue");

    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);
    eventually(20, "everything is published and consumed", || async {
        s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
            && broker.depth(&broker.names.inventory).await == 0
            && broker.depth(&broker.names.email).await == 0
    })
    .await;
    eventually(10, "the email arrives", || async { !smtp.mails().is_empty() }).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s.app.get(&format!("/v1/reservations/{hold}"), &s.key).await.json()["status"], "committed");
    assert_eq!(s.on_hand().await, 8, "stock taken once");
    assert_eq!(smtp.mails().len(), 1, "one email");
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'inventory'").await, 1);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn connections_cut_while_events_flow_still_make_every_effect_exactly_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
        .with_test_writer()
        .try_init();
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let proxy = ledger_tests::proxy::Proxy::start("127.0.0.1:5672").await;
    let mut config = s.config(&broker, &smtp);
    config.amqp_url = ledger_tests::broker::amqp_url().replace(":5672", &format!(":{}", proxy.port));
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email]);

    let mut holds = Vec::new();
    let mut cuts = 0;
    for i in 0..10 {
        holds.push(s.purchase(&format!("cut-{i}"), 1).await);
        if i % 3 == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            cuts += proxy.cut();
        }
    }
    assert!(cuts >= 3, "connections were cut while events flowed ({cuts})");
    eventually(60, "every reservation is committed", || async {
        let mut all = true;
        for h in &holds {
            all &= s.app.get(&format!("/v1/reservations/{h}"), &s.key).await.json()["status"] == "committed";
        }
        all
    })
    .await;
    eventually(30, "the queues drain", || async {
        let state = (
            s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await,
            broker.depth(&broker.names.inventory).await,
            broker.depth(&broker.names.email).await,
        );
        eprintln!("unpublished, inventory queue, email queue: {state:?}");
        state == (0, 0, 0)
    })
    .await;
    assert_eq!(s.on_hand().await, 0, "ten units, each taken exactly once");
    assert_eq!(s.scalar("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await, 10);
    // At most once per order; whatever was lost is found and sent by
    // reconcile, once. Reconcile leaves alone what is younger than its grace
    // period (a drained queue can still have acked emails being sent), so
    // the test waits past it, as a nightly run would be far past it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let sent = smtp.mails().len();
    assert!(sent <= 10, "{sent} emails for 10 orders");
    let pool = config.pool().unwrap();
    let mailer = workers::email::Mailer::from_config(&config).unwrap();
    let lost = workers::email::reconcile(&pool, &mailer, &config.email_from, 2, true).await.unwrap();
    assert_eq!(sent + lost.len(), 10);
    let mut recipients: Vec<String> = smtp.mails().iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 10, "one email per order");
    assert_eq!(smtp.mails().len(), 10);
    s.audit_clean(true).await;
}

#[actix_web::test]
async fn several_relays_at_once_publish_each_event_exactly_once() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let mut config = s.config(&broker, &smtp);
    config.relay_batch = 3; // small batches, so the relays interleave
                            // three relays and no consumers: the queues count what was published
    let _relays = start_workers(&config, &[Role::Relay, Role::Relay, Role::Relay]);
    eventually(10, "the queues exist", || async { broker.exists(&broker.names.inventory).await }).await;
    let (app, key, buyer, seller) = (&s.app, &s.key, &s.buyer, &s.seller);
    futures::future::join_all((0..20).map(|i| async move {
        let c = app
            .post(
                "/v1/charges",
                key,
                &format!("multi-{i}:1"),
                json!({"order_id": format!("multi-{i}"), "attempt": 1, "buyer_account_id": buyer,
                       "seller_account_id": seller, "amount": "1.00", "currency": "USD"}),
            )
            .await;
        assert_eq!(c.status, StatusCode::CREATED);
    }))
    .await;
    eventually(20, "every event is published", || async {
        s.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").await == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(broker.depth(&broker.names.inventory).await, 20, "each charge.succeeded published once");
    assert_eq!(broker.depth(&broker.names.email).await, 20);
}
