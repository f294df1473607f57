//! A lost API host: the real `ledger-api` process stops itself (SIGSTOP) in
//! the middle of a charge, holding the Idempotency-Key row (and, at the
//! second point, the accounts' rows) in an open transaction. A frozen
//! process keeps its sockets open, so nothing tells PostgreSQL it is gone;
//! the pool's `idle_in_transaction_session_timeout` must end its session and
//! release the locks within seconds, not the hours TCP would take. Another
//! API process serves the client's retries meanwhile.

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use ledger_tests::api_process::{post, ApiProcess, Reply};
use ledger_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

/// The longest the test waits for the locks to be released; far above the
/// defaults' promise, so that a failure means "pinned", not "slow".
const GIVE_UP: Duration = Duration::from_secs(60);

struct Shop {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
    platform: String,
}

async fn shop() -> Shop {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    Shop { app, key, buyer, seller, platform }
}

impl Shop {
    fn charge(&self, order: &str) -> Value {
        json!({"order_id": order, "attempt": 1, "buyer_account_id": self.buyer, "seller_account_id": self.seller,
               "amount": "12.00", "currency": "USD", "platform_fee": {"account_id": self.platform, "amount": "1.00"}})
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Retries as a careful client does (same key, after `Retry-After` on a
    /// 409) until the charge is answered 201; the 409 codes seen on the way.
    async fn retry_until_charged(&self, api: &ApiProcess, order: &str) -> (Reply, Vec<String>) {
        let started = Instant::now();
        let mut seen = Vec::new();
        loop {
            let reply = post(&api.url("/v1/charges"), &self.key, &format!("{order}:1"), &self.charge(order), GIVE_UP)
                .await
                .expect("the second API answers");
            if reply.status != StatusCode::CONFLICT {
                return (reply, seen);
            }
            assert_eq!(reply.retry_after.as_deref(), Some("1"), "{reply:?}");
            seen.push(reply.code().to_owned());
            assert!(
                started.elapsed() < GIVE_UP,
                "still {seen:?} after {:?}: the frozen process pins the locks",
                GIVE_UP
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Starts a first API process armed to freeze at `point`, sends it the
    /// charge of `o1` and waits until it has stopped itself there.
    async fn freeze(
        &self,
        point: &str,
    ) -> (ApiProcess, Instant, actix_web::rt::task::JoinHandle<Result<Reply, String>>) {
        let frozen = ApiProcess::start(&self.app.db.url, &[("LEDGER_FREEZE_AT", point)]).await;
        let in_flight = {
            let (url, key, body) = (frozen.url("/v1/charges"), self.key.clone(), self.charge("o1"));
            actix_web::rt::spawn(async move { post(&url, &key, "o1:1", &body, Duration::from_secs(120)).await })
        };
        frozen.until_frozen(Duration::from_secs(10)).await;
        let frozen_at = Instant::now();
        assert!(!in_flight.is_finished(), "the frozen process answered");
        // it holds its transaction open
        let waiting: i64 = self
            .scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                    AND application_name = 'ledger' AND state = 'idle in transaction'",
            )
            .await;
        assert_eq!(waiting, 1, "the frozen process's session is idle in its transaction");
        (frozen, frozen_at, in_flight)
    }

    async fn assert_o1_charged_once(&self) {
        assert_eq!(self.scalar("SELECT count(*) FROM charges WHERE order_id = 'o1'").await, 1, "one charge");
        assert_eq!(
            self.scalar(
                "SELECT count(*) FROM ledger_transactions t JOIN charges c ON c.transaction_id = t.id \
                  WHERE c.order_id = 'o1'"
            )
            .await,
            1
        );
        let report = ledger::audit::audit(&self.app.db.client().await, Default::default()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}

#[actix_web::test]
async fn hole_5_an_api_frozen_after_the_key_lock_releases_the_key_within_seconds() {
    let s = shop().await;
    let (mut frozen, frozen_at, in_flight) = s.freeze("api-after-key-lock").await;
    let other = ApiProcess::start(&s.app.db.url, &[]).await;
    // the key alone is held there, not the accounts: another order on them goes through at once
    let (o2, seen_o2) = s.retry_until_charged(&other, "o2").await;
    assert_eq!((o2.status, seen_o2.len()), (StatusCode::CREATED, 0), "{o2:?} {seen_o2:?}");
    assert!(frozen_at.elapsed() < Duration::from_secs(5), "{:?}", frozen_at.elapsed());
    // the client's retry of the frozen charge, through the other process
    let (o1, seen) = s.retry_until_charged(&other, "o1").await;
    let took = frozen_at.elapsed();
    println!("frozen at api-after-key-lock: the retry was charged {took:?} after the freeze ({seen:?} before)");
    assert_eq!(o1.status, StatusCode::CREATED, "the retry runs the charge afresh: {o1:?}");
    assert!(!o1.replayed);
    assert!(!seen.is_empty(), "the key was held while the process was frozen");
    assert!(seen.iter().all(|c| c == "request_in_progress"), "{seen:?}");
    // the default idle-in-transaction timeout (10 s), plus at most one lock wait and one Retry-After
    assert!(took < Duration::from_secs(20), "released after {took:?}");
    in_flight.abort();
    s.assert_o1_charged_once().await;
    assert_eq!(s.app.balance(&s.key, &s.buyer).await, "76.00", "two orders, each paid once");

    assert_eq!(frozen.state(), Some('T'), "still frozen: nothing but PostgreSQL's timeout released the key");
    frozen.child.kill().unwrap(); // SIGKILL
    assert!(frozen.exited(Duration::from_secs(10)).await.is_some());
}

#[actix_web::test]
async fn hole_5_an_api_frozen_holding_the_account_locks_releases_them_within_seconds() {
    let s = shop().await;
    let (mut frozen, frozen_at, in_flight) = s.freeze("charge-after-account-lock").await;
    // the buyer's row is locked by the frozen session; the seller and the
    // platform are only credited, on slot rows, so their rows stay free
    let free = |accounts: Vec<&String>| {
        let ids: Vec<uuid::Uuid> = accounts.iter().map(|id| id.parse().unwrap()).collect();
        let s = &s;
        async move {
            s.app
                .db
                .client()
                .await
                .query_one(
                    "SELECT count(*) FROM (SELECT 1 FROM accounts WHERE id = ANY($1) FOR UPDATE SKIP LOCKED) x",
                    &[&ids],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(free(vec![&s.buyer]).await, 0, "the frozen session holds the buyer's row lock");
    assert_eq!(free(vec![&s.seller, &s.platform]).await, 2, "credited accounts are no hot rows");

    // a charge of another order on the same buyer, seller and platform account
    let other = ApiProcess::start(&s.app.db.url, &[]).await;
    let (o2, seen_o2) = s.retry_until_charged(&other, "o2").await;
    let o2_took = frozen_at.elapsed();
    assert_eq!(o2.status, StatusCode::CREATED, "{o2:?}");
    assert!(seen_o2.iter().all(|c| c == "contention"), "{seen_o2:?}");
    assert!(!seen_o2.is_empty(), "the accounts were held while the process was frozen");
    // and the frozen charge's own retry
    let (o1, seen_o1) = s.retry_until_charged(&other, "o1").await;
    assert_eq!(o1.status, StatusCode::CREATED, "{o1:?}");
    println!("frozen at charge-after-account-lock: another order's charge succeeded {o2_took:?} after the freeze ({seen_o2:?} before); the retry then got {seen_o1:?} before 201");
    assert!(o2_took < Duration::from_secs(20), "released after {o2_took:?}");
    in_flight.abort();

    s.assert_o1_charged_once().await;
    assert_eq!(s.scalar("SELECT count(*) FROM charges").await, 2);
    assert_eq!(s.app.balance(&s.key, &s.buyer).await, "76.00", "two orders, each paid once");
    assert_eq!(frozen.state(), Some('T'));
    frozen.child.kill().unwrap(); // SIGKILL
    assert!(frozen.exited(Duration::from_secs(10)).await.is_some());
}

#[actix_web::test]
async fn every_pooled_connection_carries_the_timeouts_and_keepalives() {
    let db = ledger_tests::TestDb::new().await;
    let mut settings: service::settings::Database = service::settings::from_env();
    settings.database_url = db.url.clone();
    settings.db_lock_timeout_ms = 1500;
    settings.db_statement_timeout_ms = 4000;
    settings.db_idle_in_transaction_timeout_ms = 7000;
    settings.db_keepalives_idle_secs = 11;
    settings.db_keepalives_interval_secs = 4;
    settings.db_keepalives_retries = 6;
    let pool = settings.pool(2, false).unwrap();
    let client = pool.get().await.unwrap();
    let mut shown = Vec::new();
    for name in [
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
    ] {
        let row = client.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
        shown.push(row.get::<_, String>(0));
    }
    // the server's side of the keepalives applies to TCP connections (the tests connect over TCP)
    assert_eq!(shown, ["1500ms", "4s", "7s", "11", "4", "6"]);
}

#[actix_web::test]
async fn a_statement_over_its_timeout_is_503_and_not_stored() {
    let app = ledger_tests::spawn_app_with(|c| c.database.db_statement_timeout_ms = 300).await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = json!({"order_id": "o1", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                      "amount": "10.00", "currency": "USD"});
    // the buyer's row is held: the charge's lock wait runs into the statement's limit (300 ms) before its lock_timeout (5 s)
    let holder = app.db.client().await;
    holder.batch_execute(&format!("BEGIN; SELECT 1 FROM accounts WHERE id = '{buyer}' FOR UPDATE")).await.unwrap();
    let started = Instant::now();
    let slow = app.post("/v1/charges", &key, "o1:1", body.clone()).await;
    assert_eq!(
        (slow.status, slow.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
        "{slow:?}"
    );
    assert_eq!(slow.retry_after.as_deref(), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    holder.batch_execute("ROLLBACK").await.unwrap();
    let retry = app.post("/v1/charges", &key, "o1:1", body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "nothing was stored for the key: {retry:?}");
    assert!(!retry.replayed);
    assert_eq!(app.db.count("charges").await, 1);
}
