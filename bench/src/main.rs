//! `make bench`: drives the release `ledger-api` over HTTP with a closed-loop
//! load generator (a fixed number of requests in flight), records HDR
//! histograms, counts wrong answers, and runs pgbench with the SQL of one
//! charge against the same database for the ceiling, and measures the
//! messaging pipeline (relay, consumers, end-to-end lag) with the workers
//! binary (see `messaging`).

mod batches;
mod chart;
mod error;
mod growth;
mod messaging;
mod pgbench;

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
struct Args {
    /// Measured seconds per workload and concurrency.
    #[arg(long, env = "BENCH_DURATION", default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 2)]
    warmup: u64,
    /// Requests in flight, one run per value.
    #[arg(long, env = "BENCH_CONCURRENCY", value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// PostgreSQL server (the benchmark creates and drops its own database there).
    #[arg(long, env = "PGHOST_URL", default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// The API binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/ledger-api")]
    api_bin: String,
    /// The fake payment provider the card charges go to (started on a free
    /// port with a state folder of its own).
    #[arg(long, default_value = "target/release/fake-provider")]
    fake_provider_bin: String,
    /// Buyer accounts the charges spread over.
    #[arg(long, default_value_t = 512)]
    buyers: usize,
    /// Seller accounts the charges spread over.
    #[arg(long, default_value_t = 64)]
    sellers: usize,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: String,
    /// Skip the pgbench ceiling.
    #[arg(long)]
    no_pgbench: bool,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep_db: bool,
    /// The workers binary (relay, inventory and email consumers).
    #[arg(long, default_value = "target/release/ledger-workers")]
    workers_bin: String,
    /// RabbitMQ for the messaging figures (the benchmark's exchanges and queues carry a prefix of their own).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10")]
    amqp_url: String,
    /// Skip the messaging figures (relay, workers, end-to-end lag).
    #[arg(long)]
    no_messaging: bool,
    /// Ledger entries seeded for the growth figure (new charges before and
    /// after); 0 skips it.
    #[arg(long, env = "BENCH_GROWTH_ENTRIES", default_value_t = 10_000_000)]
    growth_entries: u64,
}

