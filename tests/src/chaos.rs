//! The seeded fault campaign: concurrent storefront clients run whole
//! purchases against several real `ledger-api` processes and real worker
//! processes while a fault injector, driven by the same seed, SIGKILLs and
//! restarts them (sometimes armed at a crash point, so that they die there on
//! a later request or message), cuts the workers' broker connections and fires duplicate
//! requests and duplicate messages. At the end the pipeline is quiesced, lost
//! emails are reconciled and the auditor runs; any violation fails the run.
//!
//! The seed drives every decision (what each client buys, when and which
//! fault strikes); the interleaving still depends on timing, so a replay
//! explores the same plan, not byte-identical scheduling.
//!
//! On the machine's shared PostgreSQL and RabbitMQ (the short campaign in
//! `make test`) the campaign does not restart the servers: it force-closes
//! the workers' broker connections through a proxy and drops the database
//! sessions instead. With `private_servers` (`make chaos`) it starts its own
//! PostgreSQL cluster and RabbitMQ node and also stops and restarts them
//! (`server_faults`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::proxy::Proxy;
pub use crate::rng::Rng;
use crate::server_faults::{self, Outages, Servers};
use crate::{spawn_worker_process, TestDb};

#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    pub apis: usize,
    /// Run on a PostgreSQL cluster and a RabbitMQ node of the campaign's
    /// own, and stop and restart them too.
    pub private_servers: bool,
}

/// The flags both campaigns take (`make chaos`, `make chaos-ha`), each also
/// read from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct CampaignArgs {
    /// The seed to replay; the clock when absent.
    #[arg(long, env = "CHAOS_SEED")]
    pub seed: Option<u64>,
    /// How long the campaign runs, in seconds.
    #[arg(long, env = "CHAOS_SECS", default_value_t = 600)]
    pub secs: u64,
    /// Concurrent clients making purchases.
    #[arg(long, env = "CHAOS_CLIENTS", default_value_t = 8)]
    pub clients: usize,
}

