//! The webhook figures: deliveries per second, and the lag from an event's
//! commit to its receipt, with a storefront that takes 50 ms to answer and
//! the webhooks worker allowed [`IN_FLIGHT`] deliveries in flight to it.
//!
//! Runs after the messaging step (whose relay leaves the outbox published)
//! and before the growth step, alone: no other workload runs meanwhile, and
//! its workers are stopped before the next step starts.
//!
//! 1. **Receiver**: an HTTP server in the bench process (one actix worker
//!    thread) that, for every POST, notes the time it arrived under its
//!    `webhook-id` (the first time only; a later one is a duplicate),
//!    checks the `webhook-signature` against the endpoint's secret, sleeps
//!    50 ms, then answers 204.
//! 2. **Pipeline**: `ledger-workers relay` and `ledger-workers webhooks`
//!    under an `AMQP_PREFIX` of their own, the webhooks worker with
//!    `WEBHOOK_PER_ENDPOINT` and `WEBHOOK_CONCURRENCY` at [`IN_FLIGHT`] (the
//!    worker has no cap above them) and `WEBHOOK_ALLOW_PRIVATE` (the
//!    receiver is on 127.0.0.1); every other setting is the worker's
//!    default, or what the environment sets (the workers inherit it). The
//!    relay first publishes whatever the outbox still holds; the prefix's
//!    webhooks queue is purged of it before the endpoint is registered
//!    (`POST /v1/webhook_endpoints`, every event type), so that only the
//!    events of this step are delivered.
//! 3. **Load**: new wallet charges (one `charge.succeeded` each) from as many
//!    clients as the largest configured concurrency, through a window of
//!    [`IN_FLIGHT`] permits: a client takes one before it sends a charge,
//!    and the receiver gives one back at the first receipt of an event (a
//!    charge that was not created gives its own back). So [`IN_FLIGHT`]
//!    charges are being committed, or committed and not yet received: a
//!    closed loop over the whole pipeline, as the HTTP workloads are over a
//!    request. How many of them are at the receiver at once is measured
//!    (sampled every 10 ms in the measured window, and its peak), not set.
//! 4. **Figures**, after the configured warm-up, over the configured
//!    duration: deliveries per second (first receipts in the window), and
//!    the lag of every event whose charge was sent and answered in it, once
//!    all are received. PostgreSQL here does not record commit times
//!    (`track_commit_timestamp` is off by default), so the lag is taken from
//!    the outbox row's `created_at` (`now()`: the start of the charge's
//!    transaction, for a batched charge the batch's, earlier than its
//!    commit by the transaction's time: the lag looks longer by that much),
//!    and also from the moment the charge's 201 came back to the bench
//!    (after the commit: shorter by the answer's way back). The database and
//!    the bench read the same clock. The lag is also split in three parts
//!    at the timestamps the pipeline writes ([`STAGES`]), so that the part
//!    that queues shows; and the CPU the API, PostgreSQL, both workers and
//!    the bench spent in the window is divided by the deliveries.
//! 5. **Burst**: then every delivery of the endpoint is made due again at
//!    once (one `UPDATE`, as `POST /v1/events/{id}/redeliver` resets each),
//!    so that every scan finds more than it may lease: the delivery loop
//!    alone at [`IN_FLIGHT`], without the fan-out in front of it. Its rate
//!    runs from that statement to the last arrival; the receiver's in
//!    flight is sampled as above.
//!
//! Checked afterwards: every event of the step received, every signature
//! good, every delivery of the endpoint delivered, the prefix's webhooks
//! queue and dead-letter queue empty. Duplicates and failed attempts are
//! counted and shown (delivery is at least once; a duplicate means a lease
//! ran out or an attempt went unrecorded, a failed attempt a timeout).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hdrhistogram::Histogram;
use lapin::options::QueuePurgeOptions;
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use workers::topology::Names;

use crate::error::{Error, Result};
use crate::load::{new_charge_by, new_hist, round, spread, Accounts, Args, Figures, Http, Wrong};
use crate::messaging::{count, poll_until, queue_counts, Cleanup, Env, Worker};

