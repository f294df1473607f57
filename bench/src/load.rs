//! The load generator and what every workload shares: the flags, the API and
//! the fake provider started on free ports, the HTTP client, the accounts
//! set up for the charges, the requests of a charge and of a purchase, the
//! closed loop that sends them and the figures and wrong answers it records.

use std::cell::Cell;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::error::{Error, Result};

#[derive(Parser, Debug, Clone)]
#[command(about = "Throughput and latency of the ledger API, beside pgbench running the same SQL")]
pub(crate) struct Args {
    /// Measured seconds per workload and concurrency.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 10)]
    pub(crate) duration: u64,
    /// Warm-up seconds before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 2)]
    pub(crate) warmup: u64,
    /// Requests in flight, one run per value.
    #[arg(long, env = "BENCH_CONCURRENCY", value_delimiter = ',', default_value = "16,64,128")]
    pub(crate) concurrency: Vec<usize>,
    /// PostgreSQL server (the benchmark creates and drops its own database there).
    #[arg(long, env = "PGHOST_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    pub(crate) pg: String,
    /// The API binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/ledger-api")]
    pub(crate) api_bin: String,
    /// The fake payment provider the card charges go to (started on a free
    /// port with a state folder of its own).
    #[arg(long, default_value = "target/release/fake-provider")]
    pub(crate) fake_provider_bin: String,
    /// Buyer accounts the charges spread over.
    #[arg(long, default_value_t = 512)]
    pub(crate) buyers: usize,
    /// Seller accounts the charges spread over.
    #[arg(long, default_value_t = 64)]
    pub(crate) sellers: usize,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results/latest.json")]
    pub(crate) out: String,
    /// Skip the pgbench ceiling.
    #[arg(long)]
    pub(crate) no_pgbench: bool,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    pub(crate) keep_db: bool,
    /// The workers binary (relay, inventory and email consumers).
    #[arg(long, default_value = "target/release/ledger-workers")]
    pub(crate) workers_bin: String,
    /// RabbitMQ for the messaging figures (the benchmark's exchanges and queues carry a prefix of their own).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10")]
    pub(crate) amqp_url: String,
    /// Skip the messaging figures (relay, workers, end-to-end lag) and the
    /// webhook figures: everything that needs the broker.
    #[arg(long)]
    pub(crate) no_messaging: bool,
    /// Skip the webhook figures only (deliveries to a receiver in the bench
    /// process, lag from an event's commit to its receipt).
    #[arg(long)]
    pub(crate) no_webhooks: bool,
    /// Ledger entries seeded for the growth figure (new charges before and
    /// after); 0 skips it.
    #[arg(long, env = "BENCH_GROWTH_ENTRIES", default_value_t = 10_000_000)]
    pub(crate) growth_entries: u64,
    /// Only the HTTP workloads whose name starts with one of these (`new
    /// charge` is the baseline of the fairness workloads: keep it); every
    /// workload when empty. For looking into one figure, not for the record.
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    pub(crate) only: Vec<String>,
}

/// One request the generator sent, kept for the replay workload.
#[derive(Clone)]
pub(crate) struct Sent {
    pub(crate) key: String,
    pub(crate) body: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) answer: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Wrong {
    pub(crate) non_2xx: u64,
    pub(crate) not_created: u64,
    pub(crate) not_replayed: u64,
    pub(crate) replay_differs: u64,
    pub(crate) transport: u64,
}

impl Wrong {
    pub(crate) fn total(&self) -> u64 {
        self.non_2xx + self.not_created + self.not_replayed + self.replay_differs + self.transport
    }
    pub(crate) fn add(&mut self, o: &Wrong) {
        self.non_2xx += o.non_2xx;
        self.not_created += o.not_created;
        self.not_replayed += o.not_replayed;
        self.replay_differs += o.replay_differs;
        self.transport += o.transport;
    }
    pub(crate) fn json(&self) -> Value {
        json!({"non_2xx": self.non_2xx, "new_not_created": self.not_created, "replay_not_replayed": self.not_replayed,
               "replay_body_differs": self.replay_differs, "transport_errors": self.transport, "total": self.total()})
    }
}

