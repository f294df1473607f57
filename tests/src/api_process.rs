//! The real `ledger-api` binary as a separate process, for the tests that
//! kill it, freeze it or signal it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::http::StatusCode;
use serde_json::Value;

/// The real `ledger-api` binary, built with crash points before the tests
/// (`cargo build --workspace --bins --features ledger/crash-points`).
pub fn api_binary() -> std::path::PathBuf {
    crate::workers_binary().with_file_name("ledger-api")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `ledger-api serve`, killed (SIGKILL) when dropped, so a failing test
/// leaks no server, frozen or not.
pub struct ApiProcess {
    pub child: Child,
    pub port: u16,
}

/// Settings a test sets itself; removed from the inherited environment so
/// that the process runs with what the test says, and the defaults otherwise.
const CONTROLLED: &[&str] = &[
    "LEDGER_CRASH_AT",
    "LEDGER_FREEZE_AT",
    "DB_LOCK_TIMEOUT_MS",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "DB_KEEPALIVES_IDLE_SECS",
    "DB_KEEPALIVES_INTERVAL_SECS",
    "DB_KEEPALIVES_RETRIES",
    "DB_POOL_SIZE",
    "RATE_LIMIT_PER_SEC",
    "RATE_LIMIT_BURST",
    "API_KEY_CACHE_MS",
    "API_KEY_LAST_USED_FLUSH_SECS",
    "AUTH_FAILURES_PER_SEC",
    "AUTH_FAILURES_BURST",
    "METRICS_ADDR",
    "GATEWAY_URL",
    "GATEWAY_SECRET_KEY",
    "GATEWAY_WEBHOOK_SECRET",
    "GATEWAY_TIMEOUT_MS",
    "GATEWAY_KEY_SECRET",
    "GATEWAY_KEY_WINDOW_SECS",
    "CARD_LEASE_SECS",
    "GATEWAY_SEARCH_LAG_SECS",
];

impl ApiProcess {
    /// Starts the API on a free port with `env` and returns once it answers.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> ApiProcess {
        let port = free_port();
        let mut cmd = Command::new(api_binary());
        cmd.arg("serve")
            .env("DATABASE_URL", crate::as_role(db_url, crate::API_ROLE))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("HTTP_WORKERS", "2")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        for name in CONTROLLED {
            cmd.env_remove(name);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let process = ApiProcess { child: cmd.spawn().expect("ledger-api starts"), port };
        let http = awc::Client::default();
        for _ in 0..100 {
            if let Ok(res) = http.get(process.url("/healthz")).send().await {
                if res.status().is_success() {
                    return process;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ledger-api did not come up on port {port}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The process's scheduling state from `/proc` (`T` when stopped).
    pub fn state(&self) -> Option<char> {
        crate::process_state(self.child.id())
    }

    /// Waits until the process has stopped itself (SIGSTOP at a freeze point).
    pub async fn until_frozen(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.state() != Some('T') {
            assert!(std::time::Instant::now() < deadline, "ledger-api did not freeze (state {:?})", self.state());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `within` for the process to exit; its status, or `None`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL ends a stopped process too
        let _ = self.child.wait();
    }
}

/// What a POST to a process answered, or why it got no answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub replayed: bool,
    pub natural_key_replayed: bool,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// A POST as a client sends it: `Err` when the connection failed or dropped
/// without an answer.
pub async fn post(url: &str, api_key: &str, idem: &str, body: &Value, timeout: Duration) -> Result<Reply, String> {
    let http = awc::Client::builder().timeout(timeout).finish();
    let mut res = http
        .post(url)
        .insert_header(("Authorization", format!("Bearer {api_key}")))
        .insert_header(("Idempotency-Key", idem))
        .insert_header(("Content-Type", "application/json"))
        .send_body(body.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let natural_key_replayed = header("natural-key-replayed").as_deref() == Some("true");
    let retry_after = header("retry-after");
    let bytes = res.body().await.map_err(|e| e.to_string())?;
    Ok(Reply {
        status: res.status(),
        replayed,
        natural_key_replayed,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}