/// The workload's row in the table.
pub(crate) const NAME: &str = "webhooks (500 in flight)";
/// Deliveries allowed in flight to the one endpoint (`WEBHOOK_PER_ENDPOINT`,
/// and `WEBHOOK_CONCURRENCY`, which bounds a scan), and charges kept between
/// their request and their event's receipt.
pub(crate) const IN_FLIGHT: usize = 500;
/// How long the receiver takes to answer.
const RECEIVER_DELAY: Duration = Duration::from_millis(50);
/// What the step's orders are called (no other workload's start so).
const ORDERS: &str = "wh-";
const SAMPLE: Duration = Duration::from_millis(10);
const POLL: Duration = Duration::from_millis(25);

fn epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The storefront's side: what arrived, and when.
struct Receiver {
    /// The endpoint's secret, once registered.
    secret: OnceLock<String>,
    /// Each `webhook-id`'s first arrival, in seconds since the epoch.
    first: Mutex<HashMap<String, f64>>,
    /// Every arrival, duplicates too (the burst's are all duplicates).
    arrivals: Mutex<Vec<f64>>,
    duplicates: AtomicU64,
    bad_signatures: AtomicU64,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// The load's window: a permit back per event received.
    window: Arc<Semaphore>,
}

impl Receiver {
    /// Whether the Standard Webhooks signature is one of the secret's.
    fn signed(&self, req: &HttpRequest, id: &str, body: &[u8]) -> bool {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let (Some(secret), Some(timestamp), Some(signatures)) =
            (self.secret.get(), header("webhook-timestamp"), header("webhook-signature"))
        else {
            return false;
        };
        let Ok(timestamp) = timestamp.parse::<i64>() else { return false };
        match service::signing::sign(secret, id, timestamp, body) {
            Ok(expected) => signatures.split(' ').any(|s| s == expected),
            Err(_) => false,
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, r: web::Data<Receiver>) -> HttpResponse {
    let at = epoch();
    let now = r.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    r.peak.fetch_max(now, Ordering::Relaxed);
    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if !r.signed(&req, &id, &body) {
        r.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    r.arrivals.lock().expect("arrivals").push(at);
    let new = {
        let mut first = r.first.lock().expect("receipts");
        let new = !first.contains_key(&id);
        first.entry(id).or_insert(at);
        new
    };
    if new {
        r.window.add_permits(1);
    } else {
        r.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    actix_web::rt::time::sleep(RECEIVER_DELAY).await;
    r.in_flight.fetch_sub(1, Ordering::Relaxed);
    HttpResponse::NoContent().finish()
}

/// Mean and largest of what was sampled.
#[derive(Default, Clone, Copy)]
struct Level {
    sum: u64,
    n: u64,
    max: u64,
}

impl Level {
    fn add(&mut self, v: u64) {
        self.sum += v;
        self.n += 1;
        self.max = self.max.max(v);
    }
    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }
}

pub(crate) struct Report {
    clients: usize,
    /// First receipts in the measured window.
    deliveries: u64,
    secs: f64,
    /// The lag of the events whose charge was sent and answered in the
    /// window: from the outbox row's `created_at`, and from the charge's 201.
    from_created: Histogram<u64>,
    from_answer: Histogram<u64>,
    /// The same lag in its three parts (`STAGES`).
    stages: [Histogram<u64>; 3],
    /// The charges sent and answered in the window (their rate and
    /// latency, the window's waits left out).
    charges: Figures,
    /// The CPU spent in the window by the API and PostgreSQL, and by the
    /// relay, the webhooks worker and the bench (milliseconds).
    cpu: Option<crate::cpu::Cpu>,
    cpu_others: [f64; 3],
    /// At the receiver at once: sampled in the measured window, and the
    /// true peak over the window.
    at_receiver: Level,
    receiver_peak: usize,
    /// Charges being committed, or committed and not yet received.
    outstanding: Level,
    attempts: i64,
    failed_attempts: i64,
    attempt_mean_ms: f64,
    duplicates: u64,
    /// The delivery loop alone, every delivery due at once.
    burst: Burst,
    /// What the worker ran with.
    settings: Vec<(&'static str, String)>,
    /// Peak RSS of the relay and the webhooks worker, KiB.
    rss_kib: [u64; 2],
    checks: Vec<(&'static str, i64)>,
    step_secs: f64,
    pub(crate) created: u64,
    pub(crate) wrong: Wrong,
}

/// The parts of the lag, each from the end of the one before: the outbox
/// row's `created_at` to its `published_at` (`now()` of the relay's claiming
/// transaction), to the delivery row's `created_at` (the fan-out's
/// transaction: publishing, the broker, the queue's wait), to the receipt
/// (the fan-out's commit, the wait for a scan, the claim, the POST).
const STAGES: [&str; 3] = ["outbox → relay's claim", "→ delivery row made", "→ received"];

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn lag_json(h: &Histogram<u64>) -> Value {
    json!({"events": h.len(), "p50_ms": round(ms(h, 0.5)), "p90_ms": round(ms(h, 0.9)), "p99_ms": round(ms(h, 0.99)),
           "max_ms": round(h.max() as f64 / 1000.0)})
}

impl Report {
    /// The row of the table: deliveries per second, the lag from
    /// `created_at` as its latencies, the charge clients as its concurrency
    /// (the yardstick it is divided by is the one at that concurrency).
    pub(crate) fn figures(&self) -> Figures {
        Figures {
            workload: NAME.to_owned(),
            concurrency: self.clients,
            requests: self.deliveries,
            secs: self.secs,
            hist: self.from_created.clone(),
            cpu: self.cpu,
        }
    }

    /// CPU milliseconds per delivery: API, PostgreSQL, relay, webhooks
    /// worker, the bench.
    fn cpu_per_delivery(&self) -> Option<[f64; 5]> {
        let (cpu, n) = (self.cpu?, self.deliveries.max(1) as f64);
        let [relay, webhooks, bench] = self.cpu_others;
        Some([cpu.api_ms, cpu.postgres_ms, relay, webhooks, bench].map(|ms| ms / n))
    }

    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.secs
    }

    pub(crate) fn wrong_total(&self) -> i64 {
        self.checks.iter().map(|(_, n)| n).sum()
    }

    /// Under the table, beside the messaging figures.
    pub(crate) fn print(&self, over_yardstick: Option<f64>) {
        let yard =
            over_yardstick.map_or_else(String::new, |y| format!(" ({y:.3} of the yardstick at {})", self.clients));
        println!(
            "webhooks: {:.0} deliveries/s{yard} to one endpoint answering in {} ms, up to {IN_FLIGHT} in flight, {} charge clients",
            self.rate(),
            RECEIVER_DELAY.as_millis(),
            self.clients
        );
        let (c, a) = (&self.from_created, &self.from_answer);
        println!(
            "webhook lag over {} events, event's created_at (its transaction's start) → receipt: p50 {:.1} ms, p99 {:.1} ms (max {:.1}); \
             charge's 201 → receipt: p50 {:.1} ms, p99 {:.1} ms",
            c.len(),
            ms(c, 0.5),
            ms(c, 0.99),
            c.max() as f64 / 1000.0,
            ms(a, 0.5),
            ms(a, 0.99)
        );
        let parts: Vec<String> = STAGES
            .iter()
            .zip(&self.stages)
            .map(|(what, h)| format!("{what} p50 {:.1} p99 {:.1}", ms(h, 0.5), ms(h, 0.99)))
            .collect();
        println!("webhook lag by part (ms): {}", parts.join("; "));
        let c = &self.charges;
        println!(
            "charges meanwhile (through the window): {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
            c.rps(),
            c.ms(0.5),
            c.ms(0.99)
        );
        if let Some([api, pg, relay, webhooks, bench]) = self.cpu_per_delivery() {
            println!(
                "CPU per delivery (ms): API {api:.3}, PostgreSQL {pg:.3}, relay {relay:.3}, webhooks worker {webhooks:.3}, \
                 bench (receiver and charge clients) {bench:.3}"
            );
        }
        println!(
            "webhooks in flight at the receiver: mean {:.1}, peak {} (of {IN_FLIGHT}); charges not yet received: mean {:.0}, max {}",
            self.at_receiver.mean(),
            self.receiver_peak,
            self.outstanding.mean(),
            self.outstanding.max
        );
        let b = &self.burst;
        println!(
            "webhook burst, {} deliveries due at once: {:.0} deliveries/s ({:.2} s), due → received p50 {:.1} ms, p99 {:.1} ms; \
             in flight at the receiver: mean {:.1}, peak {} (of {IN_FLIGHT})",
            b.deliveries,
            b.rate(),
            b.secs,
            ms(&b.lag, 0.5),
            ms(&b.lag, 0.99),
            b.at_receiver.mean(),
            b.at_receiver.max
        );
        println!(
            "webhook attempts (live): {} ({} failed, mean {:.1} ms); duplicates received (live): {}; worker: {}",
            self.attempts,
            self.failed_attempts,
            self.attempt_mean_ms,
            self.duplicates,
            self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
        let mib = |kib: u64| kib as f64 / 1024.0;
        let checks: Vec<String> = self.checks.iter().map(|(what, n)| format!("{what} {n}")).collect();
        println!(
            "webhooks peak RSS: relay {:.1} MiB, webhooks {:.1} MiB; wrong results: {} ({}); step {:.1} s in all",
            mib(self.rss_kib[0]),
            mib(self.rss_kib[1]),
            self.wrong_total(),
            checks.join(", "),
            self.step_secs
        );
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "workload": NAME,
            "in_flight_limit": IN_FLIGHT,
            "receiver_ms": RECEIVER_DELAY.as_millis() as u64,
            "charge_clients": self.clients,
            "deliveries": self.deliveries,
            "seconds": round(self.secs),
            "deliveries_per_s": round(self.rate()),
            "lag_from_created_at": lag_json(&self.from_created),
            "lag_from_charge_answer": lag_json(&self.from_answer),
            "lag_parts": STAGES.iter().zip(&self.stages).map(|(what, h)| {
                let mut j = lag_json(h);
                j["part"] = json!(what);
                j
            }).collect::<Vec<_>>(),
            "charges_meanwhile": self.charges.json(),
            "cpu_ms_per_delivery": self.cpu_per_delivery().map(|[api, pg, relay, webhooks, bench]| json!({
                "api": round3(api), "postgres": round3(pg), "relay": round3(relay), "webhooks_worker": round3(webhooks),
                "bench": round3(bench)})),
            "in_flight_at_receiver": {"mean": round(self.at_receiver.mean()), "peak": self.receiver_peak},
            "charges_not_yet_received": {"mean": round(self.outstanding.mean()), "max": self.outstanding.max},
            "attempts": {"total": self.attempts, "failed": self.failed_attempts, "mean_ms": round(self.attempt_mean_ms)},
            "duplicates_received": self.duplicates,
            "burst": {"deliveries": self.burst.deliveries, "seconds": round(self.burst.secs),
                "deliveries_per_s": round(self.burst.rate()), "due_to_received": lag_json(&self.burst.lag),
                "in_flight_at_receiver": {"mean": round(self.burst.at_receiver.mean()), "peak": self.burst.at_receiver.max}},
            "worker_settings": self.settings.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "workers_peak_rss_mib": {"relay": round(self.rss_kib[0] as f64 / 1024.0),
                "webhooks": round(self.rss_kib[1] as f64 / 1024.0)},
            "wrong_results": self.checks.iter().map(|(what, n)| (what.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "wrong_total": self.wrong_total(),
            "step_seconds": round(self.step_secs),
        })
    }
}

/// The whole step: receiver, workers, load, drain, checks; `clients`
/// charge clients.
pub(crate) async fn run(
    args: &Args,
    db_url: &str,
    http: Rc<Http>,
    accounts: Rc<Accounts>,
    clients: usize,
) -> Result<Report> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let env = Env {
        bin: args.workers_bin.clone(),
        db_url: db_url.to_owned(),
        amqp_url: args.amqp_url.clone(),
        prefix: format!("bench-{id}-webhooks"),
        // the workers are given one; none of these writes there
        email_dir: std::env::temp_dir().join(format!("ledger-bench-webhooks-{id}")),
    };
    let names = Names::new(&env.prefix);
    let _cleanup =
        Cleanup { amqp_url: env.amqp_url.clone(), names: vec![names.clone()], email_dir: env.email_dir.clone() };
    let t0 = Instant::now();
    let mut report = measure(args, &env, &names, http, accounts, clients).await?;
    report.step_secs = t0.elapsed().as_secs_f64();
    Ok(report)
}

async fn measure(
    args: &Args,
    env: &Env,
    names: &Names,
    http: Rc<Http>,
    accounts: Rc<Accounts>,
    clients: usize,
) -> Result<Report> {
    let (db, conn) = tokio_postgres::connect(&env.db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    let amqp = Connection::connect(&env.amqp_url, ConnectionProperties::default()).await?;
    let mut checks: Vec<(&'static str, i64)> = Vec::new();

    // 1. The receiver.
    let window = Arc::new(Semaphore::new(IN_FLIGHT));
    let receiver = web::Data::new(Receiver {
        secret: OnceLock::new(),
        first: Mutex::new(HashMap::new()),
        arrivals: Mutex::new(Vec::new()),
        duplicates: AtomicU64::new(0),
        bad_signatures: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        window: window.clone(),
    });
    let server = HttpServer::new({
        let receiver = receiver.clone();
        move || App::new().app_data(receiver.clone()).default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    // longer than the worker's HTTP client keeps an idle connection (90 s),
    // so the client never reuses one the receiver is closing
    .keep_alive(Duration::from_secs(120))
    .backlog(4096)
    .bind(("127.0.0.1", 0))?;
    let port = server.addrs().first().map(|a| a.port()).ok_or(Error::NotUp("the webhook receiver"))?;
    let server = server.run();
    let server_handle = server.handle();
    actix_web::rt::spawn(server);

    // 2. The relay on whatever the outbox still holds; those events go to no endpoint.
    let mut relay = Worker::start(env, "relay")?;
    // Its queues exist once it has connected: only then does an empty
    // outbox mean that everything went to them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while queue_counts(&amqp, &names.webhooks).await.is_err() {
        relay.check_alive()?;
        if Instant::now() > deadline {
            return Err(Error::NotUp("the relay"));
        }
        actix_web::rt::time::sleep(POLL).await;
    }
    poll_until(
        &db,
        (
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL) THEN 0 ELSE 1 END::bigint, \
                    extract(epoch FROM clock_timestamp())::float8",
            POLL,
        ),
        1,
        &mut [&mut relay],
        Duration::from_secs(300),
        "relay before the webhooks",
    )
    .await?;
    let ch = amqp.create_channel().await?;
    ch.queue_purge(names.webhooks.as_str().into(), QueuePurgeOptions::default()).await?;
    let _ = ch.close(200, "".into()).await;

    let url = format!("http://127.0.0.1:{port}/webhooks");
    let body = json!({"url": url, "enabled_events": ["*"], "description": "ledger-bench receiver"});
    let (status, _, answer) =
        http.post("/v1/webhook_endpoints", &format!("endpoint:{port}"), body.to_string().into_bytes()).await?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    let (Some(endpoint), Some(secret), 201) = (answer["id"].as_str(), answer["secret"].as_str(), status) else {
        return Err(Error::Http(format!("POST /v1/webhook_endpoints: {status} {answer}")));
    };
    let endpoint: uuid::Uuid = endpoint.parse().map_err(|_| Error::Http(format!("endpoint id {endpoint}")))?;
    let _ = receiver.secret.set(secret.to_owned());

    let mut config = workers::config::Config::local(&env.db_url, &env.prefix);
    config.webhook_concurrency = IN_FLIGHT;
    config.webhook_per_endpoint = IN_FLIGHT;
    let settings: Vec<(&'static str, String)> = vec![
        ("WEBHOOK_PER_ENDPOINT", config.webhook_per_endpoint.to_string()),
        ("WEBHOOK_CONCURRENCY", config.webhook_concurrency.to_string()),
        ("WEBHOOK_POLL_MS", config.webhook_poll_ms.to_string()),
        ("WEBHOOK_TIMEOUT_MS", config.webhook_timeout_ms.to_string()),
        ("DB_POOL_SIZE", config.database.db_pool_size.unwrap_or(workers::config::DEFAULT_POOL_SIZE).to_string()),
        ("AMQP_PREFETCH", config.prefetch.to_string()),
    ];
    let mut webhooks = Worker::start_with(
        env,
        "webhooks",
        &[
            ("WEBHOOK_PER_ENDPOINT", IN_FLIGHT.to_string()),
            ("WEBHOOK_CONCURRENCY", IN_FLIGHT.to_string()),
            ("WEBHOOK_ALLOW_PRIVATE", "true".into()),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while queue_counts(&amqp, &names.webhooks).await?.1 == 0 {
        webhooks.check_alive()?;
        relay.check_alive()?;
        if Instant::now() > deadline {
            return Err(Error::NotUp("the webhooks worker"));
        }
        actix_web::rt::time::sleep(POLL).await;
    }

    // 3. The load, through the window.
    eprintln!("{NAME}: {clients} charge clients, receiver {} ms", RECEIVER_DELAY.as_millis());
    let start = Instant::now();
    let start_epoch = epoch();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let (from_epoch, end_epoch) =
        (start_epoch + args.warmup as f64, start_epoch + (args.warmup + args.duration) as f64);
    let stop = Rc::new(std::cell::Cell::new(false));
    // At the end the window closes: clients waiting for a permit stop.
    let closer = actix_web::rt::spawn({
        let (stop, window) = (stop.clone(), window.clone());
        async move {
            actix_web::rt::time::sleep(end.saturating_duration_since(Instant::now())).await;
            stop.set(true);
            window.close();
        }
    });
    // The processes whose CPU the window reads besides the API's and
    // PostgreSQL's (`cpu`): the two workers, and the bench itself (the
    // receiver and the charge clients).
    let pids = [relay.pid(), webhooks.pid(), Some(std::process::id())];
    let sampler = actix_web::rt::spawn({
        let (receiver, window) = (receiver.clone(), window.clone());
        async move {
            actix_web::rt::time::sleep(measure_from.saturating_duration_since(Instant::now())).await;
            receiver.peak.store(receiver.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
            let read = || (crate::cpu::read(), pids.map(|p| p.and_then(crate::cpu::process_ms).unwrap_or(0.0)));
            let before = read();
            let (mut at_receiver, mut outstanding) = (Level::default(), Level::default());
            while Instant::now() < end {
                at_receiver.add(receiver.in_flight.load(Ordering::Relaxed) as u64);
                outstanding.add(IN_FLIGHT.saturating_sub(window.available_permits()) as u64);
                actix_web::rt::time::sleep(SAMPLE).await;
            }
            let after = read();
            let cpu = before.0.zip(after.0).map(|(a, b)| crate::cpu::between(&a, &b));
            let others = [0, 1, 2].map(|i| after.1[i] - before.1[i]);
            (at_receiver, outstanding, receiver.peak.load(Ordering::Relaxed), cpu, others)
        }
    });
    let mut tasks = Vec::new();
    for task in 0..clients {
        let (http, accounts, window, stop) = (http.clone(), accounts.clone(), window.clone(), stop.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let mut created: Vec<(String, f64, bool)> = Vec::new();
            let mut wrong = Wrong::default();
            let (mut hist, mut measured) = (new_hist(), 0u64);
            let mut seq = 0u64;
            while !stop.get() {
                let Ok(permit) = window.acquire().await else { break };
                permit.forget();
                let t0 = Instant::now();
                let order = format!("{ORDERS}{task}-{seq}");
                let i = spread(task, seq);
                seq += 1;
                let (w, sent) = new_charge_by(&http, &accounts, order.clone(), i % accounts.buyers.len(), i).await;
                let t1 = Instant::now();
                wrong.add(&w);
                let timed = t0 >= measure_from && t1 <= end;
                if timed {
                    hist.record(t1.duration_since(t0).as_micros().max(1) as u64).expect("within the bounds");
                    measured += 1;
                }
                if sent.is_some_and(|s| s.status == 201) {
                    created.push((order, epoch(), timed));
                } else {
                    // no event will come for it
                    window.add_permits(1);
                }
            }
            (created, wrong, hist, measured)
        }));
    }
    let mut created: HashMap<String, (f64, bool)> = HashMap::new();
    let mut wrong = Wrong::default();
    let (mut charge_hist, mut charges) = (new_hist(), 0u64);
    for t in tasks {
        let (c, w, h, m) = t.await.map_err(|_| Error::Panicked)?;
        created.extend(c.into_iter().map(|(order, at, measured)| (order, (at, measured))));
        wrong.add(&w);
        // same bounds: adding cannot fail
        charge_hist.add(h).expect("histograms of the same bounds");
        charges += m;
    }
    let _ = closer.await;
    let (at_receiver, outstanding, receiver_peak, cpu, cpu_others) = sampler.await.map_err(|_| Error::Panicked)?;
    let charges = Figures {
        workload: "charges meanwhile".into(),
        concurrency: clients,
        requests: charges,
        secs: args.duration as f64,
        hist: charge_hist,
        cpu: None,
    };

    // Drained: every created charge's event received.
    let n = created.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let received = receiver.first.lock().expect("receipts").len();
        if received >= n {
            break;
        }
        webhooks.check_alive()?;
        relay.check_alive()?;
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: "webhook deliveries".into(),
                reached: received as i64,
                target: n as i64,
                secs: 120,
            });
        }
        actix_web::rt::time::sleep(POLL).await;
    }
    // The attempts of the last deliveries are recorded after their answers.
    let delivered = format!(
        "SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL), extract(epoch FROM clock_timestamp())::float8 \
           FROM webhook_deliveries WHERE endpoint_id = '{endpoint}'"
    );
    let made = count(&db, &format!("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{endpoint}'")).await?;
    let recorded = poll_until(
        &db,
        (&delivered, POLL),
        made,
        &mut [&mut webhooks, &mut relay],
        Duration::from_secs(60),
        "webhook deliveries recorded",
    )
    .await;
    // one left undelivered is counted below; anything else ends the run
    if let Err(e) = recorded {
        if !matches!(e, Error::Timeout { .. }) {
            return Err(e);
        }
    }
    let undelivered =
        format!("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{endpoint}' AND delivered_at IS NULL");
    checks.push(("deliveries not delivered", count(&db, &undelivered).await?));

    // 4. The figures.
    let rows = db
        .query(
            "SELECT o.message_id::text, o.order_id, extract(epoch FROM o.created_at)::float8, \
                    extract(epoch FROM o.published_at)::float8, extract(epoch FROM d.created_at)::float8 \
               FROM outbox o LEFT JOIN webhook_deliveries d ON d.message_id = o.message_id AND d.endpoint_id = $2 \
              WHERE o.order_id LIKE $1 AND o.event_type = 'charge.succeeded'",
            &[&format!("{ORDERS}%"), &endpoint],
        )
        .await?;
    let first = receiver.first.lock().expect("receipts").clone();
    let (mut from_created, mut from_answer) = (new_hist(), new_hist());
    let mut stages = [new_hist(), new_hist(), new_hist()];
    let mut missing = 0i64;
    let micros = |secs: f64| (secs * 1e6).round().max(1.0) as u64;
    for r in &rows {
        let (message_id, order, created_at): (String, String, f64) = (r.get(0), r.get(1), r.get(2));
        let (published_at, made_at): (Option<f64>, Option<f64>) = (r.get(3), r.get(4));
        let Some(&received) = first.get(&message_id) else {
            missing += 1;
            continue;
        };
        if let Some(&(answered, true)) = created.get(&order) {
            from_created.record(micros(received - created_at))?;
            from_answer.record(micros(received - answered))?;
            if let (Some(published_at), Some(made_at)) = (published_at, made_at) {
                for (h, (from, to)) in
                    stages.iter_mut().zip([(created_at, published_at), (published_at, made_at), (made_at, received)])
                {
                    h.record(micros(to - from))?;
                }
            }
        }
    }
    checks.push(("events not received", missing));
    checks.push(("charges without one event", (n as i64 - rows.len() as i64).abs()));
    checks.push(("bad signatures", receiver.bad_signatures.load(Ordering::Relaxed) as i64));
    let in_window = first.values().filter(|&&at| at >= from_epoch && at < end_epoch).count() as u64;

    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299), \
                    coalesce(avg(latency_ms), 0)::float8 \
               FROM webhook_attempts WHERE endpoint_id = $1",
            &[&endpoint],
        )
        .await?;
    let (attempts, failed_attempts, attempt_mean_ms): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
    for (what, q) in
        [("messages left in the webhooks queue", &names.webhooks), ("dead-lettered", &names.dead_letter_queue)]
    {
        checks.push((what, queue_counts(&amqp, q).await?.0 as i64));
    }
    let duplicates = receiver.duplicates.load(Ordering::Relaxed);
    let burst = burst(&db, &receiver, endpoint, made, &mut [&mut webhooks, &mut relay]).await?;
    checks.push(("burst deliveries not received", burst.missing));
    checks.push(("burst deliveries not delivered", burst.undelivered));
    let rss_kib = [relay.stop(), webhooks.stop()];
    server_handle.stop(false).await;
    let _ = amqp.close(200, "".into()).await;

    let report = Report {
        clients,
        deliveries: in_window,
        secs: args.duration as f64,
        from_created,
        from_answer,
        stages,
        charges,
        cpu,
        cpu_others,
        at_receiver,
        receiver_peak,
        outstanding,
        attempts,
        failed_attempts,
        attempt_mean_ms,
        duplicates,
        burst,
        settings,
        rss_kib,
        checks,
        step_secs: 0.0,
        created: n as u64,
        wrong,
    };
    eprintln!("  {}", report.figures().row());
    Ok(report)
}

/// The delivery loop alone at [`IN_FLIGHT`]: every delivery of the step made
/// due again at once (what `POST /v1/events/{id}/redeliver` does to each of
/// them, in one statement), so each scan finds more than it may lease.
struct Burst {
    deliveries: u64,
    /// From the statement's commit to the last arrival.
    secs: f64,
    /// From the statement's commit to each arrival.
    lag: Histogram<u64>,
    /// At the receiver at once, every 10 ms, and the largest seen.
    at_receiver: Level,
    /// Deliveries that did not arrive, or were not recorded delivered.
    missing: i64,
    undelivered: i64,
}

impl Burst {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.deliveries as f64 / self.secs
        } else {
            0.0
        }
    }
}