impl CampaignArgs {
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
        })
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub purchases: u64,
    pub charged: u64,
    pub refunded: u64,
    pub released: u64,
    pub declined: u64,
    /// Card purchases, the cards declined (then paid with the next
    /// attempt), and the 202 `processing` answers the clients retried.
    pub card_charges: u64,
    pub cards_declined: u64,
    pub processing_answers: u64,
    /// The fake provider's own largest count of payments for one (tenant,
    /// order, attempt), and its faults applied.
    pub provider_max_payments_per_attempt: u64,
    pub provider_faults: u64,
    pub requests: u64,
    pub retries: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub duplicates_absorbed: u64,
    pub duplicate_mismatches: u64,
    pub emails_lost: u64,
    pub emails_recovered: u64,
    /// Emails whose send has an unknown outcome (a worker died after it
    /// recorded the attempt), never resent automatically; and how many of
    /// them the mail sink shows delivered (an operator's check).
    pub emails_unknown: u64,
    pub emails_unknown_delivered: u64,
    /// The private servers' restarts, when the campaign ran on its own.
    pub restarts: Option<server_faults::Restarts>,
    pub violations: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "chaos campaign, seed {}", self.seed)?;
        writeln!(
            f,
            "  purchases {} (charged {}, refunded {}, released {}, declined {})",
            self.purchases, self.charged, self.refunded, self.released, self.declined
        )?;
        writeln!(
            f,
            "  card charges {} (declined then paid {}), 202 processing answers {}, provider faults {}, \
             provider payments per order attempt at most {}",
            self.card_charges,
            self.cards_declined,
            self.processing_answers,
            self.provider_faults,
            self.provider_max_payments_per_attempt
        )?;
        writeln!(f, "  requests {}, retries {}", self.requests, self.retries)?;
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(f, "  faults: {}", faults.join(", "))?;
        if let Some(r) = &self.restarts {
            writeln!(f, "  {r}")?;
        }
        writeln!(
            f,
            "  duplicates absorbed {} (answers differing from the first: {})",
            self.duplicates_absorbed, self.duplicate_mismatches
        )?;
        writeln!(
            f,
            "  emails lost {}, recovered by reconcile {}; unknown outcomes left to an operator {} ({} found delivered)",
            self.emails_lost, self.emails_recovered, self.emails_unknown, self.emails_unknown_delivered
        )?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        write!(f, "  violations {}", self.violations.len())
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api_binary() -> std::path::PathBuf {
    crate::workers_binary().with_file_name("ledger-api")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn serve(db_url: &str, port: u16, crash_at: Option<&str>, provider: &[(&'static str, String)]) -> Proc {
    let mut cmd = Command::new(api_binary());
    cmd.envs(provider.iter().map(|(k, v)| (*k, v.as_str())));
    if let Some(point) = crash_at {
        cmd.env("LEDGER_CRASH_AT", point);
    } else {
        cmd.env_remove("LEDGER_CRASH_AT");
    }
    let child = cmd
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("HTTP_WORKERS", "2")
        .env("DB_POOL_SIZE", "8")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("ledger-api starts");
    let proc = Proc(child);
    let http = awc::Client::default();
    for _ in 0..200 {
        if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            if res.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc
}

pub(crate) struct Shared {
    pub(crate) ports: Vec<u16>,
    pub(crate) summary: Summary,
    /// Every attempt, when the campaign measures unavailability from them
    /// (`chaos_ha`).
    pub(crate) attempts: Option<Vec<Attempt>>,
}

/// One attempt of a request, as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) at: Instant,
    /// None: no answer (connection refused or cut, timeout).
    pub(crate) status: Option<u16>,
    pub(crate) code: Option<String>,
    pub(crate) retry_after: bool,
    pub(crate) problem: bool,
    /// The answer was a stored one (`Idempotent-Replayed`) after an earlier
    /// attempt of the same key got no answer or a 5xx: a commit whose
    /// acknowledgement was lost, found by the retry.
    pub(crate) found_after_failure: bool,
}

/// A careful client: the same Idempotency-Key on every retry; retries on
/// connection errors, timeouts, 5xx, the 409s that say to retry
/// (`contention`, `request_in_progress`) and 429 (`rate_limited`), against
/// any API process.
pub(crate) async fn request(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = false;
    loop {
        let port = {
            let s = shared.borrow();
            s.ports[rng.below(s.ports.len() as u64) as usize]
        };
        shared.borrow_mut().summary.requests += 1;
        let sent = http
            .post(format!("http://127.0.0.1:{port}{path}"))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Idempotency-Key", idem))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body.to_string())
            .await;
        let mut attempt = Attempt {
            at: Instant::now(),
            status: None,
            code: None,
            retry_after: false,
            problem: false,
            found_after_failure: false,
        };
        if let Ok(mut res) = sent {
            let status = res.status().as_u16();
            let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            attempt.retry_after = header("retry-after").is_some();
            attempt.problem = header("content-type").is_some_and(|t| t.starts_with("application/problem+json"));
            attempt.found_after_failure = failed && header("idempotent-replayed").as_deref() == Some("true");
            if let Ok(bytes) = res.body().limit(1 << 20).await {
                let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                attempt.status = Some(status);
                attempt.code = answer["code"].as_str().map(str::to_owned);
                // a fault is never the client's nor a bug's: 503 or 409 to retry, never a 500
                if status == 500 {
                    shared.borrow_mut().summary.violations.push(format!("VIOLATION no_500: {path} {idem}: {answer}"));
                }
                // a refusal by a natural key is final; contention and a key in use are retried
                let refused = answer["code"] == "order_already_charged" || answer["code"] == "natural_key_conflict";
                // a card charge still `processing` (202) is asked again for its final answer
                if status == 202 {
                    shared.borrow_mut().summary.processing_answers += 1;
                }
                let retry = status >= 500 || status == 429 || status == 202 || (status == 409 && !refused);
                if !retry {
                    record(shared, attempt);
                    return (status, answer);
                }
            }
        }
        failed |= attempt.status.is_none_or(|s| s >= 500);
        record(shared, attempt);
        assert!(Instant::now() < deadline, "{path} with key {idem} never got an answer");
        shared.borrow_mut().summary.retries += 1;
        tokio::time::sleep(Duration::from_millis(50 + rng.below(150))).await;
    }
}

fn record(shared: &Rc<RefCell<Shared>>, attempt: Attempt) {
    if let Some(log) = &mut shared.borrow_mut().attempts {
        log.push(attempt);
    }
}

pub(crate) struct Store {
    pub(crate) key: String,
    pub(crate) seller: String,
    pub(crate) platform: String,
    pub(crate) buyers: Vec<String>,
    pub(crate) skus: Vec<String>,
}

/// One storefront client: purchase after purchase until `until`.
pub(crate) async fn client(shared: Rc<RefCell<Shared>>, store: Rc<Store>, n: usize, mut rng: Rng, until: Instant) {
    let buyer = &store.buyers[n];
    let mut i = 0;
    while Instant::now() < until {
        i += 1;
        let order = format!("c{n}-o{i}");
        shared.borrow_mut().summary.purchases += 1;
        let sku = &store.skus[rng.below(store.skus.len() as u64) as usize];
        let quantity = 1 + rng.below(2);
        let hold_body = json!({"order_id": order, "sku": sku, "quantity": quantity});
        let hold_key = format!("{order}:hold");
        let (status, hold) = request(&shared, &mut rng, &store.key, &hold_key, "/v1/reservations", &hold_body).await;
        if status != 201 {
            shared.borrow_mut().summary.declined += 1;
            continue;
        }
        duplicate(&shared, &mut rng, &store.key, &hold_key, "/v1/reservations", &hold_body, &hold).await;
        if rng.chance(15) {
            let path = format!("/v1/reservations/{}/release", hold["id"].as_str().unwrap());
            request(&shared, &mut rng, &store.key, &format!("{order}:release"), &path, &Value::Null).await;
            shared.borrow_mut().summary.released += 1;
            continue;
        }
        let cents = 100 + rng.below(5000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let fee = format!("{}.{:02}", cents / 1000, (cents / 10) % 100);
        let mut charge_body = json!({"order_id": order, "attempt": 1, "buyer_account_id": buyer,
            "seller_account_id": store.seller, "amount": amount, "currency": "USD",
            "platform_fee": {"account_id": store.platform, "amount": fee},
            "receipt_email": format!("{order}@example.com")});
        let mut charge_key = format!("{order}:charge");
        // beside wallet purchases, card purchases through the provider (its faults on)
        let card = rng.chance(40);
        if card {
            shared.borrow_mut().summary.card_charges += 1;
            let body = charge_body.as_object_mut().unwrap();
            body.remove("buyer_account_id");
            if rng.chance(10) {
                // a declined card first: a stored 402, then the next attempt with a good card
                body.insert("payment_method".into(), json!("pm_card_chargeDeclined"));
                let (status, declined) =
                    request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
                assert_eq!(status, 402, "declined card for {order}: {declined}");
                shared.borrow_mut().summary.cards_declined += 1;
                charge_body["attempt"] = json!(2);
                charge_key = format!("{order}:charge:2");
            }
            charge_body["payment_method"] = json!("pm_card_visa");
        }
        let (mut status, mut charge) =
            request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
        // an attempt the provider failed for good (a stored 5xx, no payment:
        // `provider_error`) is over; the storefront charges the next attempt
        while card && status == 402 && charge_body["attempt"].as_i64().unwrap() < 10 {
            let attempt = charge_body["attempt"].as_i64().unwrap() + 1;
            charge_body["attempt"] = json!(attempt);
            charge_key = format!("{order}:charge:{attempt}");
            (status, charge) = request(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body).await;
        }
        assert!(status == 201 || status == 200, "charge {order}: {status} {charge}");
        shared.borrow_mut().summary.charged += 1;
        duplicate(&shared, &mut rng, &store.key, &charge_key, "/v1/charges", &charge_body, &charge).await;
        if rng.chance(10) {
            // a storefront that bumps the attempt instead of retrying with its key: refused, naming the charge
            let mut bumped = charge_body.clone();
            let attempt = charge_body["attempt"].as_i64().unwrap() + 1;
            bumped["attempt"] = json!(attempt);
            let bumped_key = format!("{order}:charge:{attempt}");
            let (status, refused) = request(&shared, &mut rng, &store.key, &bumped_key, "/v1/charges", &bumped).await;
            natural_key_duplicate(&shared, status == 409 && refused["charge_id"] == charge["id"], &order, &refused);
        }
        // card refunds go through the provider, tested apart (tests/tests/cards.rs):
        // a fault stored for a refund's key would hold that reference for a day
        if !card && rng.chance(25) {
            let refund = format!("{}.{:02}", cents / 200, (cents / 2) % 100);
            let path = format!("/v1/charges/{}/refunds", charge["id"].as_str().unwrap());
            let body = json!({"amount": refund, "reference": format!("{order}:refund:1")});
            let (status, first) =
                request(&shared, &mut rng, &store.key, &format!("{order}:refund"), &path, &body).await;
            assert_eq!(status, 201, "refund of {order}");
            shared.borrow_mut().summary.refunded += 1;
            if rng.chance(20) {
                // the same refund under another key (the first one lost or expired): its reference finds it
                let (status, again) =
                    request(&shared, &mut rng, &store.key, &format!("{order}:refund:again"), &path, &body).await;
                natural_key_duplicate(&shared, status == 200 && again == first, &order, &again);
            }
        }
    }
}

/// Counts a request sent again under another key on purpose: its natural key
/// must have absorbed it (`absorbed`), or it is a violation.
fn natural_key_duplicate(shared: &Rc<RefCell<Shared>>, absorbed: bool, order: &str, answer: &Value) {
    let mut s = shared.borrow_mut();
    s.summary.duplicates_absorbed += 1;
    if !absorbed {
        s.summary.duplicate_mismatches += 1;
        s.summary.violations.push(format!("order {order}: a duplicate under another key answered {answer}"));
    }
}

/// Fires the same request again on purpose, sometimes; its answer must be the first one.
async fn duplicate(
    shared: &Rc<RefCell<Shared>>,
    rng: &mut Rng,
    key: &str,
    idem: &str,
    path: &str,
    body: &Value,
    first: &Value,
) {
    if !rng.chance(20) {
        return;
    }
    let (_, again) = request(shared, rng, key, idem, path, body).await;
    let mut s = shared.borrow_mut();
    s.summary.duplicates_absorbed += 1;
    if &again != first {
        s.summary.duplicate_mismatches += 1;
        s.summary.violations.push(format!("duplicate request {idem} answered {again} after {first}"));
    }
}

/// Runs a campaign and returns its summary (violations included).
pub async fn run(settings: Settings) -> Summary {
    let mut rng = Rng::new(settings.seed);
    let servers = match settings.private_servers {
        true => Some(Rc::new(Servers::start().await)),
        false => None,
    };
    let outages = Rc::new(Outages::default());
    let (db, broker, proxy) = match &servers {
        Some(s) => (
            TestDb::on(&s.pg).await,
            Broker::on(&s.rabbit.amqp_url()),
            Proxy::start(&format!("127.0.0.1:{}", s.rabbit.port())).await,
        ),
        None => (TestDb::new().await, Broker::new(), Proxy::start("127.0.0.1:5672").await),
    };
    let email_dir = std::env::temp_dir().join(format!("ledger-chaos-{}", uuid::Uuid::new_v4().simple()));
    let mut config = workers::config::Config::local(&db.worker_url, &broker.prefix);
    config.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=10", proxy.port);
    config.relay_poll_ms = 100;
    config.email_dir = email_dir.to_string_lossy().into_owned();

    // the payment provider, its faults drawn from the campaign's seed
    let started = chrono::Utc::now();
    let fake_seed = settings.seed.to_string();
    let fake = crate::provider::FakeProvider::start(&[
        "--fault-seed",
        &fake_seed,
        "--fault-error-rate",
        "0.04",
        "--fault-drop-rate",
        "0.06",
        "--fault-cut-rate",
        "0.03",
        "--fault-hang-rate",
        "0.02",
        "--fault-slow-rate",
        "0.02",
        "--hang-ms",
        "1500",
        "--slow-ms",
        "1500",
        "--fault-webhook-late-rate",
        "0.2",
        "--fault-webhook-twice-rate",
        "0.2",
        "--fault-webhook-out-of-order-rate",
        "0.2",
        "--webhook-late-ms",
        "500",
        "--webhook-hold-max-ms",
        "2000",
    ]);
    fake.configure(&mut config.gateway);
    config.gateway.card_lease_secs = 2;
    config.gateway.gateway_timeout_ms = 3000;
    config.gateway.gateway_search_lag_secs = 2;
    config.completer_poll_ms = 200;
    let mut provider = fake.env();
    provider.push(("CARD_LEASE_SECS", "2".to_owned()));
    provider.push(("GATEWAY_TIMEOUT_MS", "3000".to_owned()));
    provider.push(("GATEWAY_SEARCH_LAG_SECS", "2".to_owned()));
    let provider = provider;

    let mut apis = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..settings.apis {
        let port = free_port();
        apis.push(serve(&db.api_url, port, None, &provider).await);
        ports.push(port);
    }
    fake.set_webhook_endpoint(&format!("http://127.0.0.1:{}/v1/provider/webhooks", ports[0])).await;
    let roles = ["relay", "inventory", "email", "completer"];
    let points = ["relay-after-publish", "inventory-after-commit", "email-after-ack", "completer-after-provider"];
    let mut workers: Vec<Proc> = roles.iter().map(|r| Proc(spawn_worker_process(&config, r, None))).collect();
    // which processes were restarted armed at a crash point
    let mut api_armed = vec![false; apis.len()];
    let mut worker_armed = vec![false; workers.len()];
    let shared = Rc::new(RefCell::new(Shared { ports: ports.clone(), summary: Summary::default(), attempts: None }));
    shared.borrow_mut().summary.seed = settings.seed;

    // the store: accounts funded from an external account, stock on a few SKUs
    let store = open_store(&shared, &rng, &db.url, "chaos", settings.clients).await;

    // the clients
    let until = Instant::now() + settings.duration;
    let handles = start_clients(&shared, &store, settings.seed, settings.clients, until);

    // the servers' outages, on a task of their own
    let server_outages = servers.clone().map(|s| {
        let faults_rng = Rng::new(settings.seed ^ 0x5e4e_4e45);
        actix_web::rt::spawn(server_faults::run(s, outages.clone(), faults_rng, until))
    });

    // the fault injector, on this task
    let fault =
        |s: &Rc<RefCell<Shared>>, kind: &'static str| *s.borrow_mut().summary.faults.entry(kind).or_default() += 1;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
        // a process that died at its crash point is restarted unarmed, as a supervisor would
        for i in 0..apis.len() {
            if let Ok(Some(_)) = apis[i].0.try_wait() {
                apis[i] = serve(&db.api_url, ports[i], None, &provider).await;
                api_armed[i] = false;
                fault(&shared, "api died at a crash point");
            }
        }
        for i in 0..workers.len() {
            if let Ok(Some(_)) = workers[i].0.try_wait() {
                workers[i] = Proc(spawn_worker_process(&config, roles[i], None));
                worker_armed[i] = false;
                fault(&shared, "worker died at a crash point");
            }
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(apis.len() as u64) as usize;
                let _ = apis[i].0.kill(); // SIGKILL
                let _ = apis[i].0.wait();
                // sometimes restarted armed: it dies at that point on a later request
                const POINTS: [&str; 5] = [
                    "api-after-key-lock",
                    "api-after-commit",
                    "card-after-charge-created",
                    "card-after-provider",
                    "card-after-complete",
                ];
                let arm = rng.chance(30).then(|| POINTS[rng.below(POINTS.len() as u64) as usize]);
                apis[i] = serve(&db.api_url, ports[i], arm, &provider).await;
                api_armed[i] = arm.is_some();
                fault(&shared, "api killed");
            }
            1 => {
                let i = rng.below(workers.len() as u64) as usize;
                let _ = workers[i].0.kill();
                let _ = workers[i].0.wait();
                // the email worker dies before its claim or after its send
                let arm = rng.chance(30).then(|| if i == 2 && rng.chance(50) { "email-after-send" } else { points[i] });
                workers[i] = Proc(spawn_worker_process(&config, roles[i], arm));
                worker_armed[i] = arm.is_some();
                fault(&shared, "worker killed");
            }
            2 => {
                proxy.cut();
                fault(&shared, "broker connections cut");
            }
            3 => {
                // What a PostgreSQL restart does to the service: every session of
                // the campaign's database dies at once, mid-transaction or idle.
                // Other databases on the shared server are left alone.
                let Some(pg) = server_faults::client_unless_down(&db.url, &outages).await else { continue };
                let dropped = pg
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&db.name],
                    )
                    .await;
                if dropped.is_ok() {
                    fault(&shared, "database connections dropped");
                }
            }
            _ => {
                let Some(pg) = server_faults::client_unless_down(&db.url, &outages).await else { continue };
                let row = pg
                    .query_opt(
                        "SELECT message_id::text, event_type, payload::text FROM outbox \
                          WHERE published_at IS NOT NULL ORDER BY random() LIMIT 1",
                        &[],
                    )
                    .await;
                if let (Ok(Some(row)), false) = (row, outages.is_down().1) {
                    let (id, kind, body): (String, String, String) = (row.get(0), row.get(1), row.get(2));
                    if server_faults::publish(&broker, &kind, &id, body.as_bytes()).await.is_ok() {
                        fault(&shared, "duplicate message");
                    }
                }
            }
        }
    }
    // the last outage ends with both servers running
    if let Some(task) = server_outages {
        task.await.expect("the server outages ended");
    }
    // the last in-flight requests and the quiescence run on unarmed processes
    for i in 0..apis.len() {
        if api_armed[i] || apis[i].0.try_wait().ok().flatten().is_some() {
            let _ = apis[i].0.kill();
            let _ = apis[i].0.wait();
            apis[i] = serve(&db.api_url, ports[i], None, &provider).await;
        }
    }
    for i in 0..workers.len() {
        if worker_armed[i] || workers[i].0.try_wait().ok().flatten().is_some() {
            let _ = workers[i].0.kill();
            let _ = workers[i].0.wait();
            workers[i] = Proc(spawn_worker_process(&config, roles[i], None));
        }
    }
    for h in handles {
        h.await.expect("a client finished");
    }

    // quiesce: everything relayed and consumed, however long a loaded machine takes
    let pg = db.client().await;
    match quiesce(&pg, &broker).await {
        Ok(took) => eprintln!("chaos: the pipeline drained the campaign's backlog in {:.0} s", took.as_secs_f64()),
        Err(stuck) => panic!("{stuck}\n{}", server_faults::describe(servers.as_deref(), &broker).await),
    }
    let mut summary = std::mem::take(&mut shared.borrow_mut().summary);
    settle(&pg, &config, &fake, &email_dir, started, &mut summary).await;
    summary.provider_faults = fake.stats().await["faults_applied"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    summary.restarts = servers.as_ref().map(|_| outages.restarts());
    // a fault is never a message's own: nothing may end in the dead-letter queue
    // (checked where the campaign owns its broker; the short shared run leaves it out)
    if servers.is_some() {
        let dead = broker.depth(&broker.names.dead_letter_queue).await;
        if dead > 0 {
            summary.violations.push(format!("VIOLATION nothing_dead_lettered: {dead} message(s) dead-lettered"));
        }
    }
    drop(apis);
    drop(workers);
    let _ = std::fs::remove_dir_all(&email_dir);
    summary
}

/// A tenant named `name` made on `db_url`, and its store over the API: a
/// funded buyer for each of `clients`, a seller, a platform-fee account and
/// four stocked SKUs. Its requests draw from a copy of `rng`, so that the
/// campaign's own draws stay the seed's.
pub(crate) async fn open_store(
    shared: &Rc<RefCell<Shared>>,
    rng: &Rng,
    db_url: &str,
    name: &str,
    clients: usize,
) -> Rc<Store> {
    let key = {
        let mut conn = ledger::tenants::connect(db_url).await.unwrap();
        ledger::tenants::create_with_key(&mut conn, name).await.unwrap().1
    };
    let mut setup = rng.clone();
    let mut account = async |reference: String, negative: bool| -> String {
        let body = json!({"reference": reference, "currency": "USD", "allow_negative": negative});
        let (_, a) = request(shared, &mut setup, &key, &format!("acct:{reference}"), "/v1/accounts", &body).await;
        a["id"].as_str().unwrap().to_owned()
    };
    let ext = account("external".into(), true).await;
    let seller = account("seller".into(), false).await;
    let platform = account("platform".into(), false).await;
    let mut buyers = Vec::new();
    for n in 0..clients {
        buyers.push(account(format!("buyer-{n}"), false).await);
    }
    for (n, b) in buyers.iter().enumerate() {
        let body =
            json!({"source_account_id": ext, "destination_account_id": b, "amount": "1000000.00", "currency": "USD"});
        request(shared, &mut setup, &key, &format!("fund:{n}"), "/v1/transfers", &body).await;
    }
    let skus: Vec<String> = (0..4).map(|i| format!("sku-{i}")).collect();
    for s in &skus {
        let body = json!({"quantity": 1_000_000});
        request(shared, &mut setup, &key, &format!("restock:{s}"), &format!("/v1/skus/{s}/restocks"), &body).await;
    }
    Rc::new(Store { key, seller, platform, buyers, skus })
}

/// `clients` storefront clients buying from `store` until `until`, each
/// with a random stream of its own derived from `seed`.
pub(crate) fn start_clients(
    shared: &Rc<RefCell<Shared>>,
    store: &Rc<Store>,
    seed: u64,
    clients: usize,
    until: Instant,
) -> Vec<actix_web::rt::task::JoinHandle<()>> {
    (0..clients)
        .map(|n| {
            let client_rng = Rng::new(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9));
            actix_web::rt::spawn(client(shared.clone(), store.clone(), n, client_rng, until))
        })
        .collect()
}

