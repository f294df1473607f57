//! The messaging figures: the outbox relay against a plain confirmed-publish
//! loop, the consumers' rates, the end-to-end lag of a purchase, and the
//! workers' peak memory.
//!
//! Runs after the HTTP workloads, which leave thousands of unpublished outbox
//! rows behind (no relay runs during them), with the API still up:
//!
//! 1. **Plain loop**: the bench process itself publishes the same N messages
//!    (the outbox rows' own ids, event types as routing keys and payload
//!    bytes, read from the table) to the workers' topology (declared with
//!    `workers::topology::declare`, under a prefix of its own: the same
//!    exchanges and quorum queues), persistent, with publisher confirms,
//!    each event's copies made by the relay's own `publish_event` (one
//!    mandatory copy straight into each consumer's queue that must have it,
//!    one into the topic exchange) and settled by its `settle`, a batch of
//!    `RELAY_BATCH` published and then all of its confirms awaited, exactly
//!    as `workers::relay::publish_batch` does minus the database. It runs first, and its queues are deleted before
//!    the relay starts, so both start on an empty broker.
//! 2. **Relay**: `ledger-workers relay` (same batch size) drains the backlog.
//!    The clock is the database's: from the first batch's `published_at`
//!    (`now()` of the relay's first claiming transaction, so after the relay
//!    connected and declared its topology: process start-up is not counted,
//!    as the plain loop's connect is not) to the `clock_timestamp()` of the
//!    first poll (every 10 ms) that finds every row published, i.e. after
//!    the last batch committed. Both ends use the same clock, and the
//!    polling error is at most one interval. (The plain loop's clock is the
//!    bench's: from its first publish to its last confirm.)
//! 3. **Inventory worker**: started on the queue the relay filled; messages/s
//!    from the first inbox row's `received_at` (`now()` of the first
//!    message's transaction) to the poll that finds one inbox row per queued
//!    message (acked after its transaction committed, one at a time). Each charge event of a purchase commits
//!    its reservation (stock taken, a `reservation.committed` event written),
//!    so the work is real; afterwards every paid reservation must be
//!    committed and every commit must have exactly one stock entry.
//! 4. **Email queue**: purged, so that the live step below does not start
//!    with a backlog of thousands of emails in front of its own. (Draining it
//!    with the email worker instead would add half a minute at the default
//!    settings, for a figure the issue does not ask for; those orders simply
//!    get no email in the benchmark database.)
//! 5. **End-to-end lag**: relay, inventory and email (writing into a
//!    temporary `EMAIL_DIR`, deleted afterwards) run live while the
//!    purchase workload (reserve + charge) runs at concurrency 16 for the
//!    configured warm-up and duration; once the pipeline is quiet, the lag
//!    of every order of that step is `reservations.updated_at -
//!    charges.created_at`, p50/p99 by `percentile_cont`. Both columns are
//!    `now()`, the start of their transaction: the charge's includes its own
//!    transaction (the event is visible only at its commit), which makes the
//!    lag look longer by that much; the reservation's excludes the inventory
//!    transaction's own time, which makes it look shorter. Warm-up orders
//!    count too (the workers are connected before the load starts).
//!    Afterwards every order of this step must have one sent email, and one
//!    file per sent email must exist.
//!
//! The polls are kept cheap (an `EXISTS` on the unpublished-rows index for
//! the relay, a count over at most a few thousand inbox rows every 25 ms for
//! the inventory worker) because they share the two cores with what they
//! measure. The plain loop runs on the bench's single-threaded runtime, the
//! relay on a multi-threaded one; in both, lapin does the socket I/O on a
//! thread of its own, and each publishes a batch then awaits its confirms,
//! one batch at a time, so the runtime is not what limits either.
//!
//! Every worker gets `AMQP_PREFIX=bench-<uuid>` and the bench database;
//! its peak RSS (VmHWM) is read just before its SIGTERM, the largest per role
//! is reported. The prefix's exchanges and queues, the plain loop's, and the
//! email directory are deleted at the end, also on failure.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::{Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio_postgres::Client;
use workers::relay;
use workers::topology::{self, Names};

