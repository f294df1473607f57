//! The short version of `make chaos-ha`: on the highly available stack
//! (`make ha-up`, started here when it is not running, and stopped again at
//! the end if it was started here), purchases flow through HAProxy while the
//! PostgreSQL primary is killed (Patroni and postmaster together) and then
//! the RabbitMQ node leading the inventory queue (`kill -9` of its beam).
//! Nothing paid is lost or doubled: the auditor is clean with the pipeline
//! quiesced, one charge per paid order, every paid order's reservation
//! committed once, no email twice; while the primary was gone the clients
//! were answered 503 `service_unavailable` with `Retry-After`, never a 500.

use std::time::Duration;

use ledger_tests::chaos_ha::{run, Fault, Settings, Stack};

/// Stops the stack when this test started it, even when the test fails.
struct Down<'a>(&'a Stack);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        self.0.down_if_started_here();
    }
}

#[actix_web::test]
async fn a_primary_and_a_broker_node_die_under_purchases_and_nothing_paid_is_lost_or_doubled() {
    // A folder the postgres user can reach; a stack already running (from
    // `make ha-up` or an interrupted run) is reused and left running.
    let stack = Stack::ensure(&std::env::temp_dir().join("ledger-ha-test"));
    let _down = Down(&stack);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let settings = Settings {
        seed,
        duration: Duration::from_secs(60),
        clients: 4,
        round: vec![Fault::Primary, Fault::BrokerNode],
        gap: (2, 4),
    };
    let summary = run(&stack, settings).await;
    println!("{summary}");
    assert!(summary.chaos.violations.is_empty(), "seed {seed}: {:#?}", summary.chaos.violations);
    let primary = summary.failovers.iter().find(|f| f.fault == Fault::Primary).expect("the primary was killed");
    assert!(primary.unavailable.is_some(), "requests failed while no primary ran");
    assert!(summary.failovers.iter().any(|f| f.fault == Fault::BrokerNode), "the queue leader's node was killed");
    // what the clients saw: the API's own 503 with Retry-After (checked for
    // every one of them in the summary's violations), no 500
    assert!(summary.answers_during_faults.contains_key("503 service_unavailable"), "{summary}");
    assert!(summary.answers_during_faults.keys().all(|k| !k.starts_with("500")), "{summary}");
    assert!(summary.chaos.charged > 0, "purchases were paid: {summary}");
}

/// A standby still being promoted: HAProxy sends sessions to it once Patroni
/// names it the primary, and a transaction begun before the promotion ends
/// is read-only. The API answers that like a missing primary, 503
/// `service_unavailable` with `Retry-After`, nothing written (it was a 500,
/// found by `make chaos-ha`); the retry on a writable primary makes it once.
#[actix_web::test]
async fn a_write_refused_by_a_read_only_primary_in_promotion_is_a_503_to_retry_and_nothing_is_written() {
    let app = ledger_tests::spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = serde_json::json!({"order_id": "o-1", "attempt": 1, "buyer_account_id": buyer,
        "seller_account_id": seller, "amount": "25.00", "currency": "USD"});
    let keys = app.db.count("idempotency_keys").await;
    let pg = app.db.client().await;
    let read_only = |on: &str| format!("ALTER DATABASE {} SET default_transaction_read_only = {on}", app.db.name);
    pg.batch_execute(&read_only("on")).await.unwrap();
    // the API's pooled sessions read the setting when they start: drop them
    let drop_sessions = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        app.db.name
    );
    pg.batch_execute(&drop_sessions).await.unwrap();
    let mut refused = app.post("/v1/charges", &key, "o-1:charge", body.clone()).await;
    // the first request after the sessions died may meet a dead pooled one (also a 503)
    for _ in 0..5 {
        assert_eq!(refused.status.as_u16(), 503, "{refused:?}");
        assert_eq!(refused.code(), "service_unavailable");
        assert!(refused.retry_after.is_some(), "{refused:?}");
        refused = app.post("/v1/charges", &key, "o-1:charge", body.clone()).await;
    }
    assert_eq!(refused.status.as_u16(), 503, "{refused:?}");
    assert_eq!(app.db.count("charges").await, 0);
    assert_eq!(app.db.count("idempotency_keys").await, keys, "no key row either");

    pg.batch_execute(&read_only("off")).await.unwrap();
    pg.batch_execute(&drop_sessions).await.unwrap();
    let mut paid = app.post("/v1/charges", &key, "o-1:charge", body.clone()).await;
    for _ in 0..5 {
        if paid.status.as_u16() != 503 {
            break;
        }
        paid = app.post("/v1/charges", &key, "o-1:charge", body.clone()).await;
    }
    assert_eq!(paid.status.as_u16(), 201, "{paid:?}");
    assert_eq!(app.db.count("charges").await, 1);
}
