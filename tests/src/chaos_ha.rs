//! The fault campaign against the highly available stack (`make ha-up`,
//! docs/ha.md): three API processes behind HAProxy, two of each worker
//! competing, the database through HAProxy's primary port (three PostgreSQL
//! members under Patroni, a synchronous standby), AMQP_URL listing the three
//! RabbitMQ nodes. At seeded moments it kills the PostgreSQL primary (its
//! Patroni and postmaster together), the RabbitMQ node that leads the
//! inventory queue (`kill -9` of its beam), an API process or a worker
//! process, while storefront clients (`chaos::client`) run purchases through
//! HAProxy, retrying with the same Idempotency-Key. Killed parts come back.
//!
//! One fault at a time, each followed by a window in which the killed part
//! comes back; every attempt of every request is logged, so that each
//! failover's unavailability (first failed request after the kill to the
//! first success after it) and the retries it cost can be read from the
//! clients' own view. A 500, a 503 problem without `Retry-After` or a wrong
//! answer is a violation; a 503 or a 409 to retry is what a failover costs.
//! It ends like `chaos`: the pipeline quiesced, lost emails reconciled, the
//! auditor clean (`audit --quiesced`), one charge per paid order, every paid
//! order's reservation committed once, no email twice.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker::Broker;
use crate::chaos::{self, Attempt, Shared, Summary};
use crate::rng::Rng;
use crate::{as_role, spawn_worker_process, API_ROLE, WORKER_ROLE};

/// What the campaign kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The PostgreSQL primary: its Patroni and its postmaster, SIGKILL.
    Primary,
    /// The RabbitMQ node leading the inventory queue: its beam, SIGKILL.
    BrokerNode,
    /// One of the three API processes, SIGKILL.
    Api,
    /// One of the eight worker processes, SIGKILL.
    Worker,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Primary => "postgres primary killed",
            Fault::BrokerNode => "rabbitmq leader node killed",
            Fault::Api => "api process killed",
            Fault::Worker => "worker process killed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    /// The faults of one round, struck in a seeded order; rounds repeat
    /// until `duration` is over. The first round is struck in full even if
    /// it outlasts `duration` (the clients stop at `duration`).
    pub round: Vec<Fault>,
    /// Seconds between two faults: from `gap.0` to `gap.1`.
    pub gap: (u64, u64),
}

/// One fault as the clients and the pipeline saw it.
#[derive(Debug, Clone)]
pub struct Failover {
    pub fault: Fault,
    /// What was killed (`pg2`, `ha1@localhost`, `api :17082`, `worker relay#1`).
    pub target: String,
    /// From the first failed request after the kill to the first success
    /// after that; None when no request failed.
    pub unavailable: Option<Duration>,
    /// Failed attempts (no answer, 5xx, 409 to retry) from the kill to that success.
    pub retries: u64,
    /// For a broker node: from the kill to the relay's first publication after it.
    pub pipeline_stalled: Option<Duration>,
    /// From the kill until the killed part ran again.
    pub back_after: Duration,
}

#[derive(Debug, Default)]
pub struct HaSummary {
    pub chaos: Summary,
    pub failovers: Vec<Failover>,
    /// Answers seen while a part was down: "503 service_unavailable" → count.
    pub answers_during_faults: BTreeMap<String, u64>,
    /// Retries answered from the stored key after a failed attempt: commits
    /// whose acknowledgement was lost, found by the retry, never made twice.
    pub lost_acks_found: u64,
}