/// Waits until the pipeline is quiet: every outbox row relayed, both queues
/// consumed, no charge `processing`; returns how long that took. What a
/// campaign leaves behind can be a backlog of thousands of events on a
/// loaded machine, which the workers drain at their pace: this fails (with
/// the counts) when the pipeline stops moving, no progress for two minutes,
/// not when it is slow. The work left is the rows to relay (each makes a copy
/// for both queues) and the copies waiting in the queues.
pub(crate) async fn quiesce(pg: &tokio_postgres::Client, broker: &Broker) -> Result<Duration, String> {
    let started = Instant::now();
    let (mut least, mut progressed) = (i64::MAX, Instant::now());
    loop {
        let unpublished: i64 =
            pg.query_one("SELECT count(*) FROM outbox WHERE published_at IS NULL", &[]).await.unwrap().get(0);
        let processing: i64 =
            pg.query_one("SELECT count(*) FROM charges WHERE status = 'processing'", &[]).await.unwrap().get(0);
        let depth = broker.depth(&broker.names.inventory).await + broker.depth(&broker.names.email).await;
        if unpublished == 0 && depth == 0 && processing == 0 {
            return Ok(started.elapsed());
        }
        let left = 2 * unpublished + i64::from(depth);
        if left < least {
            (least, progressed) = (left, Instant::now());
        }
        if progressed.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the pipeline stopped moving: {unpublished} unpublished, {depth} queued, {processing} processing, \
                 none drained for 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checks a campaign runs once quiesced, shared by `make chaos` and
/// `make chaos-ha`, each violation pushed onto `summary`: lost emails
/// reconciled (never one whose send is unknown), `audit --quiesced`,
/// `reconcile-payments` and the provider's own count of payments per order
/// attempt, one effect per purchase, and every paid order's email delivered
/// exactly once (counted in the mail sink, `email_dir`).
pub(crate) async fn settle(
    pg: &tokio_postgres::Client,
    config: &workers::config::Config,
    fake: &crate::provider::FakeProvider,
    email_dir: &std::path::Path,
    started: chrono::DateTime<chrono::Utc>,
    summary: &mut Summary,
) {
    // the last emails' sends settle (the email worker acks before it sends)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pool = config.pool().unwrap();
    let mailer = workers::email::Mailer::from_config(config).unwrap();
    let sends = workers::email::Sends { never_claimed: true, resend_claimed: false };
    let reconciled = workers::email::reconcile_with(&pool, &mailer, &config.email_from, 2, sends).await.unwrap();
    let report = ledger::audit::audit(pg, ledger::audit::Options { quiesced: true }).await.unwrap();
    // the provider's payments against the ledger, and the provider's own count per order attempt
    let payments = service::payments::Payments::new(&config.gateway).unwrap();
    let (from, to) = (started - chrono::Duration::minutes(1), chrono::Utc::now() + chrono::Duration::minutes(1));
    let differences = workers::reconcile_payments::reconcile(&pool, &payments, from, to).await.unwrap();
    let provider_max = fake.max_payments_per_attempt().await;
    let count = async |sql: &str| -> u64 { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 };
    // every paid order with a receipt address has its email claimed, now that reconcile ran
    let unclaimed = count(
        "SELECT count(*) FROM (SELECT DISTINCT tenant_id, order_id FROM charges WHERE receipt_email IS NOT NULL) c \
          WHERE NOT EXISTS (SELECT 1 FROM emails m WHERE m.tenant_id = c.tenant_id AND m.order_id = c.order_id)",
    )
    .await;
    // and the mail sink holds each order's email at most once, every email
    // marked sent exactly once
    let delivered = delivered_by_message_id(email_dir);
    let sent: Vec<(uuid::Uuid, String)> = pg
        .query("SELECT tenant_id, order_id FROM emails WHERE status = 'sent'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let message_id = |tenant, order: &str| workers::email::message_id(tenant, order, &config.email_from).unwrap();
    let missing = sent.iter().filter(|(t, o)| !delivered.contains_key(&message_id(*t, o))).count();
    let twice: Vec<String> = delivered.iter().filter(|(_, n)| **n > 1).map(|(id, n)| format!("{id} ×{n}")).collect();
    // a declined card leaves its charge, declined; the next attempt pays
    let charges = count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await;
    let refunds = count("SELECT count(*) FROM refunds").await;

    summary.emails_lost = reconciled.len() as u64;
    summary.emails_recovered = reconciled.iter().filter(|r| r.sent).count() as u64;
    let unknown: Vec<_> = reconciled.iter().filter(|r| r.lost.state == ledger::emails::Unsent::Claimed).collect();
    summary.emails_unknown = unknown.len() as u64;
    summary.emails_unknown_delivered = unknown.iter().filter(|r| delivered.contains_key(&r.message_id)).count() as u64;
    summary.provider_max_payments_per_attempt = provider_max;
    let violations = &mut summary.violations;
    for v in report.violations {
        violations.push(format!("VIOLATION {}: {}", v.invariant, v.row));
    }
    for d in differences {
        violations.push(format!("VIOLATION reconcile_payments: {} {}", d.kind, d.detail));
    }
    if provider_max > 1 {
        violations.push(format!(
            "VIOLATION provider_one_payment_per_attempt: the provider holds {provider_max} payments for one order attempt"
        ));
    }
    if (charges, refunds) != (summary.charged, summary.refunded) {
        violations.push(format!(
            "VIOLATION one_effect_per_purchase: {charges} charge(s) and {refunds} refund(s) for {} and {} asked",
            summary.charged, summary.refunded
        ));
    }
    if unclaimed > 0 {
        violations.push(format!(
            "VIOLATION email_exactly_once_after_reconcile: {unclaimed} paid order(s) whose email was never sent"
        ));
    }
    if missing > 0 {
        violations.push(format!(
            "VIOLATION email_exactly_once_after_reconcile: {missing} email(s) marked sent, not delivered"
        ));
    }
    if !twice.is_empty() {
        violations.push(format!("VIOLATION email_at_most_once_delivered: {}", twice.join(", ")));
    }
}

/// How many emails the file transport wrote for each Message-ID.
pub(crate) fn delivered_by_message_id(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let id = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id").then(|| value.trim().to_owned())
        });
        if let Some(id) = id {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}