use crate::error::{Error, Result};
use crate::load::{closed_loop, peak_rss_kib, purchase, round, terminate, Accounts, Args, Figures, Http, Wrong};

/// The live purchase workload's name in the table.
pub const PURCHASE_WORKLOAD: &str = "purchase (live workers)";
/// Requests in flight while the lag is measured.
pub const LAG_CONCURRENCY: usize = 16;
/// Rows per relay batch, given to the relay and used by the plain loop (the workers' default).
const RELAY_BATCH: usize = 500;
/// The workers' default delivery limit, so both topologies are declared alike.
const DELIVERY_LIMIT: i64 = 5;
const POLL: Duration = Duration::from_millis(10);
/// Polls of the consumers' progress, a count: less often.
const POLL_COUNT: Duration = Duration::from_millis(25);

/// What the consumers must have done, by the audit's own rules
/// (`ledger::audit`): every reservation held when its order was paid
/// committed, each with exactly one stock commit.
const CONSUMED: &[&str] =
    &["paid_reservations_committed", "stock_commit_matches_reservation", "one_stock_commit_per_order_sku"];

/// The audit's violations of `names`, each printed; their count.
async fn violations(db: &Client, names: &[&str]) -> Result<i64> {
    let found = ledger::audit::violations(db, names).await?;
    for v in &found {
        eprintln!("  VIOLATION {}: {}", v.invariant, v.row);
    }
    Ok(found.len() as i64)
}

pub struct Rate {
    pub count: u64,
    pub secs: f64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.count as f64 / self.secs
        } else {
            0.0
        }
    }
    fn json(&self, unit: &str) -> Value {
        json!({"count": self.count, "seconds": round(self.secs), unit: round(self.per_sec())})
    }
}

