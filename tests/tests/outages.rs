//! Outages for real: PostgreSQL, then RabbitMQ, stopped (20 seconds by
//! default: twice the AMQP heartbeat of 10 s and ten times the workers'
//! longest retry delay, so connections are declared dead and every
//! reconnect path runs; `LEDGER_OUTAGE_SECS=60` replays a minute of it) and
//! started again while storefront clients buy through the real API process
//! and the real relay, inventory and email workers. Each test stops a
//! private server of its own (`ledger_tests::servers`), so nothing else in
//! the suite notices. After the outage: nothing dead-lettered, every paid
//! order's reservation committed once, one email per paid order, every key's
//! retries ended in a final answer, `ledger-api audit --quiesced` clean.

use std::time::{Duration, Instant};

use ledger_tests::broker::Broker;
use ledger_tests::outages::Stack;
use ledger_tests::servers::{PrivatePostgres, PrivateRabbit};
use ledger_tests::{spawn_app_on, TestDb};
use serde_json::json;

/// How long each server stays down.
fn outage() -> Duration {
    let secs = std::env::var("LEDGER_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    Duration::from_secs(secs)
}
/// Purchases flow this long before the outage and after it.
const AROUND: Duration = Duration::from_secs(5);
const CLIENTS: usize = 3;

#[actix_web::test]
async fn purchases_through_a_postgres_outage_are_each_paid_committed_and_emailed_once() {
    let pg = PrivatePostgres::new().await.unwrap();
    let mut stack = Stack::start(TestDb::on(&pg).await, Broker::new(), CLIENTS).await;
    let clients = stack.clients(Instant::now() + AROUND + outage() + AROUND);

    tokio::time::sleep(AROUND).await;
    pg.stop().await.unwrap();
    let stopped = Instant::now();
    tokio::time::sleep(outage()).await;
    // meanwhile the API answered 503 and the workers held their deliveries
    assert!(stack.workers_alive(), "a worker gave up during the outage");
    pg.start().await.unwrap();
    eprintln!("PostgreSQL was stopped for {:?}", stopped.elapsed());

    let log = clients.finish().await;
    assert_eq!(log.retried.get("500 internal"), None, "a database outage is never a 500: {:?}", log.retried);
    assert!(
        log.retried.get("503 service_unavailable").copied().unwrap_or(0) > 0,
        "the API answered 503 while the database was down: {:?}",
        log.retried
    );
    stack.check(&log, &format!("PostgreSQL outage of {:?}", outage())).await;
    assert!(stack.workers_alive(), "a worker exited");
}

#[actix_web::test]
async fn purchases_through_a_rabbitmq_outage_are_each_paid_committed_and_emailed_once() {
    let rabbit = PrivateRabbit::new().await.unwrap();
    let mut stack = Stack::start(TestDb::new().await, Broker::on(&rabbit.amqp_url()), CLIENTS).await;
    let clients = stack.clients(Instant::now() + AROUND + outage() + AROUND);

    tokio::time::sleep(AROUND).await;
    rabbit.stop().await.unwrap();
    let stopped = Instant::now();
    tokio::time::sleep(outage()).await;
    assert!(stack.workers_alive(), "a worker gave up during the outage");
    // the API does not need the broker: purchases went on, their events wait in the outbox
    let waiting = stack
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(waiting > 0, "events were kept in the outbox while the broker was down");
    rabbit.start().await.unwrap();
    eprintln!("RabbitMQ was stopped for {:?}; {waiting} events waited in the outbox", stopped.elapsed());

    let log = clients.finish().await;
    stack.check(&log, &format!("RabbitMQ outage of {:?}", outage())).await;
    assert!(stack.workers_alive(), "a worker exited");
}

#[actix_web::test]
async fn while_postgres_is_down_a_request_is_refused_503_service_unavailable_never_500() {
    let pg = PrivatePostgres::new().await.unwrap();
    let app = spawn_app_on(TestDb::on(&pg).await, |_| {}).await;
    let (used, fresh) = (app.tenant("used").await, app.tenant("fresh").await);
    let body = json!({"reference": "a", "currency": "USD"});
    assert_eq!(app.post("/v1/accounts", &used, "first", body.clone()).await.status.as_u16(), 201);

    pg.stop().await.unwrap();
    // the effect (a key the API knows), and the key's own lookup (one it never saw)
    for key in [&used, &fresh] {
        let r = app.post("/v1/accounts", key, "during", json!({"reference": "b", "currency": "USD"})).await;
        assert_eq!(r.status.as_u16(), 503, "{r:?}");
        assert_eq!(r.code(), "service_unavailable");
        assert_eq!(r.retry_after.as_deref(), Some("1"));
    }
    let ready = app.get("/readyz", &used).await;
    assert_eq!((ready.status.as_u16(), ready.code()), (503, "service_unavailable".to_owned()));

    // nothing was written: the same key runs afresh once the database is back
    pg.start().await.unwrap();
    let r = app.post("/v1/accounts", &used, "during", json!({"reference": "b", "currency": "USD"})).await;
    assert_eq!(r.status.as_u16(), 201, "{r:?}");
    assert!(!r.replayed);
}
