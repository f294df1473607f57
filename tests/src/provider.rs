//! The fake payment provider (`gateway`'s `fake-provider` binary) as a
//! separate process, on a free port with a state folder of its own, and the
//! admin calls the tests ask it with (its own count of payments per order
//! attempt, faults, webhook endpoints).

use std::path::PathBuf;
use std::time::Duration;

use gateway::launch::Process;
use serde_json::{json, Value};

/// The secrets the fake uses by default, and the service's defaults too.
pub const SECRET_KEY: &str = "sk_test_ledger_local";
pub const WEBHOOK_SECRET: &str = "whsec_ledger_local";

/// The real `fake-provider` binary (built by `cargo build --workspace --bins`).
pub fn binary() -> PathBuf {
    crate::workers_binary().with_file_name("fake-provider")
}

/// A fake provider process; killed, and its state folder removed, when
/// dropped (its log printed if the test failed).
pub struct FakeProvider {
    process: Process,
    http: awc::Client,
}

impl FakeProvider {
    /// Starts it on a free port with `args` beside the listen address and
    /// the state folder (e.g. `--fault-seed`, `--webhook-url`).
    pub fn start(args: &[&str]) -> FakeProvider {
        let bin = binary();
        assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
        let dir = std::env::temp_dir().join(format!("ledger-fake-provider-{}", uuid::Uuid::new_v4().simple()));
        let process = Process::start(&bin, &dir, args, "info").unwrap_or_else(|e| panic!("{e}"));
        let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        FakeProvider { process, http }
    }

    /// Where it listens.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// `kill -9`, then a new process on the same state folder (a new port).
    pub fn kill_and_restart(&mut self) {
        self.process.kill();
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The settings a service process points at it with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GATEWAY_URL", self.url().to_owned()),
            ("GATEWAY_SECRET_KEY", SECRET_KEY.to_owned()),
            ("GATEWAY_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ]
    }

    /// Points a service configuration at it.
    pub fn configure(&self, gateway: &mut service::settings::Gateway) {
        gateway.gateway_url = self.url().to_owned();
        gateway.gateway_secret_key = SECRET_KEY.to_owned();
        gateway.gateway_webhook_secret = WEBHOOK_SECRET.to_owned();
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = self
            .http
            .request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}/_fake{path}", self.url()));
        let mut res = match body {
            Some(b) => req.insert_header(("Content-Type", "application/json")).send_body(b.to_string()).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("the fake provider answers {path}: {e}"));
        let status = res.status();
        let bytes = res.body().limit(64 << 20).await.unwrap();
        assert!(status.is_success(), "{path}: {status} {}", String::from_utf8_lossy(&bytes));
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    /// Arms a fault: `{"kind": "drop_after_charge", "count": 1, "metadata": {...}}`.
    pub async fn arm(&self, fault: Value) {
        self.admin("POST", "/faults", Some(fault)).await;
    }

    /// Random faults from a seed (`PUT /_fake/faults/random`).
    pub async fn random_faults(&self, settings: Value) {
        self.admin("PUT", "/faults/random", Some(settings)).await;
    }

    pub async fn disarm(&self) {
        self.admin("DELETE", "/faults", None).await;
    }

    pub async fn stats(&self) -> Value {
        self.admin("GET", "/stats", None).await
    }

    /// Every payment the fake holds.
    pub async fn payments(&self) -> Vec<Value> {
        self.admin("GET", "/payments", None).await["data"].as_array().cloned().unwrap_or_default()
    }

    /// The payments of one order (any attempt, any tenant).
    pub async fn payments_of(&self, order: &str) -> Vec<Value> {
        self.payments().await.into_iter().filter(|p| p["metadata"]["order_id"] == order).collect()
    }

    /// The fake's own largest count of payments for one (tenant, order, attempt).
    pub async fn max_payments_per_attempt(&self) -> u64 {
        let groups = self.admin("GET", "/payments?group_by=tenant_id,order_id,attempt", None).await;
        groups["max_per_group"].as_u64().unwrap_or(0)
    }

    /// The refunds of an order's payments, newest first, as the provider
    /// lists them (`GET /v1/refunds?payment_intent=...`).
    pub async fn refunds_of(&self, order: &str) -> Vec<gateway::Refund> {
        let config = gateway::Config::new(self.url(), SECRET_KEY, WEBHOOK_SECRET);
        let client = gateway::Client::new(&config).unwrap();
        let mut refunds = Vec::new();
        for payment in self.payments_of(order).await {
            refunds.extend(client.list_refunds(payment["id"].as_str().unwrap()).await.unwrap());
        }
        refunds
    }

    /// Every refund of one payment, newest first, as the provider lists
    /// them (`GET /v1/refunds?payment_intent=...`).
    pub async fn refunds_of_payment(&self, payment_id: &str) -> Vec<gateway::Refund> {
        api_client(self.url())
            .list_refunds(payment_id)
            .await
            .unwrap_or_else(|e| panic!("the fake provider lists the refunds of {payment_id}: {e}"))
    }

    pub async fn set_webhook_endpoint(&self, url: &str) {
        self.admin("PUT", "/webhook-endpoints", Some(json!({ "urls": [url] }))).await;
    }

    /// Every webhook delivery the fake made or holds.
    pub async fn webhooks(&self) -> Value {
        self.admin("GET", "/webhooks", None).await
    }
}

/// A client of the provider's API at `url`, with the keys the fake uses by
/// default: for a test that holds only the fake's address.
pub fn api_client(url: &str) -> gateway::Client {
    gateway::Client::new(&gateway::Config::new(url, SECRET_KEY, WEBHOOK_SECRET)).unwrap()
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fake provider log, last lines ---\n{}", self.process.log_tail(60));
        }
    }
}
