//! Claims the README makes, each proven against the real server: account
//! references, floors under concurrent transfers, restocks once per key, no
//! stored 5xx, replayed declines, lock waits as 409, and a graceful SIGTERM.

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::api_process::{post, ApiProcess};
use ledger_tests::{spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

fn charge(order: &str, buyer: &str, seller: &str, amount: &str) -> Value {
    json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
           "amount": amount, "currency": "USD"})
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn audit_clean(app: &TestApp) {
    let report = ledger::audit::audit(&app.db.client().await, Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

/// A test session holding `account`'s row lock until it is dropped or
/// rolled back, as a slow concurrent request would.
async fn lock_account(app: &TestApp, account: &str) -> tokio_postgres::Client {
    let client = app.db.client().await;
    client.batch_execute(&format!("BEGIN; SELECT 1 FROM accounts WHERE id = '{account}' FOR UPDATE")).await.unwrap();
    client
}

/// Waits until `n` sessions of the test's database wait on a lock.
async fn until_waiting_on_locks(app: &TestApp, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = scalar(
            app,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} of {n} requests wait on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn an_accounts_reference_returns_the_existing_account_with_200() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let body = json!({"reference": "buyer-42", "currency": "USD"});
    let first = app.post("/v1/accounts", &key, "acct:buyer-42", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");

    // the same reference under another key: the account that exists
    let again = app.post("/v1/accounts", &key, "acct:buyer-42:again", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(again.natural_key_replayed && !again.replayed);
    assert_eq!(again.body, first.body);
    // and that answer is now its key's, replayed byte for byte
    let replay = app.post("/v1/accounts", &key, "acct:buyer-42:again", body).await;
    assert!(replay.replayed && replay.natural_key_replayed);
    assert_eq!((replay.status, &replay.body), (again.status, &again.body));
    // other settings under that reference are a conflict, not a second account
    let other = app.post("/v1/accounts", &key, "acct:other", json!({"reference": "buyer-42", "currency": "EUR"})).await;
    assert_eq!((other.status, other.code().as_str()), (StatusCode::CONFLICT, "natural_key_conflict"));
    assert_eq!(app.db.count("accounts").await, 1);
}

#[actix_web::test]
async fn concurrent_transfers_never_take_a_source_below_its_floor() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let source = app.funded(&key, "wallet", "100.00").await;
    let destination = app.account(&key, "payee", "USD", false).await;
    // 40 transfers of 7.00 from 100.00 at once: 14 fit
    let (app, key, source, destination) = (&app, &key, &source, &destination);
    let answers = join_all((0..40).map(|i| async move {
        app.post(
            "/v1/transfers",
            key,
            &format!("pay-{i}"),
            json!({"source_account_id": source, "destination_account_id": destination, "amount": "7.00", "currency": "USD"}),
        )
        .await
    }))
    .await;
    let moved = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let declined =
        answers.iter().filter(|a| a.status == StatusCode::PAYMENT_REQUIRED && a.code() == "insufficient_funds").count();
    assert_eq!((moved, declined), (14, 26), "{answers:?}");
    assert_eq!(app.balance(key, source).await, "2.00");
    assert_eq!(app.balance(key, destination).await, "98.00");
    assert_eq!(scalar(app, "SELECT count(*) FROM transfers WHERE amount = 7").await, 14);
    audit_clean(app).await;
}

#[actix_web::test]
async fn a_restock_is_applied_once_per_key() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let first = app.post("/v1/skus/mug/restocks", &key, "restock:po-1", json!({"quantity": 10})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    // retries with the same key, one after the other and all at once
    let (app, key) = (&app, &key);
    let retries =
        join_all((0..10).map(|_| async move {
            app.post("/v1/skus/mug/restocks", key, "restock:po-1", json!({"quantity": 10})).await
        }))
        .await;
    for r in &retries {
        assert!(r.replayed, "{r:?}");
        assert_eq!((r.status, &r.body), (first.status, &first.body));
    }
    let sku = app.get("/v1/skus/mug", key).await.json();
    assert_eq!(sku["on_hand"], 10, "counted once");
    assert_eq!(scalar(app, "SELECT count(*) FROM stock_entries WHERE kind = 'restock'").await, 1);
    // another key is another delivery
    let second = app.post("/v1/skus/mug/restocks", key, "restock:po-2", json!({"quantity": 10})).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(app.get("/v1/skus/mug", key).await.json()["on_hand"], 20);
    audit_clean(app).await;
}

#[actix_web::test]
async fn a_5xx_is_never_stored_for_a_key() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = charge("o1", &buyer, &seller, "10.00");
    let stored = async |idem: &str| {
        let c = app.db.client().await;
        c.query_one("SELECT count(*) FROM idempotency_keys WHERE key = $1", &[&idem]).await.unwrap().get::<_, i64>(0)
    };

    // 503: the request's database session is terminated while it waits on the buyer's row
    let holder = lock_account(&app, &buyer).await;
    let (app_ref, key_ref) = (&app, &key);
    let request = app_ref.post("/v1/charges", key_ref, "o1:1", body.clone());
    let kill = async {
        until_waiting_on_locks(&app, 1).await;
        let killed: i64 = scalar(
            &app,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock') k",
        )
        .await;
        assert_eq!(killed, 1);
    };
    let (lost, ()) = futures::join!(request, kill);
    assert_eq!((lost.status, lost.code().as_str()), (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"));
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(stored("o1:1").await, 0, "a 503 is not stored");
    // A 503 says retry: the pooled connection the terminated session left
    // may itself be handed out once more before the pool drops it.
    let mut retry = app.post("/v1/charges", &key, "o1:1", body.clone()).await;
    for _ in 0..3 {
        if retry.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(stored("o1:1").await, 0, "a 503 is not stored");
        retry = app.post("/v1/charges", &key, "o1:1", body.clone()).await;
    }
    assert_eq!(retry.status, StatusCode::CREATED, "the retry runs afresh: {retry:?}");
    assert!(!retry.replayed);

    // 500: the database refuses the charge's row
    let db = app.db.client().await;
    db.batch_execute("ALTER TABLE charges ADD CONSTRAINT refuse_everything CHECK (false) NOT VALID").await.unwrap();
    let body2 = charge("o2", &buyer, &seller, "10.00");
    let refused = app.post("/v1/charges", &key, "o2:1", body2.clone()).await;
    assert_eq!((refused.status, refused.code().as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    assert_eq!(stored("o2:1").await, 0, "a 500 is not stored");
    db.batch_execute("ALTER TABLE charges DROP CONSTRAINT refuse_everything").await.unwrap();
    let retry2 = app.post("/v1/charges", &key, "o2:1", body2).await;
    assert_eq!(retry2.status, StatusCode::CREATED, "{retry2:?}");
    assert!(!retry2.replayed);

    assert_eq!(app.db.count("charges").await, 2);
    assert_eq!(scalar(&app, "SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 2);
    assert_eq!(app.balance(&key, &buyer).await, "80.00");
    audit_clean(&app).await;
}

#[actix_web::test]
async fn refund_exceeds_charge_is_stored_and_replayed_byte_for_byte() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let c = app.post("/v1/charges", &key, "o1:1", charge("o1", &buyer, &seller, "50.00")).await;
    let path = format!("/v1/charges/{}/refunds", c.id());
    let too_much = json!({"amount": "60.00", "reference": "o1:refund:1"});
    let declined = app.post(&path, &key, "o1:refund:1", too_much.clone()).await;
    assert_eq!((declined.status, declined.code().as_str()), (StatusCode::CONFLICT, "refund_exceeds_charge"));
    assert!(String::from_utf8_lossy(&declined.body).contains("50.00"), "{declined:?}");

    // what remains changes; the key still answers what it answered then
    let partial = app.post(&path, &key, "o1:refund:2", json!({"amount": "10.00", "reference": "o1:refund:2"})).await;
    assert_eq!(partial.status, StatusCode::CREATED);
    let replay = app.post(&path, &key, "o1:refund:1", too_much).await;
    assert!(replay.replayed, "{replay:?}");
    assert_eq!(
        (replay.status, &replay.content_type, &replay.body),
        (declined.status, &declined.content_type, &declined.body),
        "byte for byte"
    );
    assert_eq!(app.db.count("refunds").await, 1);
    assert_eq!(app.balance(&key, &buyer).await, "60.00");
}

#[actix_web::test]
async fn a_lock_wait_past_the_lock_timeout_is_409_contention_with_retry_after() {
    let app = spawn_app_with(|c| c.database.db_lock_timeout_ms = 300).await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = charge("o1", &buyer, &seller, "10.00");
    let holder = lock_account(&app, &buyer).await;

    let started = Instant::now();
    let blocked = app.post("/v1/charges", &key, "o1:1", body.clone()).await;
    let waited = started.elapsed();
    assert_eq!((blocked.status, blocked.code().as_str()), (StatusCode::CONFLICT, "contention"), "{blocked:?}");
    assert_eq!(blocked.retry_after.as_deref(), Some("1"));
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(app.db.count("idempotency_keys").await, 4, "only the set-up keys: a 409 is not stored");

    holder.batch_execute("ROLLBACK").await.unwrap();
    let retry = app.post("/v1/charges", &key, "o1:1", body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed);
    assert_eq!(app.balance(&key, &buyer).await, "90.00");
}

#[actix_web::test]
async fn sigterm_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    // each charge alone (no group commit), so that five sessions wait on the
    // lock; `sigterm_under_load_…` stops the API with batches in flight
    let mut api = ApiProcess::start(&app.db.url, &[("DB_LOCK_TIMEOUT_MS", "30000"), ("CHARGE_BATCH_MAX", "1")]).await;

    // five charges in flight: each waits on the buyer's row, held by this test
    let holder = lock_account(&app, &buyer).await;
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let (url, key, body) =
                (api.url("/v1/charges"), key.clone(), charge(&format!("o{i}"), &buyer, &seller, "1.00"));
            actix_web::rt::spawn(
                async move { post(&url, &key, &format!("o{i}:1"), &body, Duration::from_secs(60)).await },
            )
        })
        .collect();
    until_waiting_on_locks(&app, 5).await;

    api.signal(libc::SIGTERM);
    // new connections are refused at once, while the five are still running
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(("127.0.0.1", api.port)).is_ok() {
        assert!(Instant::now() < deadline, "the API still accepts connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(api.child.try_wait().unwrap().is_none(), "the API waits for its in-flight requests");
    assert!(in_flight.iter().all(|h| !h.is_finished()));

    let released = Instant::now();
    holder.batch_execute("ROLLBACK").await.unwrap();
    for h in in_flight {
        let reply = h.await.unwrap().expect("an in-flight request is answered");
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    }
    let status = api.exited(Duration::from_secs(10)).await.expect("the API exits once its requests are done");
    println!("exited {:?} after the last lock was released", released.elapsed());
    assert!(status.success(), "{status:?}");
    assert_eq!(app.db.count("charges").await, 5);
    assert_eq!(app.balance(&key, &buyer).await, "95.00");
}

/// SIGTERM while sixteen clients send charges as fast as they can: every
/// request the API accepted gets its answer (201, never a 5xx), new
/// connections are refused, the process exits within a bound, and a request
/// whose connection was refused is safe to retry: its effect exists once or
/// not at all, and the retry against another process ends it.
#[actix_web::test]
async fn sigterm_under_load_answers_every_accepted_request_and_never_a_5xx() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100000.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let mut api = ApiProcess::start(&app.db.url, &[("RATE_LIMIT_PER_SEC", "0")]).await;

    let stopping = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (url, key, buyer, seller, stopping) =
                (api.url("/v1/charges"), key.clone(), buyer.clone(), seller.clone(), stopping.clone());
            actix_web::rt::spawn(async move {
                let (mut answered, mut refused) = (Vec::new(), Vec::new());
                for i in 0.. {
                    let order = format!("load-{c}-{i}");
                    let body = charge(&order, &buyer, &seller, "1.00");
                    match post(&url, &key, &format!("{order}:1"), &body, Duration::from_secs(30)).await {
                        Ok(reply) => answered.push((order, reply)),
                        Err(why) => {
                            // only once the server is going away
                            assert!(stopping.load(Ordering::SeqCst), "{order}: {why}");
                            refused.push((order, body));
                            break;
                        }
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stopping.store(true, Ordering::SeqCst);
    api.signal(libc::SIGTERM);
    let status = api.exited(Duration::from_secs(15)).await.expect("the API exits within 15 s of SIGTERM under load");
    assert!(status.success(), "{status:?}");

    let (mut answered, mut refused) = (Vec::new(), Vec::new());
    for c in join_all(clients).await {
        let (a, r) = c.unwrap();
        answered.extend(a);
        refused.extend(r);
    }
    assert!(answered.len() >= 16, "the API was under load: {} answers", answered.len());
    for (order, reply) in &answered {
        assert_eq!(reply.status, StatusCode::CREATED, "{order}: {reply:?}");
    }
    assert_eq!(refused.len(), 16, "each client stops at its first refused connection");

    // The refused requests, retried with their keys against a fresh process:
    // each ends in one charge, none twice.
    let next = ApiProcess::start(&app.db.url, &[("RATE_LIMIT_PER_SEC", "0")]).await;
    for (order, body) in &refused {
        let retry = post(&next.url("/v1/charges"), &key, &format!("{order}:1"), body, Duration::from_secs(30))
            .await
            .expect("the other process answers");
        assert_eq!(retry.status, StatusCode::CREATED, "{order}: {retry:?}");
    }
    let charges = (answered.len() + refused.len()) as i64;
    assert_eq!(app.db.count("charges").await, charges);
    assert_eq!(scalar(&app, "SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, charges);
    let left = rust_decimal::Decimal::from(100_000) - rust_decimal::Decimal::from(charges);
    assert_eq!(app.balance(&key, &buyer).await, format!("{left}.00"));
    audit_clean(&app).await;
}