#[derive(Default)]
pub struct Lag {
    orders: i64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub struct Report {
    relay: Rate,
    plain: Rate,
    inventory: Rate,
    /// Of the inventory worker's messages, those whose order had a reservation to commit.
    inventory_commits: i64,
    lag: Lag,
    /// Peak RSS per role, KiB.
    rss_kib: [u64; 3],
    /// Wrong results by what was checked.
    checks: Vec<(&'static str, i64)>,
    /// Wall-clock seconds of the whole messaging step.
    step_secs: f64,
    /// The live purchase workload, for the table.
    pub purchases: Option<Figures>,
    pub purchase_wrong: Wrong,
    pub reserved: u64,
    pub charged: u64,
}

impl Report {
    fn ratio(&self) -> f64 {
        if self.plain.per_sec() > 0.0 {
            self.relay.per_sec() / self.plain.per_sec()
        } else {
            0.0
        }
    }

    pub fn wrong_total(&self) -> i64 {
        self.checks.iter().map(|(_, n)| n).sum()
    }

    pub fn print(&self) {
        println!(
            "relay: {} events in {:.2} s = {:.0} events/s; plain confirmed-publish loop: {:.0} msgs/s; relay ÷ plain = {:.2} (target ≥ 0.50)",
            self.relay.count,
            self.relay.secs,
            self.relay.per_sec(),
            self.plain.per_sec(),
            self.ratio()
        );
        let r = &self.inventory;
        println!(
            "inventory worker: {} messages in {:.2} s = {:.0} msgs/s ({} committed a reservation, the others only their inbox row)",
            r.count,
            r.secs,
            r.per_sec(),
            self.inventory_commits
        );
        println!(
            "end-to-end lag (charge commit → reservation committed): p50 {:.1} ms, p99 {:.1} ms over {} orders (max {:.1} ms)",
            self.lag.p50_ms, self.lag.p99_ms, self.lag.orders, self.lag.max_ms
        );
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "workers peak RSS: relay {:.1} MiB, inventory {:.1} MiB, email {:.1} MiB",
            mib(self.rss_kib[0]),
            mib(self.rss_kib[1]),
            mib(self.rss_kib[2])
        );
        let checks: Vec<String> = self.checks.iter().map(|(what, n)| format!("{what} {n}")).collect();
        println!("messaging wrong results: {} ({})", self.wrong_total(), checks.join(", "));
        println!("messaging step: {:.1} s in all", self.step_secs);
    }

    pub fn json(&self) -> Value {
        json!({
            "relay": self.relay.json("events_per_s"),
            "plain_confirmed_publish": self.plain.json("msgs_per_s"),
            "relay_over_plain": round(self.ratio()),
            "batch": RELAY_BATCH,
            "inventory_worker": self.inventory.json("msgs_per_s"),
            "inventory_worker_reservations_committed": self.inventory_commits,
            "end_to_end_lag": {"orders": self.lag.orders, "concurrency": LAG_CONCURRENCY,
                "p50_ms": round(self.lag.p50_ms), "p99_ms": round(self.lag.p99_ms), "max_ms": round(self.lag.max_ms)},
            "workers_peak_rss_mib": {"relay": round(self.rss_kib[0] as f64 / 1024.0),
                "inventory": round(self.rss_kib[1] as f64 / 1024.0), "email": round(self.rss_kib[2] as f64 / 1024.0)},
            "wrong_results": self.checks.iter().map(|(what, n)| (what.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "wrong_total": self.wrong_total(),
            "step_seconds": round(self.step_secs),
        })
    }
}

/// What every worker process is started with.
pub(crate) struct Env {
    pub(crate) bin: String,
    pub(crate) db_url: String,
    pub(crate) amqp_url: String,
    pub(crate) prefix: String,
    pub(crate) email_dir: PathBuf,
}

/// A worker process, sent SIGTERM when dropped.
pub(crate) struct Worker {
    role: &'static str,
    child: Option<Child>,
}

impl Worker {
    pub(crate) fn start(env: &Env, role: &'static str) -> Result<Worker> {
        Worker::start_with(env, role, &[])
    }

    /// As [`Worker::start`], with `extra` added to its environment (last, so
    /// it overrides).
    pub(crate) fn start_with(env: &Env, role: &'static str, extra: &[(&str, String)]) -> Result<Worker> {
        let child = Command::new(&env.bin)
            .arg(role)
            .env("DATABASE_URL", &env.db_url)
            .env("AMQP_URL", &env.amqp_url)
            .env("AMQP_PREFIX", &env.prefix)
            .env("AMQP_DELIVERY_LIMIT", DELIVERY_LIMIT.to_string())
            .env("RELAY_BATCH", RELAY_BATCH.to_string())
            .env("EMAIL_DIR", &env.email_dir)
            .env_remove("SMTP_URL")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn { program: env.bin.clone(), source })?;
        Ok(Worker { role, child: Some(child) })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Err(Error::WorkerExited { role: self.role, status }),
            _ => Ok(()),
        }
    }

    /// Stops it; returns its peak RSS in KiB, read just before.
    pub(crate) fn stop(mut self) -> u64 {
        let mut child = self.child.take().expect("running");
        let kib = peak_rss_kib(child.id()).unwrap_or(0);
        terminate(&mut child);
        kib
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            terminate(child);
        }
    }
}

/// Deletes the benchmark's exchanges, queues and email directory when dropped
/// (after the workers, which are dropped first, so none redeclares them).
pub(crate) struct Cleanup {
    pub(crate) amqp_url: String,
    pub(crate) names: Vec<Names>,
    pub(crate) email_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.email_dir);
        let (url, names) = (self.amqp_url.clone(), self.names.clone());
        let _ = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                if let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await {
                    for n in &names {
                        delete_topology(&conn, n).await;
                    }
                    let _ = conn.close(200, "".into()).await;
                }
            })
        })
        .join();
    }
}

/// Deletes one prefix's queues and exchanges, a channel per deletion (an
/// error closes its channel).
async fn delete_topology(conn: &Connection, names: &Names) {
    for q in names.queues() {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
            let _ = ch.close(200, "".into()).await;
        }
    }
    for e in [&names.events, &names.dead_letter_exchange] {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch.exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default()).await;
            let _ = ch.close(200, "".into()).await;
        }
    }
}

pub(crate) async fn count(db: &Client, sql: &str) -> Result<i64> {
    Ok(db.query_one(sql, &[]).await?.get::<_, i64>(0))
}

async fn float(db: &Client, sql: &str) -> Result<f64> {
    Ok(db.query_one(sql, &[]).await?.get::<_, Option<f64>>(0).unwrap_or(0.0))
}