impl std::fmt::Display for HaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.chaos;
        writeln!(f, "chaos-ha campaign, seed {}", c.seed)?;
        writeln!(
            f,
            "  purchases {} (charged {}, refunded {}, released {}, declined {})",
            c.purchases, c.charged, c.refunded, c.released, c.declined
        )?;
        writeln!(
            f,
            "  card charges {} (declined then paid {}), provider payments per order attempt at most {}",
            c.card_charges, c.cards_declined, c.provider_max_payments_per_attempt
        )?;
        writeln!(f, "  requests {}, retries {}", c.requests, c.retries)?;
        writeln!(f, "  failovers:")?;
        for o in &self.failovers {
            let unavailable = o.unavailable.map_or("no request failed".to_owned(), |d| {
                format!("unavailable {:.2} s, {} retries", d.as_secs_f64(), o.retries)
            });
            let stalled = o
                .pipeline_stalled
                .map_or(String::new(), |d| format!(", relay publishing again after {:.2} s", d.as_secs_f64()));
            writeln!(
                f,
                "    {:<28} {:<16} {unavailable}{stalled}, back after {:.1} s",
                o.fault.name(),
                o.target,
                o.back_after.as_secs_f64()
            )?;
        }
        for fault in [Fault::Primary, Fault::BrokerNode, Fault::Api, Fault::Worker] {
            let of: Vec<&Failover> = self.failovers.iter().filter(|o| o.fault == fault).collect();
            if of.is_empty() {
                continue;
            }
            let secs: Vec<f64> = of.iter().filter_map(|o| o.unavailable).map(|d| d.as_secs_f64()).collect();
            let retries: u64 = of.iter().map(|o| o.retries).sum();
            let range = match (secs.iter().cloned().reduce(f64::min), secs.iter().cloned().reduce(f64::max)) {
                (Some(lo), Some(hi)) => format!("unavailable {lo:.2}-{hi:.2} s"),
                _ => "never unavailable".to_owned(),
            };
            writeln!(
                f,
                "  {}: {} ({} with failed requests), {range}, {retries} retries in all",
                fault.name(),
                of.len(),
                secs.len()
            )?;
        }
        let answers: Vec<String> = self.answers_during_faults.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        writeln!(f, "  failed attempts while a part was down: {}", answers.join(", "))?;
        writeln!(
            f,
            "  commits whose acknowledgement was lost, found by the retry (Idempotent-Replayed after a failure): {}",
            self.lost_acks_found
        )?;
        writeln!(
            f,
            "  duplicates absorbed {} (answers differing from the first: {})",
            c.duplicates_absorbed, c.duplicate_mismatches
        )?;
        writeln!(
            f,
            "  emails lost {}, recovered by reconcile {}; unknown outcomes left to an operator {} ({} found delivered)",
            c.emails_lost, c.emails_recovered, c.emails_unknown, c.emails_unknown_delivered
        )?;
        for v in &c.violations {
            writeln!(f, "  {v}")?;
        }
        write!(f, "  violations {}", c.violations.len())
    }
}

/// The repository's root (the scripts are under scripts/ha/).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The stack a campaign runs on.
pub struct Stack {
    pub dir: PathBuf,
    env: BTreeMap<String, String>,
    /// Started by this campaign (and stopped by `down`), or found running.
    pub started_here: bool,
    /// Held while the campaign runs: one campaign on the stack's fixed ports at a time.
    _lock: std::fs::File,
}

impl Stack {
    /// The stack on this machine's fixed ports: the one already running
    /// (whatever its folder), or a new one in `HA_DIR` (or `default_dir`).
    /// Waits for any other campaign on the stack to finish first.
    pub fn ensure(default_dir: &Path) -> Stack {
        let lock = std::fs::File::create(std::env::temp_dir().join("ledger-ha-campaign.lock")).unwrap();
        lock.lock().expect("the campaign lock");
        let (dir, started_here) = match running_dir() {
            Some(dir) => (dir, false),
            None => {
                let dir = std::env::var("HA_DIR").map(PathBuf::from).unwrap_or_else(|_| default_dir.to_path_buf());
                (dir, true)
            }
        };
        let mut stack = Stack { dir, env: BTreeMap::new(), started_here, _lock: lock };
        // idempotent: restarts any member or node that died, reuses the rest
        stack.script("up.sh", &[]).unwrap_or_else(|e| panic!("make ha-up failed: {e}"));
        let env = std::fs::read_to_string(stack.dir.join("env")).expect("ha-up wrote its env");
        for line in env.lines() {
            if let Some((name, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                stack.env.insert(name.to_owned(), value.trim_matches('\'').to_owned());
            }
        }
        stack
    }

    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} is not in the stack's env"))
    }

    /// Runs scripts/ha/NAME on this stack; its stdout, or its stderr on failure.
    pub fn script(&self, name: &str, args: &[&str]) -> Result<String, String> {
        script(&self.dir, name, args)
    }

    /// The same, on the blocking pool, so that the clients keep running.
    async fn run(&self, name: &'static str, args: Vec<String>) -> Result<String, String> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || script(&dir, name, &args.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap()
    }

    /// `make ha-down`, if this campaign started the stack.
    pub fn down_if_started_here(&self) {
        if self.started_here {
            if let Err(e) = self.script("down.sh", &[]) {
                eprintln!("make ha-down failed: {e}");
            }
        }
    }
}

