//! The real `ledger-api` process killed at its crash points: after the
//! Idempotency-Key is locked but before the effect, and after the commit but
//! before the response. The client retries with the same key against the
//! restarted process; the effect happens exactly once and the audit is clean.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{spawn_app, TestApp};
use serde_json::{json, Value};

/// The real `ledger-api` binary, built by `make test` (with crash points) before the tests.
fn api_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ledger-api");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped, so a failing test leaks no server.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ledger-api serve` on `port`, armed at `crash_at` if given; returns once it answers.
async fn serve(db_url: &str, port: u16, crash_at: Option<&str>) -> Proc {
    serve_with(db_url, port, crash_at, &[]).await
}

/// [`serve`], with more of the environment set.
async fn serve_with(db_url: &str, port: u16, crash_at: Option<&str>, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(api_binary());
    cmd.envs(env.iter().copied());
    cmd.arg("serve")
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("HTTP_WORKERS", "2")
        .env("RUST_LOG", "warn")
        .env_remove("LEDGER_CRASH_AT")
        .stdout(Stdio::null());
    if let Some(point) = crash_at {
        cmd.env("LEDGER_CRASH_AT", point);
    }
    let child = Proc(cmd.spawn().expect("ledger-api starts"));
    let http = awc::Client::default();
    for _ in 0..100 {
        if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            if res.status().is_success() {
                return child;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ledger-api did not come up on port {port}");
}

/// A POST as a careful client sends it: `Err` when the connection dropped without an answer.
async fn post(port: u16, key: &str, idem: &str, path: &str, body: &Value) -> Result<(StatusCode, bool, Value), String> {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut res = http
        .post(format!("http://127.0.0.1:{port}{path}"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .insert_header(("Idempotency-Key", idem))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let bytes = res.body().await.map_err(|e| e.to_string())?;
    Ok((res.status(), replayed, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

struct Shop {
    app: TestApp,
    key: String,
    charge: Value,
}

/// Accounts and stock made through the in-process server; the charge is what crashes.
async fn shop() -> Shop {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let charge = json!({"order_id": "o1", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                        "amount": "12.00", "currency": "USD"});
    Shop { app, key, charge }
}

impl Shop {
    async fn scalar(&self, sql: &str) -> i64 {
        self.app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn audit_clean(&self) {
        let report = ledger::audit::audit(&self.app.db.client().await, Default::default()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }

    /// Sends the charge to a process armed at `point`, which dies; restarts
    /// the process unarmed on the same port and retries with the same key.
    async fn crash_then_retry(&self, point: &str) -> (StatusCode, bool, Value) {
        let port = free_port();
        let mut victim = serve(&self.app.db.api_url, port, Some(point)).await;
        let first = post(port, &self.key, "o1:1", "/v1/charges", &self.charge).await;
        assert!(
            first.is_err(),
            "the connection dropped without an answer (is ledger-api built with `--features ledger/crash-points`?): {first:?}"
        );
        let status = tokio::task::spawn_blocking(move || victim.0.wait().unwrap()).await.unwrap();
        assert!(!status.success(), "the process died at `{point}`");

        let restarted = serve(&self.app.db.api_url, port, None).await;
        let retry = post(port, &self.key, "o1:1", "/v1/charges", &self.charge).await.expect("the retry is answered");
        // and once more, as a client that missed that answer too
        let again = post(port, &self.key, "o1:1", "/v1/charges", &self.charge).await.unwrap();
        drop(restarted);
        assert_eq!(again.0, retry.0);
        assert!(again.1, "the second retry is a replay");
        assert_eq!(again.2, retry.2, "the same answer");
        retry
    }

    async fn assert_charged_once(&self, answer: &Value) {
        assert_eq!(self.scalar("SELECT count(*) FROM charges").await, 1, "one charge");
        assert_eq!(self.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
        assert_eq!(self.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
        let id: uuid::Uuid = self.app.db.client().await.query_one("SELECT id FROM charges", &[]).await.unwrap().get(0);
        assert_eq!(answer["id"], id.to_string(), "the answer names the one charge");
        let buyer = self.charge["buyer_account_id"].as_str().unwrap();
        assert_eq!(self.app.balance(&self.key, buyer).await, "88.00", "the buyer paid once");
        self.audit_clean().await;
    }
}

#[actix_web::test]
async fn api_killed_after_the_key_lock_runs_the_effect_once_on_retry() {
    let s = shop().await;
    let (status, replayed, answer) = s.crash_then_retry("api-after-key-lock").await;
    // the crash rolled back the key with the (unrun) effect: the retry runs it afresh
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(!replayed);
    s.assert_charged_once(&answer).await;
}

#[actix_web::test]
async fn api_killed_after_commit_replays_the_committed_answer_on_retry() {
    let s = shop().await;
    let (status, replayed, answer) = s.crash_then_retry("api-after-commit").await;
    // the charge committed before the crash: the retry gets its stored answer
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(replayed, "the committed answer is replayed");
    s.assert_charged_once(&answer).await;
}

/// A process that dies in the middle of a batch of charges (`idempotency::charge_batch`)
/// at `point`, with five requests in the batch and one more waiting in
/// another batch. Every client retries with its key against the restarted
/// process: each order is charged exactly once, each retry converges on
/// one answer, and the audit is clean. Returns how many charges the crash
/// left committed.
async fn crash_in_a_batch(point: &str) -> i64 {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let held = app.funded(&key, "held", "100.00").await;
    // Batches go to lanes by buyer (`CHARGE_BATCH_CONCURRENCY` of them, the
    // buyer's id modulo their count): the five charges' buyer must be in the
    // other lane than the held one, or they would queue behind its batch.
    let lane = |id: &str| id.parse::<uuid::Uuid>().unwrap().as_u128() % 2;
    let mut n = 0;
    let buyer = loop {
        let b = app.funded(&key, &format!("buyer-{n}"), "100.00").await;
        if lane(&b) != lane(&held) {
            break b;
        }
        n += 1;
    };
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = |order: &str, buyer: &str| {
        json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
               "amount": "10.00", "currency": "USD"})
    };
    let mut sent = vec![("held:1".to_owned(), body("held", &held))];
    sent.extend((0..5).map(|i| (format!("o{i}:1"), body(&format!("o{i}"), &buyer))));

    let port = free_port();
    let batching = [
        ("CHARGE_BATCH_MAX", "16"),
        ("CHARGE_BATCH_CONCURRENCY", "2"),
        // long enough for all five to reach the batch on a loaded machine
        // (each reads for a stored answer first)
        ("CHARGE_BATCH_WINDOW_US", "2000000"),
        ("DB_LOCK_TIMEOUT_MS", "20000"),
        ("DB_STATEMENT_TIMEOUT_MS", "30000"),
    ];
    let mut victim = serve_with(&app.db.api_url, port, Some(point), &batching).await;
    // The first batch, the held buyer's charge alone, waits on its
    // Idempotency-Key, which another transaction is inserting (a batch
    // skips a locked buyer, but a key's claim waits for it), before any
    // crash point; the five others then make one batch of their own, which
    // dies.
    let holder = app.db.client().await;
    holder
        .batch_execute(
            "BEGIN; INSERT INTO idempotency_keys (tenant_id, key, fingerprint) \
             SELECT id, 'held:1', '\\x00' FROM tenants WHERE name = 'shop'",
        )
        .await
        .unwrap();
    let (k, b) = (key.clone(), sent[0].1.clone());
    let first = actix_web::rt::spawn(async move { post(port, &k, "held:1", "/v1/charges", &b).await });
    let db = app.db.client().await;
    ledger_tests::eventually(10, "the first batch waits on the held key", || async {
        db.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            > 0
    })
    .await;
    let dropped = join_all(sent[1..].iter().map(|(idem, body)| post(port, &key, idem, "/v1/charges", body))).await;
    assert!(dropped.iter().all(Result::is_err), "no request of the batch was answered: {dropped:?}");
    assert!(first.await.unwrap().is_err(), "nor the one waiting");
    let status = tokio::task::spawn_blocking(move || victim.0.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the process died at `{point}`");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let committed = scalar(&db, "SELECT count(*) FROM charges").await;
    if committed > 0 {
        assert_eq!(scalar(&db, "SELECT count(DISTINCT xmin::text) FROM charges").await, 1, "in one transaction");
    }

    let _restarted = serve_with(&app.db.api_url, port, None, &batching).await;
    let retries = join_all(sent.iter().map(|(idem, body)| post(port, &key, idem, "/v1/charges", body))).await;
    for ((order, body), retry) in sent.iter().zip(&retries) {
        let retry = retry.as_ref().expect("the retry is answered");
        assert_eq!(retry.0, StatusCode::CREATED, "{order}: {retry:?}");
        let again = post(port, &key, order, "/v1/charges", body).await.unwrap();
        assert_eq!((again.0, &again.2), (retry.0, &retry.2), "{order}: one answer");
        assert!(again.1, "{order}: replayed");
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM charges").await, 6, "each order charged once");
    assert_eq!(scalar(&db, "SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 6);
    assert_eq!(scalar(&db, "SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 6);
    assert_eq!(app.balance(&key, &buyer).await, "50.00");
    assert_eq!(app.balance(&key, &held).await, "90.00");
    let report = ledger::audit::audit(&app.db.client().await, Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    committed
}

async fn scalar(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[actix_web::test]
async fn api_killed_in_a_batch_after_its_locks_leaves_none_of_it_and_every_retry_charges_once() {
    assert_eq!(crash_in_a_batch("charge-after-account-lock").await, 0, "nothing of the batch was committed");
}

#[actix_web::test]
async fn api_killed_after_a_batch_commits_leaves_all_of_it_and_every_retry_replays() {
    assert_eq!(crash_in_a_batch("api-after-commit").await, 5, "the whole batch was committed, in one transaction");
}
