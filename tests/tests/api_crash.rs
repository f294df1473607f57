//! The real `ledger-api` process killed at its crash points: after the
//! Idempotency-Key is locked but before the effect, and after the commit but
//! before the response. The client retries with the same key against the
//! restarted process; the effect happens exactly once and the audit is clean.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::http::StatusCode;
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
    let mut cmd = Command::new(api_binary());
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