fn script(dir: &Path, name: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(root().join("scripts/ha").join(name))
        .args(args)
        .env("HA_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    match out.status.success() {
        true => Ok(text(&out.stdout)),
        false => Err(format!("{name} {args:?}: {}", text(&out.stderr))),
    }
}

/// The folder of the stack whose HAProxy runs, if one does: HAProxy is
/// started as `haproxy -db -f DIR/haproxy/haproxy.cfg`.
fn running_dir() -> Option<PathBuf> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.first().is_some_and(|a| a.ends_with("haproxy")) {
            continue;
        }
        let cfg = args.iter().skip_while(|a| *a != "-f").nth(1)?;
        let cfg = Path::new(cfg);
        if cfg.ends_with("haproxy/haproxy.cfg") {
            return cfg.parent()?.parent().map(Path::to_path_buf);
        }
    }
    None
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

/// An API process; its log (a 503 is logged as an error) goes to a file, not the campaign's output.
fn api(db_url: &str, addr: &str, provider: &[(&'static str, String)]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(api_log()).expect("the API log opens");
    let child = Command::new(crate::workers_binary().with_file_name("ledger-api"))
        .arg("serve")
        .env("DATABASE_URL", db_url)
        .env("HTTP_ADDR", addr)
        .env("HTTP_WORKERS", "2")
        .env("DB_POOL_SIZE", "8")
        .env("RUST_LOG", "error")
        .envs(provider.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("LEDGER_CRASH_AT")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("ledger-api starts");
    Proc(child)
}

/// Where the API processes log.
pub fn api_log() -> PathBuf {
    std::env::temp_dir().join("ledger-chaos-ha-api.log")
}

/// A superuser session on the stack's primary, through HAProxy; retried
/// across a failover.
async fn connect(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, tokio_postgres::NoTls));
        if let Ok(Ok((client, conn))) = attempt.await {
            actix_web::rt::spawn(async move {
                let _ = conn.await;
            });
            return client;
        }
        assert!(Instant::now() < deadline, "no primary answers through HAProxy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The database of one campaign on the stack, dropped at the end.
struct HaDb {
    name: String,
    admin: String,
    url: String,
}

impl HaDb {
    async fn create(stack: &Stack) -> HaDb {
        let admin = format!("{}/postgres", stack.var("PGHOST_URL"));
        let name = format!("ledger_ha_{}", uuid::Uuid::new_v4().simple());
        connect(&admin).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = format!("{}/{name}", stack.var("PGHOST_URL"));
        // as the superuser, which creates the service's roles when missing
        ledger::db::migrate(&url).await.expect("migrations apply on the stack");
        HaDb { name, admin, url }
    }

    async fn drop_it(&self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = connect(&self.admin).await.batch_execute(&sql).await;
    }
}

const ROLES: [&str; 5] = ["relay", "inventory", "email", "completer", "expirer"];

struct Fleet {
    api_url: String,
    addrs: Vec<String>,
    /// The payment provider's settings for the API processes.
    provider: Vec<(&'static str, String)>,
    apis: Vec<Proc>,
    config: workers::config::Config,
    /// Two of each role, competing: relay, relay, inventory, inventory, email, email, completer, completer,
    /// expirer, expirer.
    workers: Vec<Proc>,
}

impl Fleet {
    fn worker_role(i: usize) -> &'static str {
        ROLES[i / 2]
    }

    /// Restarts whatever died, as a supervisor would.
    fn revive(&mut self) {
        for i in 0..self.apis.len() {
            if let Ok(Some(_)) = self.apis[i].0.try_wait() {
                self.apis[i] = api(&self.api_url, &self.addrs[i], &self.provider);
            }
        }
        for i in 0..self.workers.len() {
            if let Ok(Some(_)) = self.workers[i].0.try_wait() {
                self.workers[i] = Proc(spawn_worker_process(&self.config, Self::worker_role(i), None));
            }
        }
    }
}

/// What the fault task records, read by the summary.
struct Strike {
    fault: Fault,
    target: String,
    at: Instant,
    back: Instant,
    pipeline_stalled: Option<Duration>,
}

/// Runs a campaign on the stack and returns its summary.
pub async fn run(stack: &Stack, settings: Settings) -> HaSummary {
    let mut rng = Rng::new(settings.seed);
    let db = HaDb::create(stack).await;
    let nodes = stack.var("AMQP_URL").to_owned();
    let broker = Broker::on(nodes.split(',').next().unwrap());
    let email_dir = std::env::temp_dir().join(format!("ledger-chaos-ha-{}", uuid::Uuid::new_v4().simple()));
    let mut config = workers::config::Config::local(&as_role(&db.url, WORKER_ROLE), &broker.prefix);
    config.amqp_url = nodes.clone();
    config.relay_poll_ms = 100;
    config.email_dir = email_dir.to_string_lossy().into_owned();
    // card purchases through the fake payment provider (no faults of its own here: the stack's are the campaign's)
    let started = chrono::Utc::now();
    let fake = crate::provider::FakeProvider::start(&[]);
    fake.configure(&mut config.gateway);
    config.completer_poll_ms = 200;
    let provider = fake.env();
    // eight worker processes: none may claim the one metrics port of the environment
    std::env::remove_var("WORKERS_METRICS_ADDR");

    let addrs: Vec<String> = stack.var("HA_API_ADDRS").split_whitespace().map(str::to_owned).collect();
    let api_url = as_role(&db.url, API_ROLE);
    let apis = addrs.iter().map(|a| api(&api_url, a, &provider)).collect();
    let webhooks = format!("{}/v1/provider/webhooks", stack.var("HA_HTTP_URL"));
    fake.set_webhook_endpoint(&webhooks).await;
    let workers =
        (0..ROLES.len() * 2).map(|i| Proc(spawn_worker_process(&config, Fleet::worker_role(i), None))).collect();
    let fleet = Rc::new(RefCell::new(Fleet { api_url, addrs, provider, apis, config: config.clone(), workers }));

    // every request through HAProxy's HTTP port
    let http_port: u16 = stack.var("HA_HTTP_URL").rsplit(':').next().unwrap().parse().unwrap();
    let shared = Rc::new(RefCell::new(Shared {
        ports: vec![http_port],
        summary: Summary { seed: settings.seed, ..Summary::default() },
        attempts: Some(Vec::new()),
    }));

    // the store, as `chaos` sets it up
    let store = chaos::open_store(&shared, &rng, &db.url, "chaos-ha", settings.clients).await;
    // the setup's attempts are not the campaign's
    shared.borrow_mut().attempts = Some(Vec::new());

    // the clients
    let until = Instant::now() + settings.duration;
    let handles = chaos::start_clients(&shared, &store, settings.seed, settings.clients, until);

    // the faults, one at a time, on this task
    let mut strikes: Vec<Strike> = Vec::new();
    let mut violations = Vec::new();
    let mut first_round = true;
    'rounds: loop {
        let mut round = settings.round.clone();
        // a seeded order within the round
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for fault in round {
            let gap = Duration::from_secs(settings.gap.0 + rng.below(settings.gap.1 - settings.gap.0 + 1));
            // the first round is struck in full, whatever the duration
            if !first_round && Instant::now() + gap + Duration::from_secs(5) >= until {
                break 'rounds;
            }
            tokio::time::sleep(gap).await;
            fleet.borrow_mut().revive();
            match strike(stack, &fleet, &db.url, &broker, fault, &mut rng).await {
                Ok(s) => strikes.push(s),
                Err(e) => violations.push(format!("VIOLATION fault_injection: {} failed: {e}", fault.name())),
            }
        }
        first_round = false;
        if Instant::now() + Duration::from_secs(5) >= until {
            break;
        }
    }
    // every part back (ha-up restarts any member or node still down), then the last requests
    if let Err(e) = stack.run("up.sh", vec![]).await {
        violations.push(format!("VIOLATION stack_back: {e}"));
    }
    fleet.borrow_mut().revive();
    for h in handles {
        h.await.expect("a client finished");
    }

    // a week passes for the checkouts left open: the expirers void them
    let pg = connect(&db.url).await;
    shared.borrow_mut().summary.expired += chaos::expire_open_authorizations(&pg).await;
    // quiesce: everything relayed and consumed
    if let Err(stuck) = chaos::quiesce(&pg, &broker).await {
        panic!("{stuck}");
    }
    let mut summary = HaSummary { chaos: std::mem::take(&mut shared.borrow_mut().summary), ..HaSummary::default() };
    chaos::settle(&pg, &config, &fake, &email_dir, started, &mut summary.chaos).await;
    let count = async |sql: &str| -> u64 { pg.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 };
    // every paid order's reservation committed, and its stock taken once
    let uncommitted = count(
        "SELECT count(*) FROM charges c WHERE c.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM reservations r \
          WHERE r.tenant_id = c.tenant_id AND r.order_id = c.order_id AND r.status = 'committed')",
    )
    .await;
    let taken_twice = count(
        "SELECT count(*) FROM (SELECT 1 FROM stock_entries WHERE kind = 'commit' \
          GROUP BY tenant_id, order_id, sku HAVING count(*) > 1) t",
    )
    .await;
    let taken = count("SELECT count(*) FROM stock_entries WHERE kind = 'commit'").await;
    let committed = count("SELECT count(*) FROM reservations WHERE status = 'committed'").await;
    drop(fleet);
    let _ = std::fs::remove_dir_all(&email_dir);

    let attempts = shared.borrow_mut().attempts.take().unwrap_or_default();
    let s = &mut summary.chaos;
    s.violations.extend(violations);
    for f in &strikes {
        *s.faults.entry(f.fault.name()).or_default() += 1;
    }
    if uncommitted > 0 || taken_twice > 0 || taken != committed {
        s.violations.push(format!(
            "VIOLATION reservation_committed_once: {uncommitted} paid order(s) without a committed reservation, \
             {taken_twice} stock taken twice, {taken} commit entries for {committed} committed reservations"
        ));
    }
    read_attempts(&mut summary, &strikes, &attempts, until);
    db.drop_it().await;
    summary
}

/// Whether an attempt failed in a way a fault explains.
fn failed(a: &Attempt) -> bool {
    match a.status {
        None => true,
        Some(s) => s >= 500,
    }
}

/// Whether the client retried after the attempt: a failure, or a 409 that
/// says to retry with `Retry-After` (a refusal without it is final).
fn retried(a: &Attempt) -> bool {
    failed(a) || (a.status == Some(409) && a.retry_after) || a.status == Some(429)
}

/// Each fault's unavailability and retries, read from the clients' attempts;
/// what the clients were answered while a part was down; the violations in
/// those answers.
fn read_attempts(summary: &mut HaSummary, strikes: &[Strike], attempts: &[Attempt], until: Instant) {
    for a in attempts {
        if a.found_after_failure {
            summary.lost_acks_found += 1;
        }
        // a 503 of the API's own (a problem document) always says when to retry
        if a.status == Some(503) && a.problem && !a.retry_after {
            summary.chaos.violations.push(format!("VIOLATION retry_after: a 503 {:?} without Retry-After", a.code));
        }
    }
    for (i, s) in strikes.iter().enumerate() {
        let end = strikes.get(i + 1).map_or(until + Duration::from_secs(120), |n| n.at);
        let window: Vec<&Attempt> = attempts.iter().filter(|a| a.at >= s.at && a.at < end).collect();
        let first_failure = window.iter().position(|a| failed(a));
        let (unavailable, retries) = match first_failure {
            None => (None, 0),
            Some(k) => {
                // to the first success after the last failure: an answer
                // already on its way when the part died can land between
                // the first failures and says nothing about recovery
                let t_fail = window[k].at;
                let last = window.iter().rposition(|a| failed(a)).unwrap_or(k);
                let recovered = window[last..].iter().position(|a| !retried(a));
                let upto = recovered.map_or(window.len(), |r| last + r);
                let retries = window[k..upto].iter().filter(|a| retried(a)).count() as u64;
                (recovered.map(|r| window[last + r].at - t_fail), retries)
            }
        };
        for a in window.iter().filter(|a| a.at <= s.back && retried(a)) {
            let what = match (a.status, &a.code) {
                (None, _) => "no answer".to_owned(),
                (Some(st), Some(code)) => format!("{st} {code}"),
                (Some(st), None) => format!("{st}"),
            };
            *summary.answers_during_faults.entry(what).or_default() += 1;
        }
        summary.failovers.push(Failover {
            fault: s.fault,
            target: s.target.clone(),
            unavailable,
            retries,
            pipeline_stalled: s.pipeline_stalled,
            back_after: s.back - s.at,
        });
    }
}

/// Strikes one fault and waits for the killed part to run again.
async fn strike(
    stack: &Stack,
    fleet: &Rc<RefCell<Fleet>>,
    db_url: &str,
    broker: &Broker,
    fault: Fault,
    rng: &mut Rng,
) -> Result<Strike, String> {
    let down = Duration::from_secs(1 + rng.below(5));
    match fault {
        Fault::Primary => {
            // only with a synchronous standby running: otherwise an outage, not a failover
            let deadline = Instant::now() + Duration::from_secs(90);
            let (member, at) = loop {
                let at = Instant::now();
                match stack.run("kill-pg-primary.sh", vec![]).await {
                    Ok(member) => break (member, at),
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            // a new leader elected, then the old one back as a replica
            let new_leader = async || {
                let http = awc::Client::default();
                for port in 17111..=17113 {
                    if let Ok(mut res) = http.get(format!("http://127.0.0.1:{port}/cluster")).send().await {
                        if let Ok(cluster) = res.json::<Value>().await {
                            return cluster["members"].as_array().into_iter().flatten().any(|m| {
                                m["role"] == "leader" && m["state"] == "running" && m["name"] != member.as_str()
                            });
                        }
                    }
                }
                false
            };
            let deadline = Instant::now() + Duration::from_secs(90);
            while !new_leader().await {
                if Instant::now() > deadline {
                    return Err(format!("no new leader 90 s after {member} was killed"));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tokio::time::sleep(down).await;
            stack.run("start-member.sh", vec![member.clone(), "--wait".into()]).await?;
            Ok(Strike { fault, target: member, at, back: Instant::now(), pipeline_stalled: None })
        }
        Fault::BrokerNode => {
            // a session of its own: one made before a primary was killed died with it
            let pg = connect(db_url).await;
            let since: String = pg.query_one("SELECT now()::text", &[]).await.map_err(|e| e.to_string())?.get(0);
            let at = Instant::now();
            let node =
                stack.run("kill-rabbit-node.sh", vec!["leader-of".into(), broker.names.inventory.clone()]).await?;
            // the relay publishing again, through another node
            let mut stalled = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while stalled.is_none() && Instant::now() < deadline {
                let row = pg
                    .query_one("SELECT count(*) FROM outbox WHERE published_at > $1::text::timestamptz", &[&since])
                    .await;
                if row.is_ok_and(|r| r.get::<_, i64>(0) > 0) {
                    stalled = Some(at.elapsed());
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            tokio::time::sleep(down).await;
            stack.run("start-rabbit-node.sh", vec![node.clone()]).await?;
            Ok(Strike { fault, target: node, at, back: Instant::now(), pipeline_stalled: stalled })
        }
        Fault::Api => {
            let i = rng.below(3) as usize;
            let at = Instant::now();
            let target = {
                let mut f = fleet.borrow_mut();
                f.apis[i].kill();
                format!("api {}", f.addrs[i])
            };
            tokio::time::sleep(down).await;
            {
                let mut f = fleet.borrow_mut();
                let (url, addr, provider) = (f.api_url.clone(), f.addrs[i].clone(), f.provider.clone());
                f.apis[i] = api(&url, &addr, &provider);
            }
            Ok(Strike { fault, target, at, back: Instant::now(), pipeline_stalled: None })
        }
        Fault::Worker => {
            let i = rng.below(8) as usize;
            let at = Instant::now();
            let target = format!("worker {}#{}", Fleet::worker_role(i), i % 2 + 1);
            fleet.borrow_mut().workers[i].kill();
            tokio::time::sleep(down).await;
            let mut f = fleet.borrow_mut();
            f.workers[i] = Proc(spawn_worker_process(&f.config, Fleet::worker_role(i), None));
            Ok(Strike { fault, target, at, back: Instant::now(), pipeline_stalled: None })
        }
    }
}