/// One request the generator sent, kept for the replay workload.
#[derive(Clone)]
struct Sent {
    key: String,
    body: Vec<u8>,
    status: u16,
    answer: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
struct Wrong {
    non_2xx: u64,
    not_created: u64,
    not_replayed: u64,
    replay_differs: u64,
    transport: u64,
}

impl Wrong {
    fn total(&self) -> u64 {
        self.non_2xx + self.not_created + self.not_replayed + self.replay_differs + self.transport
    }
    fn add(&mut self, o: &Wrong) {
        self.non_2xx += o.non_2xx;
        self.not_created += o.not_created;
        self.not_replayed += o.not_replayed;
        self.replay_differs += o.replay_differs;
        self.transport += o.transport;
    }
    fn json(&self) -> Value {
        json!({"non_2xx": self.non_2xx, "new_not_created": self.not_created, "replay_not_replayed": self.not_replayed,
               "replay_body_differs": self.replay_differs, "transport_errors": self.transport, "total": self.total()})
    }
}

pub struct Figures {
    pub workload: String,
    pub concurrency: usize,
    pub requests: u64,
    pub secs: f64,
    pub hist: Histogram<u64>,
}

impl Figures {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    pub fn json(&self) -> Value {
        json!({"workload": self.workload, "concurrency": self.concurrency, "requests": self.requests,
               "seconds": round(self.secs), "rps": round(self.rps()),
               "p50_ms": round(self.ms(0.5)), "p90_ms": round(self.ms(0.9)), "p99_ms": round(self.ms(0.99)),
               "max_ms": round(self.hist.max() as f64 / 1000.0)})
    }
    fn row(&self) -> String {
        format!(
            "{:<22} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
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

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

struct Server {
    child: Child,
    base: String,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM through kill(1): the API drains in-flight requests, a worker lets
/// its in-flight deliveries finish or go back to the queue; then it exits.
fn terminate(child: &mut Child) {
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
async fn start_api(args: &Args, db_url: &str, provider_url: &str, key: &str, env: &[(&str, &str)]) -> Result<Server> {
    let port = free_port();
    let child = Command::new(&args.api_bin)
        .arg("serve")
        .env("GATEWAY_URL", provider_url)
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        // one tenant drives the whole machine here: the per-tenant limit
        // would measure itself, not the service
        .env("RATE_LIMIT_PER_SEC", "0")
        .envs(env.iter().copied())
        .spawn()
        .map_err(|source| Error::Spawn { program: args.api_bin.clone(), source })?;
    let server = Server { child, base: format!("http://127.0.0.1:{port}"), key: key.to_owned() };
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

fn api(args: &Args, db_url: &str, cmd: &[&str]) -> String {
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
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).connector(awc::Connector::new().limit(1024)).finish()
}

struct Http {
    client: awc::Client,
    base: String,
    auth: String,
}

impl Http {
    async fn post(&self, path: &str, key: &str, body: Vec<u8>) -> Result<(u16, bool, Vec<u8>)> {
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
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            // The first few wrong answers are shown: a count alone does not say why.
            static SHOWN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                eprintln!("  {path}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
        Ok((status, replayed, body))
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

struct Accounts {
    buyers: Vec<String>,
    sellers: Vec<String>,
    platform: String,
}

async fn setup(http: &Http, args: &Args) -> Accounts {
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
fn sku_for(i: usize) -> String {
    if i.is_multiple_of(10) {
        "sku-0".to_owned()
    } else {
        format!("sku-{}", 1 + i % (SKUS - 1))
    }
}

fn check_created(w: &mut Wrong, r: &Result<(u16, bool, Vec<u8>)>) -> bool {
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
    json!({
        "order_id": order, "attempt": 1,
        "buyer_account_id": acc.buyers[i % acc.buyers.len()],
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
async fn new_card_charge(
    http: Rc<Http>,
    acc: Rc<Accounts>,
    order: String,
    task: usize,
    seq: u64,
) -> (Wrong, Option<Sent>) {
    let i = (task as u64 * 7919 + seq * 104_729) as usize;
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
fn start_provider(args: &Args) -> Result<gateway::launch::Process> {
    let dir = std::env::temp_dir().join(format!("ledger-bench-provider-{}", std::process::id()));
    Ok(gateway::launch::Process::start(std::path::Path::new(&args.fake_provider_bin), &dir, &[], "warn")?)
}

/// One new charge: a fresh key and order, a buyer and seller spread over
/// many, the one hot platform-fee account.
async fn new_charge(http: Rc<Http>, acc: Rc<Accounts>, order: String, task: usize, seq: u64) -> (Wrong, Option<Sent>) {
    let i = (task as u64 * 7919 + seq * 104_729) as usize;
    let body = charge_body(&acc, &order, i);
    create_charge(&http, format!("charge:{order}"), body).await
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
async fn purchase(http: &Http, acc: &Accounts, order: &str, i: usize) -> (Wrong, bool, bool) {
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

/// Closed loop: `concurrency` tasks, each sending its next request as soon as
/// the previous one answered. Latencies are recorded after the warm-up.
async fn closed_loop<F, Fut>(args: &Args, workload: &str, concurrency: usize, one: F) -> (Figures, Wrong, Vec<Sent>)
where
    F: Fn(usize, u64, bool) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = (Wrong, Option<Sent>)>,
{
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let stop = Rc::new(Cell::new(false));
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
                let (w, s) = one(task, seq, measured).await;
                seq += 1;
                let t1 = Instant::now();
                if t1 >= end {
                    stop.set(true);
                }
                wrong.add(&w);
                if let Some(s) = s {
                    sent.push(s);
                }
                if measured && t1 <= end {
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
    let figures = Figures { workload: workload.to_owned(), concurrency, requests, secs: args.duration as f64, hist };
    (figures, wrong, sent)
}

fn git_revision() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let db = format!("ledger_bench_{}", uuid::Uuid::new_v4().simple());
    let admin_url = format!("{}/postgres", args.pg);
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.expect("PostgreSQL");
    actix_web::rt::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let db_url = format!("{}/{db}", args.pg);
    eprintln!("database {db}");

    // A panic in the run still drops the database below.
    let outcome = actix_web::rt::spawn({
        let (args, db_url) = (args.clone(), db_url.clone());
        async move { run(&args, &db_url).await }
    })
    .await
    .unwrap_or_else(|_| Err(Error::Panicked));

    if !args.keep_db {
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
    }
    std::process::exit(match outcome {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("FAILED: wrong answers (see above)");
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    });
}

async fn run(args: &Args, db_url: &str) -> Result<bool> {
    api(args, db_url, &["migrate"]);
    let key = api(args, db_url, &["create-tenant", "bench"]);
    let provider = start_provider(args)?;
    let server = start_api(args, db_url, provider.url(), &key, &[]).await?;
    // The same API with every charge alone (no group commit), side by side
    // with the batched one in the new-charge workload.
    let alone = start_api(args, db_url, provider.url(), &key, &[("CHARGE_BATCH_MAX", "1")]).await?;
    let http = Rc::new(Http { client: client(), base: server.base.clone(), auth: format!("Bearer {}", server.key) });
    let http_alone =
        Rc::new(Http { client: client(), base: alone.base.clone(), auth: format!("Bearer {}", alone.key) });
    eprintln!("setting up {} buyers, {} sellers, one platform-fee account", args.buyers, args.sellers);
    let accounts = Rc::new(setup(&http, args).await);

    let mut results: Vec<Figures> = Vec::new();
    let mut wrong_by: Vec<(String, usize, Wrong)> = Vec::new();
    let mut created_total = 0u64;
    let mut rss_peak = 0u64;
    let mut sample_answer = String::new();
    let mut reserved_total = 0u64;
    // (the batches of each new-charge workload, its rate over the same workload alone)
    let mut group_commit: Vec<(batches::Profile, f64)> = Vec::new();
    for &c in &args.concurrency {
        // 1. New charges: a fresh key and order per request, one hot platform-fee account.
        let (http2, acc) = (http.clone(), accounts.clone());
        let one = move |task: usize, seq: u64, _measured: bool| {
            new_charge(http2.clone(), acc.clone(), format!("o{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new charges, concurrency {c}");
        let scraped = batches::scrape(&http.client, &http.base).await?;
        let (f, w, sent) = closed_loop(args, "new charge", c, one).await;
        if sample_answer.is_empty() {
            if let Some(s) = sent.iter().find(|s| s.status == 201) {
                sample_answer = String::from_utf8_lossy(&s.answer).into_owned();
            }
        }
        created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        let profile = batches::Profile::between(c, &scraped, &batches::scrape(&http.client, &http.base).await?);
        eprintln!("  {}", profile.line());
        group_commit.push((profile, f.rps()));
        results.push(f);
        wrong_by.push(("new charge".into(), c, w));

        // 1b. The same, each charge alone in its transaction (CHARGE_BATCH_MAX=1).
        let (http2, acc) = (http_alone.clone(), accounts.clone());
        let one = move |task: usize, seq: u64, _measured: bool| {
            new_charge(http2.clone(), acc.clone(), format!("a{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new charges, each alone, concurrency {c}");
        let (f, w, sent_alone) = closed_loop(args, "new charge (alone)", c, one).await;
        created_total += sent_alone.iter().filter(|s| s.status == 201).count() as u64;
        eprintln!("  {}", f.row());
        if let Some((_, batched)) = group_commit.last_mut() {
            *batched /= f.rps();
        }
        results.push(f);
        wrong_by.push(("new charge (alone)".into(), c, w));

        // 2. Replays: the created charges again; every answer must be the
        // stored one. (A request that failed is not stored: its retry runs
        // afresh, and it was counted wrong already.)
        let sent: Vec<Sent> = sent.into_iter().filter(|s| s.status == 201).collect();
        if sent.is_empty() {
            return Err(Error::NothingToReplay);
        }
        let sent = Rc::new(sent);
        let next = Rc::new(Cell::new(0usize));
        let http2 = http.clone();
        let replay = move |_task: usize, _seq: u64, _measured: bool| {
            let (http, sent, next) = (http2.clone(), sent.clone(), next.clone());
            async move {
                let i = next.get();
                next.set((i + 1) % sent.len());
                let s = &sent[i];
                let mut w = Wrong::default();
                match http.post("/v1/charges", &s.key, s.body.clone()).await {
                    Ok((status, replayed, answer)) => {
                        if !(200..300).contains(&status) {
                            w.non_2xx += 1;
                        } else if !replayed {
                            w.not_replayed += 1;
                        } else if status != s.status || answer != s.answer {
                            w.replay_differs += 1;
                        }
                    }
                    Err(_) => w.transport += 1,
                }
                (w, None)
            }
        };
        eprintln!("replays, concurrency {c}");
        let (f, w, _) = closed_loop(args, "replay", c, replay).await;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("replay".into(), c, w));

        // 2b. Card charges through the fake provider: a figure beside the
        // wallet's (the provider's round trip and two transactions).
        let (http2, acc) = (http.clone(), accounts.clone());
        let card = move |task: usize, seq: u64, _measured: bool| {
            new_card_charge(http2.clone(), acc.clone(), format!("k{c}-{task}-{seq}"), task, seq)
        };
        eprintln!("new card charges, concurrency {c}");
        let (f, w, sent) = closed_loop(args, "new card charge", c, card).await;
        created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("new card charge".into(), c, w));

        // 3. Reservations: many SKUs, every tenth on the hot one.
        let http2 = http.clone();
        let created = Rc::new(Cell::new(0u64));
        let created2 = created.clone();
        let reserve = move |task: usize, seq: u64, _measured: bool| {
            let (http, created) = (http2.clone(), created2.clone());
            async move {
                let order = format!("r{c}-{task}-{seq}");
                let sku = sku_for(task * 7919 + seq as usize * 31);
                let body = json!({"order_id": order, "sku": sku, "quantity": 1}).to_string().into_bytes();
                let mut w = Wrong::default();
                let r = http.post("/v1/reservations", &format!("hold:{order}"), body).await;
                if check_created(&mut w, &r) {
                    created.set(created.get() + 1);
                }
                (w, None)
            }
        };
        eprintln!("reservations, concurrency {c}");
        let (f, w, _) = closed_loop(args, "reservation", c, reserve).await;
        reserved_total += created.get();
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("reservation".into(), c, w));

        // 4. A purchase: reserve, then charge the same order.
        let (http2, acc) = (http.clone(), accounts.clone());
        let created2 = created.clone();
        created.set(0);
        let charged = Rc::new(Cell::new(0u64));
        let charged2 = charged.clone();
        let purchase = move |task: usize, seq: u64, _measured: bool| {
            let (http, acc, created, charged) = (http2.clone(), acc.clone(), created2.clone(), charged2.clone());
            async move {
                let order = format!("p{c}-{task}-{seq}");
                let (w, reserved, paid) = purchase(&http, &acc, &order, task * 7919 + seq as usize * 104_729).await;
                created.set(created.get() + reserved as u64);
                charged.set(charged.get() + paid as u64);
                (w, None)
            }
        };
        eprintln!("purchases (reserve + charge), concurrency {c}");
        let (f, w, _) = closed_loop(args, "purchase (res+charge)", c, purchase).await;
        reserved_total += created.get();
        created_total += charged.get();
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        eprintln!("  {}", f.row());
        results.push(f);
        wrong_by.push(("purchase".into(), c, w));
    }
    // The messaging pipeline, on the outbox the workloads above filled (no
    // relay ran during them), then live beside the API.
    let messaging = if args.no_messaging {
        None
    } else {
        let mut m = messaging::run(args, db_url, http.clone(), accounts.clone()).await?;
        results.extend(m.purchases.take());
        reserved_total += m.reserved;
        created_total += m.charged;
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
        wrong_by.push((messaging::PURCHASE_WORKLOAD.into(), messaging::LAG_CONCURRENCY, m.purchase_wrong));
        Some(m)
    };

    // Growth: new charges before and after seeding millions of ledger entries.
    let growth = if args.growth_entries > 0 { Some(growth::run(args, db_url, &http, &accounts).await?) } else { None };
    if let Some(g) = &growth {
        created_total += g.created;
        wrong_by.extend(g.wrong.iter().cloned());
        rss_peak = rss_peak.max(peak_rss_kib(server.child.id()).unwrap_or(0));
    }

    let server_key = server.key.clone();
    drop(server);
    drop(alone);
    drop(provider);

    // Duplicate effects: every 201 is one charge and one ledger transaction, no more.
    let (db, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)).unwrap_or(-1) }
    };
    let charges = count("SELECT count(*) FROM charges").await;
    let charge_txs = count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await;
    let reservations = count("SELECT count(*) FROM reservations").await;
    let duplicates = (charges - created_total as i64).max(0)
        + (charge_txs - charges).max(0)
        + (reservations - reserved_total as i64).max(0);
    let missing = (created_total as i64 - charges).max(0) + (reserved_total as i64 - reservations).max(0);

    let mut limit: Vec<Figures> = Vec::new();
    let mut yardstick: Vec<Figures> = Vec::new();
    let mut profiles: Vec<(String, usize, Vec<pgbench::Statement>)> = Vec::new();
    if !args.no_pgbench {
        db.batch_execute(&pgbench::yardstick_setup_sql()).await?;
        // pgbench picks buyers and sellers by number, as the generator does.
        db.batch_execute("CREATE TABLE bench_pick (n int PRIMARY KEY, buyer uuid NOT NULL, seller uuid NOT NULL)")
            .await?;
        for (n, buyer) in accounts.buyers.iter().enumerate() {
            let seller = &accounts.sellers[n % accounts.sellers.len()];
            db.execute(
                "INSERT INTO bench_pick VALUES ($1, $2::text::uuid, $3::text::uuid)",
                &[&(n as i32), buyer, seller],
            )
            .await?;
        }
        let tenant: uuid::Uuid = db.query_one("SELECT id FROM tenants LIMIT 1", &[]).await?.get(0);
        let keyhash: String = ledger::tenants::hash_key(&server_key).iter().map(|b| format!("{b:02x}")).collect();
        let payload = json!({"message_id": uuid::Uuid::now_v7(), "type": "charge.succeeded", "version": 1,
            "tenant_id": tenant, "order_id": "o16-0-0", "occurred_at": "2026-11-23T00:00:00Z",
            "data": serde_json::from_str::<Value>(&sample_answer).unwrap_or(Value::Null)});
        let fixed = [
            ("tenant", tenant.to_string()),
            ("platform", accounts.platform.clone()),
            ("keyhash", format!("\\x{keyhash}")),
            ("retention", "86400".into()),
            ("attempt", "1".into()),
            ("kind", "charge".into()),
            ("currency", "USD".into()),
            ("legs", "{0,1,2}".into()),
            ("legamounts", "{-1.00,0.90,0.10}".into()),
            ("debits", "{-1.00}".into()),
            ("credits", "{0.90,0.10}".into()),
            ("amount", "1.00".into()),
            ("fee", "0.10".into()),
            ("email", "buyer@example.com".into()),
            ("event", "charge.succeeded".into()),
            ("payload", payload.to_string()),
            ("status", "201".into()),
            ("contenttype", "application/json".into()),
            ("headers", json!([["location", "/v1/charges/00000000-0000-0000-0000-000000000000"]]).to_string()),
            ("answer", sample_answer.clone()),
        ];
        for &c in &args.concurrency {
            // The server's free connection slots bound the clients (other
            // databases on a shared server hold some); the table says so.
            let free: i64 = db
                .query_one(
                    "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int \
                            - (SELECT count(*) FROM pg_stat_activity)::int - 2",
                    &[],
                )
                .await
                ?
                .get::<_, i32>(0)
                .into();
            let clients = c.min(free.max(1) as usize);
            eprintln!("pgbench, one charge's SQL, concurrency {c} ({clients} connections)");
            match pgbench::run(args.duration, args.warmup, c, clients, db_url, accounts.buyers.len(), &fixed).await {
                Ok((f, st)) => {
                    eprintln!("  {}", f.row());
                    profiles.push((f.workload.clone(), c, st));
                    limit.push(f);
                }
                Err(e) => eprintln!("  pgbench failed: {e}"),
            }
            eprintln!(
                "yardstick: a row-locked transfer over {} accounts, concurrency {c} ({clients} connections)",
                pgbench::YARDSTICK_ACCOUNTS
            );
            match pgbench::run_yardstick(args.duration, args.warmup, c, clients, db_url).await {
                Ok((f, st)) => {
                    eprintln!("  {}", f.row());
                    profiles.push((f.workload.clone(), c, st));
                    yardstick.push(f);
                }
                Err(e) => eprintln!("  yardstick failed: {e}"),
            }
        }
    }
    // Every HTTP workload over the yardstick and over pgbench running the
    // service's own statements, at the same concurrency.
    let over = |f: &Figures, base: &[Figures]| {
        base.iter().find(|b| b.concurrency == f.concurrency).map(|b| round(f.rps() / b.rps()))
    };
    let ratio_cell = |r: Option<f64>| r.map_or_else(|| format!("{:>7}", "-"), |r| format!("{r:>7.3}"));

    // The table.
    println!();
    println!(
        "{:<22} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "workload", "conc", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "÷yard", "÷pgb"
    );
    for f in results.iter().chain(growth.iter().flat_map(|g| g.rows())) {
        println!("{} {} {}", f.row(), ratio_cell(over(f, &yardstick)), ratio_cell(over(f, &limit)));
    }
    for f in limit.iter().chain(yardstick.iter()) {
        println!("{} {}", f.row(), ratio_cell(over(f, &yardstick)));
    }
    if let Some(g) = &growth {
        for (c, ratio) in g.ratios() {
            println!(
                "new charge p99, {} entries ÷ before seeding, at concurrency {c}: {ratio:.2} (target ≤ 1.20)",
                g.seeded
            );
        }
        println!(
            "growth seeding: {} entries in {:.1} s, VACUUM ANALYZE {:.1} s, CHECKPOINT {:.1} s",
            g.seeded, g.seed_secs, g.vacuum_secs, g.checkpoint_secs
        );
    }
    let mut ratios = Vec::new();
    for l in &limit {
        if let Some(s) = results.iter().find(|f| f.workload == "new charge" && f.concurrency == l.concurrency) {
            let ratio = s.rps() / l.rps();
            println!("new charge ÷ pgbench at concurrency {}: {:.2}", l.concurrency, ratio);
            let yard = over(s, &yardstick);
            if let Some(y) = yard {
                println!("new charge ÷ yardstick at concurrency {}: {y:.3} (target ≥ 0.5 at 64)", l.concurrency);
            }
            ratios.push(
                json!({"concurrency": l.concurrency, "pgbench": l.workload, "service_over_pgbench": round(ratio),
                               "service_over_yardstick": yard}),
            );
        }
    }
    // Group commit: the batches, where their time goes, and batched ÷ alone.
    println!();
    for (profile, over_alone) in &group_commit {
        println!("{}", profile.line());
        println!("new charge batched ÷ each alone at concurrency {}: {over_alone:.2}", profile.concurrency);
    }
    // Where the time goes: pgbench's mean latency per statement.
    for (workload, c, statements) in &profiles {
        println!();
        println!("{workload} at {c}, mean ms per statement (pgbench -r):");
        for st in statements {
            println!("  {:>9.3}  {}", st.ms, st.sql);
        }
    }
    let mut wrong_total = Wrong::default();
    println!();
    for (w, c, wr) in &wrong_by {
        wrong_total.add(wr);
        println!(
            "wrong answers, {w} at {c}: {} (non-2xx {}, new not created {}, not replayed {}, replay differs {}, transport {})",
            wr.total(),
            wr.non_2xx,
            wr.not_created,
            wr.not_replayed,
            wr.replay_differs,
            wr.transport
        );
    }
    println!(
        "charges created (201): {created_total}; charges in the database: {charges}; charge transactions: {charge_txs}"
    );
    println!("reservations created (201): {reserved_total}; in the database: {reservations}");
    println!("duplicate effects: {duplicates}; missing effects: {missing}");
    println!("API peak RSS (VmHWM): {:.1} MiB", rss_peak as f64 / 1024.0);
    if let Some(m) = &messaging {
        println!();
        m.print();
    }
    let messaging_wrong = messaging.as_ref().map_or(0, |m| m.wrong_total());
    let ok = wrong_total.total() == 0 && duplicates == 0 && missing == 0 && messaging_wrong == 0;
    println!("result: {}", if ok { "PASS" } else { "FAILED" });

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut report = json!({
        "git_revision": git_revision(),
        "cores": cores,
        "concurrency": args.concurrency,
        "duration_secs": args.duration,
        "warmup_secs": args.warmup,
        "buyers": args.buyers,
        "sellers": args.sellers,
        "service": results.iter().map(|f| {
            let mut j = f.json();
            j["over_yardstick"] = json!(over(f, &yardstick));
            j["over_pgbench"] = json!(over(f, &limit));
            j
        }).collect::<Vec<_>>(),
        "pgbench": limit.iter().map(|f| {
            let mut j = f.json();
            j["over_yardstick"] = json!(over(f, &yardstick));
            j
        }).collect::<Vec<_>>(),
        "yardstick": yardstick.iter().map(Figures::json).collect::<Vec<_>>(),
        "pgbench_statement_ms": profiles.iter().map(|(w, c, st)| json!({"workload": w, "concurrency": c,
            "statements": st.iter().map(|s| json!({"ms": s.ms, "statement": s.sql})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "yardstick_accounts": pgbench::YARDSTICK_ACCOUNTS,
        "ratios": ratios,
        "group_commit": group_commit.iter().map(|(p, over_alone)| {
            let mut j = p.json();
            j["batched_over_alone"] = json!(round(*over_alone));
            j
        }).collect::<Vec<_>>(),
        "growth": growth.as_ref().map(growth::Growth::json),
        "wrong_answers": wrong_by.iter().map(|(w, c, wr)| json!({"workload": w, "concurrency": c, "counts": wr.json()})).collect::<Vec<_>>(),
        "charges_created": created_total,
        "charges_in_db": charges,
        "reservations_created": reserved_total,
        "reservations_in_db": reservations,
        "duplicate_effects": duplicates,
        "missing_effects": missing,
        "api_peak_rss_mib": round(rss_peak as f64 / 1024.0),
        "messaging": messaging.as_ref().map(messaging::Report::json),
        "passed": ok,
    });
    // The growth step's charges are HTTP workloads too.
    if let (Some(g), Some(pairs)) = (&growth, report["growth"]["by_concurrency"].as_array_mut()) {
        for ((empty, grown), pair) in g.pairs.iter().zip(pairs.iter_mut()) {
            pair["empty"]["over_yardstick"] = json!(over(empty, &yardstick));
            pair["grown"]["over_yardstick"] = json!(over(grown, &yardstick));
        }
    }
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap())?;
    println!("written: {}", args.out);
    let svg = std::path::Path::new(&args.out).with_extension("svg");
    let svg = svg.to_string_lossy();
    chart::write(&report, &svg)?;
    println!("written: {svg}");
    Ok(ok)
}