/// Polls `sql` (a count, and the database clock as epoch seconds) every
/// `every` until the count reaches `target`; returns the clock of that poll.
pub(crate) async fn poll_until(
    db: &Client,
    (sql, every): (&str, Duration),
    target: i64,
    workers: &mut [&mut Worker],
    limit: Duration,
    what: &str,
) -> Result<f64> {
    let deadline = Instant::now() + limit;
    loop {
        let row = db.query_one(sql, &[]).await?;
        let (n, at): (i64, f64) = (row.get(0), row.get(1));
        if n >= target {
            return Ok(at);
        }
        for w in workers.iter_mut() {
            w.check_alive()?;
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout { what: what.to_owned(), reached: n, target, secs: limit.as_secs() });
        }
        actix_web::rt::time::sleep(every).await;
    }
}

/// Messages waiting in a queue, and its consumers (a passive declare).
pub(crate) async fn queue_counts(conn: &Connection, queue: &str) -> Result<(u32, u32)> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
        .await
        .map_err(|source| Error::Queue { queue: queue.to_owned(), source })?;
    let _ = ch.close(200, "".into()).await;
    Ok((q.message_count(), q.consumer_count()))
}

/// The plain loop: the relay's publishing, without the database. Returns the seconds it took.
async fn plain_loop(conn: &Connection, names: &Names, messages: &[(String, String, String)]) -> Result<f64> {
    let ch = conn.create_channel().await?;
    topology::declare(&ch, names, DELIVERY_LIMIT).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let t0 = Instant::now();
    for batch in messages.chunks(RELAY_BATCH) {
        let mut sent = Vec::with_capacity(batch.len());
        for (message_id, event_type, payload) in batch {
            let copies = relay::publish_event(&ch, names, message_id, event_type, payload.as_bytes()).await?;
            sent.push((message_id, copies));
        }
        for (message_id, copies) in sent {
            match relay::settle(message_id, copies).await? {
                relay::Settled::Delivered => {}
                relay::Settled::Returned(why) => return Err(Error::Returned(why.to_string())),
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = ch.close(200, "".into()).await;
    Ok(secs)
}

pub async fn run(args: &Args, db_url: &str, http: Rc<Http>, accounts: Rc<Accounts>) -> Result<Report> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let env = Env {
        bin: args.workers_bin.clone(),
        db_url: db_url.to_owned(),
        amqp_url: args.amqp_url.clone(),
        prefix: format!("bench-{id}"),
        email_dir: std::env::temp_dir().join(format!("ledger-bench-emails-{id}")),
    };
    let names = Names::new(&env.prefix);
    let plain_names = Names::new(&format!("bench-{id}-plain"));
    let _cleanup = Cleanup {
        amqp_url: env.amqp_url.clone(),
        names: vec![names.clone(), plain_names.clone()],
        email_dir: env.email_dir.clone(),
    };
    let t0 = Instant::now();
    let mut report = measure(args, &env, &names, &plain_names, http, accounts).await?;
    report.step_secs = t0.elapsed().as_secs_f64();
    Ok(report)
}

async fn measure(
    args: &Args,
    env: &Env,
    names: &Names,
    plain_names: &Names,
    http: Rc<Http>,
    accounts: Rc<Accounts>,
) -> Result<Report> {
    let (db, conn) = tokio_postgres::connect(&env.db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    let amqp = Connection::connect(&env.amqp_url, ConnectionProperties::default()).await?;
    let mut checks: Vec<(&'static str, i64)> = Vec::new();
    let mut rss = [0u64; 3];

    // The backlog, as the relay will read it.
    let rows = db
        .query(
            "SELECT message_id::text, event_type, payload::text FROM outbox WHERE published_at IS NULL ORDER BY id",
            &[],
        )
        .await?;
    let messages: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let n = messages.len() as i64;
    let routed_to = |events: &[&str]| messages.iter().filter(|m| events.contains(&m.1.as_str())).count() as i64;
    let (routed, routed_email) = (routed_to(topology::INVENTORY_EVENTS), routed_to(topology::EMAIL_EVENTS));
    let outbox_total = count(&db, "SELECT count(*) FROM outbox").await?;
    if n == 0 || n != outbox_total {
        return Err(Error::NoBacklog { unpublished: n, total: outbox_total });
    }

    // 1. The plain loop, on its own topology, deleted before the relay runs.
    eprintln!("messaging: plain confirmed-publish loop, {n} messages");
    let plain_secs = plain_loop(&amqp, plain_names, &messages).await?;
    drop(messages);
    for (q, expected) in [(&plain_names.inventory, routed), (&plain_names.email, routed_email)] {
        let depth = queue_counts(&amqp, q).await?.0 as i64;
        checks.push(("plain loop queue depth off", (depth - expected).abs()));
    }
    delete_topology(&amqp, plain_names).await;

    // 2. The relay on the backlog.
    eprintln!("messaging: relay, {n} outbox rows");
    let mut relay = Worker::start(env, "relay")?;
    let limit = Duration::from_secs(60) + Duration::from_millis(10) * n as u32;
    let all_published = format!(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL) THEN 0 ELSE {n} END::bigint, \
                extract(epoch FROM clock_timestamp())::float8"
    );
    let end = poll_until(&db, (&all_published, POLL), n, &mut [&mut relay], limit, "relay").await?;
    let start = float(&db, "SELECT extract(epoch FROM min(published_at))::float8 FROM outbox").await?;
    rss[0] = rss[0].max(relay.stop());
    let relay_rate = Rate { count: n as u64, secs: end - start };
    let queued = queue_counts(&amqp, &names.inventory).await?.0 as i64;
    let queued_email = queue_counts(&amqp, &names.email).await?.0 as i64;
    checks.push(("relay queue depth off", (queued - routed).abs() + (queued_email - routed_email).abs()));

    // 3. The inventory worker on the queue the relay filled.
    eprintln!("messaging: inventory worker, {queued} messages");
    let mut inventory = Worker::start(env, "inventory")?;
    let limit = Duration::from_secs(60) + Duration::from_millis(20) * queued as u32;
    let end = poll_until(
        &db,
        (
            "SELECT count(*), extract(epoch FROM clock_timestamp())::float8 FROM inbox WHERE consumer = 'inventory'",
            POLL_COUNT,
        ),
        queued,
        &mut [&mut inventory],
        limit,
        "inventory worker",
    )
    .await?;
    let start =
        float(&db, "SELECT extract(epoch FROM min(received_at))::float8 FROM inbox WHERE consumer = 'inventory'")
            .await?;
    rss[1] = rss[1].max(inventory.stop());
    let inventory_rate = Rate { count: queued as u64, secs: end - start };
    let inventory_commits = count(&db, "SELECT count(*) FROM reservations WHERE status = 'committed'").await?;
    checks.push(("audit violations (consumers) after the backlog", violations(&db, CONSUMED).await?));

    // 4. The email queue's backlog goes, so that the live step starts without one.
    let ch = amqp.create_channel().await?;
    ch.queue_purge(names.email.as_str().into(), QueuePurgeOptions::default()).await?;
    let _ = ch.close(200, "".into()).await;

    // 5. Live: the three workers beside the API under the purchase workload.
    let mut relay = Worker::start(env, "relay")?;
    let mut inventory = Worker::start(env, "inventory")?;
    let mut email = Worker::start(env, "email")?;
    // Connected: both consumers attached, and the relay has published the
    // events the inventory step wrote.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attached =
            queue_counts(&amqp, &names.inventory).await?.1 > 0 && queue_counts(&amqp, &names.email).await?.1 > 0;
        let unpublished = count(&db, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await?;
        if attached && unpublished == 0 {
            break;
        }
        for w in [&mut relay, &mut inventory, &mut email] {
            w.check_alive()?;
        }
        if Instant::now() > deadline {
            return Err(Error::NotUp("the workers"));
        }
        actix_web::rt::time::sleep(POLL).await;
    }
    eprintln!("messaging: purchases with the workers live, concurrency {LAG_CONCURRENCY}");
    let reserved = Rc::new(Cell::new(0u64));
    let charged = Rc::new(Cell::new(0u64));
    let one = {
        let (reserved, charged) = (reserved.clone(), charged.clone());
        move |task: usize, seq: u64, _measured: bool| {
            let (http, acc, reserved, charged) = (http.clone(), accounts.clone(), reserved.clone(), charged.clone());
            async move {
                let order = format!("e{task}-{seq}");
                let (w, r, c) = purchase(&http, &acc, &order, task * 7919 + seq as usize * 104_729).await;
                reserved.set(reserved.get() + r as u64);
                charged.set(charged.get() + c as u64);
                (w, None)
            }
        }
    };
    let (figures, purchase_wrong, _) = closed_loop(args, PURCHASE_WORKLOAD, LAG_CONCURRENCY, one).await;
    eprintln!("  {}", figures.row());
    // Quiet: every paid order of this step has its reservation committed and its email sent.
    let paid = count(&db, "SELECT count(*) FROM charges WHERE order_id LIKE 'e%'").await?;
    poll_until(
        &db,
        (
            "SELECT count(*), extract(epoch FROM clock_timestamp())::float8 FROM charges c \
          WHERE c.order_id LIKE 'e%' \
            AND EXISTS (SELECT 1 FROM reservations r WHERE r.tenant_id = c.tenant_id AND r.order_id = c.order_id \
                           AND r.status = 'committed') \
            AND EXISTS (SELECT 1 FROM emails m WHERE m.tenant_id = c.tenant_id AND m.order_id = c.order_id \
                           AND m.status = 'sent')",
            POLL_COUNT,
        ),
        paid,
        &mut [&mut relay, &mut inventory, &mut email],
        Duration::from_secs(120),
        "pipeline after the live purchases",
    )
    .await?;
    let row = db
        .query_one(
            "SELECT count(*), \
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0), \
                    coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0), \
                    coalesce(max(lag), 0) \
               FROM (SELECT extract(epoch FROM r.updated_at - c.created_at)::float8 * 1000 AS lag \
                       FROM charges c JOIN reservations r ON r.tenant_id = c.tenant_id AND r.order_id = c.order_id \
                      WHERE c.order_id LIKE 'e%' AND r.status = 'committed') l",
            &[],
        )
        .await?;
    let lag = Lag { orders: row.get(0), p50_ms: row.get(1), p99_ms: row.get(2), max_ms: row.get(3) };
    for (i, w) in [relay, inventory, email].into_iter().enumerate() {
        rss[i] = rss[i].max(w.stop());
    }

    // Effects over the whole run: the consumers did each thing once.
    checks.push(("audit violations (consumers)", violations(&db, CONSUMED).await?));
    let report = ledger::audit::audit(&db, ledger::audit::Options::default()).await?;
    for v in &report.violations {
        eprintln!("  VIOLATION {}: {}", v.invariant, v.row);
    }
    checks.push(("audit violations (ledger, stock, keys)", report.violations.len() as i64));
    let sent_live = count(&db, "SELECT count(*) FROM emails WHERE status = 'sent' AND order_id LIKE 'e%'").await?;
    checks.push(("live orders without one sent email", (paid - sent_live).abs()));
    let sent = count(&db, "SELECT count(*) FROM emails WHERE status = 'sent'").await?;
    let files = std::fs::read_dir(&env.email_dir).map(|d| d.count() as i64).unwrap_or(0);
    checks.push(("email files off", (files - sent).abs()));
    for q in [&names.inventory, &names.email] {
        checks.push(("messages left in the queues", queue_counts(&amqp, q).await?.0 as i64));
    }
    checks.push(("dead-lettered", queue_counts(&amqp, &names.dead_letter_queue).await?.0 as i64));
    let _ = amqp.close(200, "".into()).await;

    // One entry per check: a check made twice adds up.
    let mut merged: Vec<(&'static str, i64)> = Vec::new();
    for (what, n) in checks {
        match merged.iter_mut().find(|(w, _)| *w == what) {
            Some(m) => m.1 += n,
            None => merged.push((what, n)),
        }
    }
    Ok(Report {
        relay: relay_rate,
        plain: Rate { count: n as u64, secs: plain_secs },
        inventory: inventory_rate,
        inventory_commits,
        lag,
        rss_kib: rss,
        checks: merged,
        step_secs: 0.0,
        purchases: Some(figures),
        purchase_wrong,
        reserved: reserved.get(),
        charged: charged.get(),
    })
}
