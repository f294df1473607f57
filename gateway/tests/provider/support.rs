//! The fake provider started as a separate process on a free port with its
//! own state folder, a webhook receiver, and what the tests share.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::launch::Process;
use gateway::{Client, Config, PaymentRequest};
use serde_json::{json, Value};

pub const SECRET_KEY: &str = "sk_test_ledger_local";
pub const WEBHOOK_SECRET: &str = "whsec_ledger_local";

/// A fake provider process. Dropping it kills the process and removes its
/// state folder (printing its log if the test failed).
pub struct Fake {
    process: Process,
    http: reqwest::Client,
}

impl Fake {
    pub fn start(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("fake-provider-test-{}", uuid::Uuid::new_v4().simple()));
        let bin = Path::new(env!("CARGO_BIN_EXE_fake-provider"));
        let process = Process::start(bin, &dir, args, "info").unwrap_or_else(|e| panic!("{e}"));
        Self { process, http: reqwest::Client::new() }
    }

    /// Where it listens.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// `kill -9`, then a new process on the same state folder (and a new port).
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A new process on the same state folder (and a new port).
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Appends raw bytes to the journal (while the process is down).
    pub fn append_to_journal(&self, bytes: &[u8]) {
        use std::io::Write;
        let mut journal = OpenOptions::new().append(true).open(self.process.dir().join("journal.jsonl")).unwrap();
        journal.write_all(bytes).unwrap();
    }

    pub fn client(&self, timeout: Duration) -> Client {
        Client::new(&Config::new(self.url(), SECRET_KEY, WEBHOOK_SECRET).with_timeout(timeout)).unwrap()
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.admin_answer(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        answer
    }

    /// An admin request whose answer may be an error.
    pub async fn admin_answer(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}/_fake{path}", self.url()));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        (status, answer)
    }

    /// A GET of the API with the secret key, answered as is.
    pub async fn raw_get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response =
            self.http.get(format!("{}{path}", self.url())).bearer_auth(SECRET_KEY).query(query).send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap())
    }

    pub async fn arm(&self, fault: Value) {
        self.admin(reqwest::Method::POST, "/faults", Some(fault)).await;
    }

    pub async fn stats(&self) -> Value {
        self.admin(reqwest::Method::GET, "/stats", None).await
    }

    /// Payments per (tenant, order, attempt), as the fake counts them.
    pub async fn groups(&self) -> Value {
        self.admin(reqwest::Method::GET, "/payments?group_by=tenant_id,order_id,attempt", None).await
    }

    /// How many payments the fake holds for one order (any attempt).
    pub async fn payments_of(&self, order: &str) -> usize {
        let all = self.admin(reqwest::Method::GET, "/payments", None).await;
        all["data"].as_array().unwrap().iter().filter(|p| p["metadata"]["order_id"] == order).count()
    }

    pub async fn set_webhook_endpoint(&self, url: &str) {
        self.admin(reqwest::Method::PUT, "/webhook-endpoints", Some(json!({ "urls": [url] }))).await;
    }

    /// A POST with the body and key given, answered as is (for headers and
    /// exact bodies).
    pub async fn raw_post(&self, path: &str, key: &str, form: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.url()))
            .bearer_auth(SECRET_KEY)
            .header("Idempotency-Key", key)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_owned());
        (status, replayed, response.text().await.unwrap())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- fake provider log ({}) ---\n{}",
                self.process.dir().display(),
                self.process.log_tail(usize::MAX)
            );
        }
    }
}

/// Metadata for one (tenant, order, attempt), as the service sends it.
pub fn metadata(order: &str, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tenant_id".to_owned(), "tenant-1".to_owned()),
        ("order_id".to_owned(), order.to_owned()),
        ("attempt".to_owned(), attempt.to_string()),
    ])
}

pub fn payment(order: &str, amount: i64, payment_method: &str) -> PaymentRequest {
    PaymentRequest {
        amount,
        currency: "EUR".to_owned(),
        payment_method: payment_method.to_owned(),
        metadata: metadata(order, 1),
    }
}

/// The form `create_payment` sends for `payment(order, amount, pm)`, for raw
/// requests that must match it.
pub fn payment_form<'a>(order: &'a str, amount: &'a str, payment_method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("amount", amount),
        ("currency", "eur"),
        ("payment_method", payment_method),
        ("confirm", "true"),
        ("payment_method_types[]", "card"),
        ("metadata[attempt]", "1"),
        ("metadata[order_id]", order),
        ("metadata[tenant_id]", "tenant-1"),
    ]
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Verifies a delivery with the fake's webhook secret, as a receiver would.
pub fn verify(received: &Received) -> Result<gateway::Event, gateway::SignatureError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    gateway::webhook::verify(
        &received.body,
        received.signature.as_deref(),
        WEBHOOK_SECRET,
        gateway::webhook::DEFAULT_TOLERANCE,
        now,
    )
}

/// A webhook delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

/// An HTTP endpoint that records webhook deliveries; it can be told to
/// answer 500 to the next deliveries.
pub struct WebhookReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    fail_next: Arc<AtomicU32>,
    server: actix_web::dev::ServerHandle,
}

impl WebhookReceiver {
    pub fn start() -> Self {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

        let received = Arc::new(Mutex::new(Vec::new()));
        let fail_next = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel();
        let (shared_received, shared_fail) = (received.clone(), fail_next.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let received = shared_received.clone();
                    let fail = shared_fail.clone();
                    App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                        let received = received.clone();
                        let fail = fail.clone();
                        async move {
                            let failing =
                                fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                            if failing {
                                return HttpResponse::InternalServerError().finish();
                            }
                            let signature =
                                req.headers().get("stripe-signature").map(|v| v.to_str().unwrap().to_owned());
                            received.lock().unwrap().push(Received {
                                signature,
                                body: body.to_vec(),
                                at: Instant::now(),
                            });
                            HttpResponse::Ok().finish()
                        }
                    }))
                })
                .workers(1)
                .bind(("127.0.0.1", 0))
                .unwrap();
                let address = server.addrs()[0];
                let server = server.run();
                tx.send((address, server.handle())).unwrap();
                server.await.unwrap();
            });
        });
        let (address, server) = rx.recv().unwrap();
        Self { url: format!("http://{address}/webhooks"), received, fail_next, server }
    }

    /// Answer 500 to the next `n` deliveries.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` deliveries arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, async || {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        // Sends the stop command at once; the server's thread then ends.
        drop(self.server.stop(false));
    }
}