async fn burst(
    db: &tokio_postgres::Client,
    receiver: &Receiver,
    endpoint: uuid::Uuid,
    made: i64,
    workers: &mut [&mut Worker],
) -> Result<Burst> {
    eprintln!("{NAME}: burst of {made} deliveries due at once");
    let seen = receiver.arrivals.lock().expect("arrivals").len();
    db.execute(
        "UPDATE webhook_deliveries SET delivered_at = NULL, failed_at = NULL, attempts = 0, next_attempt_at = now() \
          WHERE endpoint_id = $1",
        &[&endpoint],
    )
    .await?;
    let due = epoch();
    receiver.peak.store(receiver.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut at_receiver = Level::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let arrived = || receiver.arrivals.lock().expect("arrivals").len() - seen;
    while (arrived() as i64) < made && Instant::now() < deadline {
        at_receiver.add(receiver.in_flight.load(Ordering::Relaxed) as u64);
        for w in workers.iter_mut() {
            w.check_alive()?;
        }
        actix_web::rt::time::sleep(SAMPLE).await;
    }
    at_receiver.max = at_receiver.max.max(receiver.peak.load(Ordering::Relaxed) as u64);
    let arrivals: Vec<f64> = receiver.arrivals.lock().expect("arrivals")[seen..].to_vec();
    let mut lag = new_hist();
    for at in &arrivals {
        lag.record(((at - due) * 1e6).round().max(1.0) as u64)?;
    }
    let last = arrivals.iter().copied().fold(due, f64::max);
    // the last attempts are recorded after their answers
    let delivered = format!(
        "SELECT count(*) FILTER (WHERE delivered_at IS NOT NULL), extract(epoch FROM clock_timestamp())::float8 \
           FROM webhook_deliveries WHERE endpoint_id = '{endpoint}'"
    );
    if let Err(e) = poll_until(db, (&delivered, POLL), made, workers, Duration::from_secs(30), "burst recorded").await {
        if !matches!(e, Error::Timeout { .. }) {
            return Err(e);
        }
    }
    let undelivered =
        format!("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = '{endpoint}' AND delivered_at IS NULL");
    Ok(Burst {
        deliveries: arrivals.len() as u64,
        secs: last - due,
        lag,
        at_receiver,
        missing: (made - arrivals.len() as i64).max(0),
        undelivered: count(db, &undelivered).await?,
    })
}