pub(crate) struct Figures {
    pub(crate) workload: String,
    pub(crate) concurrency: usize,
    pub(crate) requests: u64,
    pub(crate) secs: f64,
    pub(crate) hist: Histogram<u64>,
    /// The CPU the API, PostgreSQL and the provider spent in the measured
    /// window (`cpu`), when it was read.
    pub(crate) cpu: Option<crate::cpu::Cpu>,
}

impl Figures {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    /// The latency at quantile `q`, in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    pub(crate) fn json(&self) -> Value {
        json!({"workload": self.workload, "concurrency": self.concurrency, "requests": self.requests,
               "seconds": round(self.secs), "rps": round(self.rps()),
               "p50_ms": round(self.ms(0.5)), "p90_ms": round(self.ms(0.9)), "p99_ms": round(self.ms(0.99)),
               "max_ms": round(self.hist.max() as f64 / 1000.0),
               "cpu_ms_per_request": self.cpu.and_then(|c| c.per_request(self.requests))})
    }
    pub(crate) fn row(&self) -> String {
        format!(
            "{:<29} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            self.workload,
            self.concurrency,
            self.rps(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.hist.max() as f64 / 1000.0
        )
    }
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// Where it serves `/metrics` (METRICS_ADDR, a port of its own).
    pub(crate) metrics: String,
    pub(crate) key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM through kill(1): the API drains in-flight requests, a worker lets
/// its in-flight deliveries finish or go back to the queue; then it exits.
pub(crate) fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `ledger-api serve` on a free port with `env` added; returns once it answers.
pub(crate) async fn start_api(
    args: &Args,
    db_url: &str,
    provider_url: &str,
    key: &str,
    env: &[(&str, &str)],
) -> Result<Server> {
    let (port, metrics_port) = (free_port(), free_port());
    let child = Command::new(&args.api_bin)
        .arg("serve")
        .env("GATEWAY_URL", provider_url)
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "warn")
        // one tenant drives the whole machine here: the per-tenant limit
        // would measure itself, not the service
        .env("RATE_LIMIT_PER_SEC", "0")
        .envs(env.iter().copied())
        .spawn()
        .map_err(|source| Error::Spawn { program: args.api_bin.clone(), source })?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        key: key.to_owned(),
    };
    let http = client();
    let up = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", server.base)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        if up.elapsed() > Duration::from_secs(30) {
            return Err(Error::NotUp("the API"));
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn api(args: &Args, db_url: &str, cmd: &[&str]) -> String {
    let out = Command::new(&args.api_bin)
        .args(cmd)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (build it with `cargo build --release`)", args.api_bin));
    assert!(out.status.success(), "ledger-api {cmd:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// VmHWM (peak resident set) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn client() -> awc::Client {
    // An idle pooled connection is let go after 4 s, before the API's
    // keep-alive (actix-web's 5 s) closes it: a connection the server has
    // closed, taken from the pool, fails its next request (the transport
    // errors a workload once met after the 512 clients of the card latency
    // workload left their connections idle).
    let connector = awc::Connector::new().limit(1024).conn_keep_alive(Duration::from_secs(4));
    awc::Client::builder().timeout(Duration::from_secs(60)).connector(connector).finish()
}

pub(crate) struct Http {
    pub(crate) client: awc::Client,
    pub(crate) base: String,
    pub(crate) auth: String,
}

impl Http {
    pub(crate) async fn post(&self, path: &str, key: &str, body: Vec<u8>) -> Result<(u16, bool, Vec<u8>)> {
        let (status, replayed, body) = self.send(path, key, body).await?;
        if !(200..300).contains(&status) {
            // The first few wrong answers are shown: a count alone does not say why.
            static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                eprintln!("  {path}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
        Ok((status, replayed, body))
    }

    /// A GET; its status. The first few wrong answers are shown.
    pub(crate) async fn get(&self, path: &str) -> Result<u16> {
        let mut res = self
            .client
            .get(format!("{}{}", self.base, path))
            .insert_header(("Authorization", self.auth.as_str()))
            .send()
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let body = res.body().limit(1 << 24).await.map_err(|e| Error::Http(e.to_string()))?;
        let status = res.status().as_u16();
        if status != 200 {
            static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                eprintln!("  {path}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
        Ok(status)
    }

    /// As [`Http::post`], showing nothing: for requests whose refusal is
    /// expected and counted by the caller.
    pub(crate) async fn send(&self, path: &str, key: &str, body: Vec<u8>) -> Result<(u16, bool, Vec<u8>)> {
        let mut res = self
            .client
            .post(format!("{}{}", self.base, path))
            .insert_header(("Authorization", self.auth.as_str()))
            .insert_header(("Idempotency-Key", key))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v.as_bytes() == b"true");
        let body = res.body().limit(1 << 20).await.map_err(|e| Error::Http(e.to_string()))?.to_vec();
        Ok((res.status().as_u16(), replayed, body))
    }

    async fn create(&self, path: &str, key: &str, body: Value) -> Value {
        let (status, _, answer) = self.post(path, key, body.to_string().into_bytes()).await.expect("setup request");
        assert!(
            StatusCode::from_u16(status).unwrap().is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).unwrap()
    }
}

pub(crate) struct Accounts {
    pub(crate) buyers: Vec<String>,
    pub(crate) sellers: Vec<String>,
    pub(crate) platform: String,
}

pub(crate) async fn setup(http: &Http, args: &Args) -> Accounts {
    let account = |reference: String, allow_negative: bool| async move {
        http.create(
            "/v1/accounts",
            &format!("acct:{reference}"),
            json!({"reference": reference, "currency": "USD", "allow_negative": allow_negative}),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let ext = account("external-funds".into(), true).await;
    let platform = account("platform-fees".into(), false).await;
    let mut sellers = Vec::new();
    for i in 0..args.sellers {
        sellers.push(account(format!("seller-{i}"), false).await);
    }
    let mut buyers = Vec::new();
    for i in 0..args.buyers {
        let id = account(format!("buyer-{i}"), false).await;
        http.create(
            "/v1/transfers",
            &format!("fund:{i}"),
            json!({"source_account_id": ext, "destination_account_id": id, "amount": "10000000.00", "currency": "USD"}),
        )
        .await;
        buyers.push(id);
    }
    for i in 0..SKUS {
        http.create(&format!("/v1/skus/sku-{i}/restocks"), &format!("restock:{i}"), json!({"quantity": 1_000_000}))
            .await;
    }
    Accounts { buyers, sellers, platform }
}

/// SKUs restocked for the reservation workloads; `sku-0` is the hot one.
const SKUS: usize = 256;

/// Every tenth reservation goes to the hot SKU, the rest spread over the others.
pub(crate) fn sku_for(i: usize) -> String {
    if i.is_multiple_of(10) {
        "sku-0".to_owned()
    } else {
        format!("sku-{}", 1 + i % (SKUS - 1))
    }
}

pub(crate) fn check_created(w: &mut Wrong, r: &Result<(u16, bool, Vec<u8>)>) -> bool {
    match r {
        Ok((status, _, _)) if !(200..300).contains(status) => w.non_2xx += 1,
        Ok((201, _, _)) => return true,
        Ok(_) => w.not_created += 1,
        Err(_) => w.transport += 1,
    }
    false
}

/// The body of the charge of `order`: a buyer and seller picked by `i`, the
/// one hot platform-fee account.
fn charge_body(acc: &Accounts, order: &str, i: usize) -> Vec<u8> {
    charge_body_by(acc, order, i % acc.buyers.len(), i)
}

/// As [`charge_body`], paid by the buyer `buyer` (an index into the buyers).
pub(crate) fn charge_body_by(acc: &Accounts, order: &str, buyer: usize, i: usize) -> Vec<u8> {
    json!({
        "order_id": order, "attempt": 1,
        "buyer_account_id": acc.buyers[buyer],
        "seller_account_id": acc.sellers[i % acc.sellers.len()],
        "amount": "1.00", "currency": "USD",
        "platform_fee": {"account_id": acc.platform, "amount": "0.10"},
        "receipt_email": "buyer@example.com",
    })
    .to_string()
    .into_bytes()
}

/// One new card charge: as [`new_charge`], paid by card through the fake
/// provider (a provider round trip between two transactions).
pub(crate) async fn new_card_charge(
    http: Rc<Http>,
    acc: Rc<Accounts>,
    order: String,
    task: usize,
    seq: u64,
) -> (Wrong, Option<Sent>) {
    let i = spread(task, seq);
    let body = json!({
        "order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
        "seller_account_id": acc.sellers[i % acc.sellers.len()],
        "amount": "1.00", "currency": "USD",
        "platform_fee": {"account_id": acc.platform, "amount": "0.10"},
        "receipt_email": "buyer@example.com",
    })
    .to_string()
    .into_bytes();
    create_charge(&http, format!("card:{order}"), body).await
}

/// The fake payment provider, killed when dropped.
pub(crate) fn start_provider(args: &Args) -> Result<gateway::launch::Process> {
    let dir = std::env::temp_dir().join(format!("ledger-bench-provider-{}", std::process::id()));
    Ok(gateway::launch::Process::start(std::path::Path::new(&args.fake_provider_bin), &dir, &[], "warn")?)
}

/// One new charge: a fresh key and order, a buyer and seller spread over
/// many, the one hot platform-fee account.
pub(crate) async fn new_charge(
    http: Rc<Http>,
    acc: Rc<Accounts>,
    order: String,
    task: usize,
    seq: u64,
) -> (Wrong, Option<Sent>) {
    let i = spread(task, seq);
    new_charge_by(&http, &acc, order, i % acc.buyers.len(), i).await
}

/// Which buyer and seller the `seq`th request of client `task` picks (as
/// `i` modulo their counts): consecutive requests land far apart.
pub(crate) fn spread(task: usize, seq: u64) -> usize {
    (task as u64 * 7919 + seq * 104_729) as usize
}

/// One new charge as [`new_charge`], paid by the buyer `buyer` (an index
/// into the buyers), the seller picked by `i`.
pub(crate) async fn new_charge_by(
    http: &Http,
    acc: &Accounts,
    order: String,
    buyer: usize,
    i: usize,
) -> (Wrong, Option<Sent>) {
    let body = charge_body_by(acc, &order, buyer, i);
    create_charge(http, format!("charge:{order}"), body).await
}

/// Posts a new charge under `key`; anything but a 201 is a wrong answer.
/// What was sent and answered is kept for the replay workload.
async fn create_charge(http: &Http, key: String, body: Vec<u8>) -> (Wrong, Option<Sent>) {
    let mut w = Wrong::default();
    match http.post("/v1/charges", &key, body.clone()).await {
        Ok((status, _, answer)) => {
            if !(200..300).contains(&status) {
                w.non_2xx += 1;
            } else if status != 201 {
                w.not_created += 1;
            }
            (w, Some(Sent { key, body, status, answer }))
        }
        Err(_) => {
            w.transport += 1;
            (w, None)
        }
    }
}

/// A purchase: reserve, then charge the same order. Returns the wrong
/// answers, whether the reservation was created and whether the charge was.
pub(crate) async fn purchase(http: &Http, acc: &Accounts, order: &str, i: usize) -> (Wrong, bool, bool) {
    let body = json!({"order_id": order, "sku": sku_for(i), "quantity": 1}).to_string().into_bytes();
    let mut w = Wrong::default();
    let r = http.post("/v1/reservations", &format!("hold:{order}"), body).await;
    if !check_created(&mut w, &r) {
        return (w, false, false);
    }
    let body = charge_body(acc, order, i);
    let r = http.post("/v1/charges", &format!("charge:{order}"), body).await;
    let charged = check_created(&mut w, &r);
    (w, true, charged)
}

/// An authorization then its capture, of a new order: the checkout's
/// `"capture": false` charge (201 `authorized`), then all of it captured
/// (200 `succeeded`). Returns the wrong answers and whether both happened.
pub(crate) async fn authorize_capture(http: &Http, acc: &Accounts, order: &str, i: usize) -> (Wrong, bool) {
    let mut body: Value = serde_json::from_slice(&charge_body(acc, order, i)).expect("a charge body is JSON");
    body["capture"] = json!(false);
    let mut w = Wrong::default();
    let r = http.post("/v1/charges", &format!("auth:{order}"), body.to_string().into_bytes()).await;
    if !check_created(&mut w, &r) {
        return (w, false);
    }
    let id = r.ok().and_then(|(_, _, answer)| serde_json::from_slice::<Value>(&answer).ok()).map(|a| a["id"].clone());
    let Some(Value::String(id)) = id else {
        w.not_created += 1;
        return (w, false);
    };
    let capture = json!({"reference": format!("{order}:ship")}).to_string().into_bytes();
    match http.post(&format!("/v1/charges/{id}/capture"), &format!("capture:{order}"), capture).await {
        Ok((200, _, _)) => (w, true),
        Ok(_) => {
            w.non_2xx += 1;
            (w, false)
        }
        Err(_) => {
            w.transport += 1;
            (w, false)
        }
    }
}

/// Closed loop: `concurrency` tasks, each sending its next request as soon as
/// the previous one answered. Latencies are recorded after the warm-up.
pub(crate) async fn closed_loop<F, Fut>(
    args: &Args,
    workload: &str,
    concurrency: usize,
    one: F,
) -> (Figures, Wrong, Vec<Sent>)
where
    F: Fn(usize, u64, bool) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = (Wrong, Option<Sent>)>,
{
    let every = move |task: usize, seq: u64, measured: bool| {
        let answer = one(task, seq, measured);
        async move {
            let (w, s) = answer.await;
            (w, s, true)
        }
    };
    closed_loop_timing(args, workload, concurrency, every).await
}

/// [`closed_loop`] where each request also says whether it counts in the
/// figures (its latency and the rate): a request refused before any work
/// (and answered in microseconds) would otherwise flatter them.
pub(crate) async fn closed_loop_timing<F, Fut>(
    args: &Args,
    workload: &str,
    concurrency: usize,
    one: F,
) -> (Figures, Wrong, Vec<Sent>)
where
    F: Fn(usize, u64, bool) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = (Wrong, Option<Sent>, bool)>,
{
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let stop = Rc::new(Cell::new(false));
    // the CPU spent in the measured window, read at its two ends
    let cpu = actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(measure_from.saturating_duration_since(Instant::now())).await;
        let first = crate::cpu::read();
        actix_web::rt::time::sleep(end.saturating_duration_since(Instant::now())).await;
        let last = crate::cpu::read();
        first.zip(last).map(|(a, b)| crate::cpu::between(&a, &b))
    });
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let one = one.clone();
        let stop = stop.clone();
        tasks.push(actix_web::rt::spawn(async move {
            let mut hist = new_hist();
            let mut wrong = Wrong::default();
            let mut sent = Vec::new();
            let mut n = 0u64;
            let mut seq = 0u64;
            while !stop.get() {
                let t0 = Instant::now();
                let measured = t0 >= measure_from;
                let (w, s, timed) = one(task, seq, measured).await;
                seq += 1;
                let t1 = Instant::now();
                if t1 >= end {
                    stop.set(true);
                }
                wrong.add(&w);
                if let Some(s) = s {
                    sent.push(s);
                }
                if timed && measured && t1 <= end {
                    hist.record(t1.duration_since(t0).as_micros().max(1) as u64).unwrap();
                    n += 1;
                }
            }
            (hist, wrong, sent, n)
        }));
    }
    let mut hist = new_hist();
    let mut wrong = Wrong::default();
    let mut sent = Vec::new();
    let mut requests = 0;
    for t in tasks {
        let (h, w, s, n) = t.await.unwrap();
        hist.add(h).unwrap();
        wrong.add(&w);
        sent.extend(s);
        requests += n;
    }
    let cpu = cpu.await.ok().flatten();
    let figures =
        Figures { workload: workload.to_owned(), concurrency, requests, secs: args.duration as f64, hist, cpu };
    (figures, wrong, sent)
}

pub(crate) fn git_revision() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
