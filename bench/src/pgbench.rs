//! The ceiling: pgbench running the statements of one charge, in the order the
//! service runs them, taken from the same constants the code executes.
//!
//! Per transaction the service runs: the API-key lookup and the read of a
//! completed answer under the key (outside the transaction), then BEGIN,
//! the idempotency claim, the buyer's row lock, the read of the accounts'
//! balances, the natural-key lookup, the posting (the buyer's row debited,
//! the seller and the platform credited on this session's slots), the charge insert, the outbox insert, the stored answer, COMMIT. pgbench runs exactly those, with `-M prepared`.
//! Its parameters come from one extra lookup before BEGIN (pgbench variables
//! are integers or fixed strings; fresh uuids and account ids need SQL),
//! which holds no lock.

use std::process::Command;

use crate::error::{Error, Result};
use crate::load::{new_hist, Figures};

/// Replaces `$N` with `:name` (highest N first so `$1` never eats `$10`).
fn bind(sql: &str, names: &[&str]) -> String {
    let mut out = sql.to_owned();
    for (i, name) in names.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), &format!(":{name}"));
    }
    assert!(!out.contains('$'), "unbound parameter in {out}");
    format!("{};\n", out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The pgbench script of one charge.
pub fn script(buyers: usize) -> String {
    let mut s = String::new();
    s.push_str(&format!("\\set b random(0, {})\n", buyers - 1));
    s.push_str(&bind(ledger::tenants::AUTHENTICATE_SQL, &["keyhash"]));
    // The values the service computes in Rust (ids, the order, the fingerprint).
    s.push_str(
        "SELECT buyer, seller, ARRAY[buyer, seller, :platform::uuid]::text AS ids, ARRAY[buyer]::text AS debited, \
         ARRAY[buyer, seller, :platform::uuid]::text AS legaccounts, \
         ARRAY[seller, :platform::uuid]::text AS slotaccounts, \
         gen_random_uuid() AS txid, gen_random_uuid() AS chargeid, gen_random_uuid() AS msgid, \
         'pg-' || gen_random_uuid() AS orderid FROM bench_pick WHERE n = :b \\gset\n",
    );
    s.push_str("SELECT sha256(convert_to(:orderid, 'UTF8')) AS fp \\gset\n");
    // The service looks for a completed answer under the key first (a miss for a new charge).
    s.push_str(&bind(ledger::idempotency::COMPLETED_SQL, &["tenant", "orderid", "retention"]));
    s.push_str("BEGIN;\n");
    s.push_str(&bind(ledger::idempotency::CLAIM_SQL, &["tenant", "orderid", "fp", "retention"]));
    s.push_str(&bind(ledger::posting::LOCK_ACCOUNTS_SQL, &["debited", "tenant"]));
    s.push_str(&bind(ledger::posting::READ_ACCOUNTS_SQL, &["ids", "tenant"]));
    s.push_str(&bind(&ledger::charges::find_order_sql(), &["tenant", "orderid"]));
    s.push_str(&bind(
        ledger::posting::POST_SQL,
        &[
            "txid",
            "tenant",
            "kind",
            "currency",
            "legs",
            "legaccounts",
            "legamounts",
            "debited",
            "debits",
            "slotaccounts",
            "credits",
        ],
    ));
    s.push_str(&bind(
        &ledger::charges::insert_sql(),
        &[
            "chargeid", "tenant", "orderid", "attempt", "buyer", "seller", "platform", "amount", "fee", "currency",
            "txid", "email",
        ],
    ));
    s.push_str(&bind(ledger::outbox::ENQUEUE_SQL, &["msgid", "tenant", "event", "orderid", "payload", "msgid"]));
    s.push_str(&bind(
        ledger::idempotency::STORE_SQL,
        &["tenant", "orderid", "status", "contenttype", "headers", "answer"],
    ));
    s.push_str("COMMIT;\n");
    s
}

/// Accounts the yardstick's transfers spread over.
pub const YARDSTICK_ACCOUNTS: usize = 50;

/// The yardstick: the smallest correct row-locked transfer in plain SQL, one
/// PL/pgSQL call that locks the two balance rows in id order, updates both and
/// inserts two entries. Every HTTP workload is reported as a ratio to it, so
/// that a figure means the same on another machine. Its tables live in the
/// benchmark's own database, apart from the service's.
pub fn yardstick_setup_sql() -> String {
    format!(
        "CREATE TABLE yard_accounts (id int PRIMARY KEY, balance numeric(24, 4) NOT NULL DEFAULT 0);
         CREATE TABLE yard_entries (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES yard_accounts (id),
                                    amount numeric(24, 4) NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO yard_accounts (id) SELECT generate_series(1, {YARDSTICK_ACCOUNTS});
         CREATE FUNCTION yard_transfer(src int, dst int, amount numeric) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM 1 FROM yard_accounts WHERE id IN (src, dst) ORDER BY id FOR UPDATE;
             UPDATE yard_accounts SET balance = balance - amount WHERE id = src;
             UPDATE yard_accounts SET balance = balance + amount WHERE id = dst;
             INSERT INTO yard_entries (account_id, amount) VALUES (src, -amount), (dst, amount);
         END $$;"
    )
}

/// One transfer per transaction between two distinct accounts picked at random.
pub fn yardstick_script() -> String {
    format!(
        "\\set src random(1, {n})\n\\set dst 1 + (:src + random(0, {m})) % {n}\nSELECT yard_transfer(:src, :dst, 1);\n",
        n = YARDSTICK_ACCOUNTS,
        m = YARDSTICK_ACCOUNTS - 2
    )
}

/// Runs the charge script at `concurrency` clients for `duration` seconds
/// (after a warm-up run) and reads every transaction's latency from
/// pgbench's log.
pub async fn run(
    duration: u64,
    warmup: u64,
    concurrency: usize,
    clients: usize,
    db_url: &str,
    buyers: usize,
    fixed: &[(&str, String)],
) -> Result<(Figures, Vec<Statement>)> {
    let workload =
        if clients == concurrency { "pgbench (charge SQL)".to_owned() } else { format!("pgbench ({clients} conns)") };
    run_script(&script(buyers), workload, duration, warmup, concurrency, clients, db_url, fixed).await
}

/// The yardstick at `concurrency` clients, as [`run`] runs the charge.
pub async fn run_yardstick(
    duration: u64,
    warmup: u64,
    concurrency: usize,
    clients: usize,
    db_url: &str,
) -> Result<(Figures, Vec<Statement>)> {
    let workload = if clients == concurrency { YARDSTICK.to_owned() } else { format!("{YARDSTICK} ({clients} conns)") };
    run_script(&yardstick_script(), workload, duration, warmup, concurrency, clients, db_url, &[]).await
}

/// The yardstick's workload name.
pub const YARDSTICK: &str = "yardstick (transfer)";

#[allow(clippy::too_many_arguments)]
async fn run_script(
    script: &str,
    workload: String,
    duration: u64,
    warmup: u64,
    concurrency: usize,
    clients: usize,
    db_url: &str,
    fixed: &[(&str, String)],
) -> Result<(Figures, Vec<Statement>)> {
    let dir = std::env::temp_dir().join(format!("ledger-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let script_path = dir.join("script.sql");
    std::fs::write(&script_path, script)?;
    let prefix = dir.join("log");
    let pgbench = |secs: u64, log: bool| {
        let mut cmd = Command::new("pgbench");
        cmd.args(["-n", "-M", "prepared", "-c", &clients.to_string()])
            .args(["-j", &clients.min(2).to_string(), "-T", &secs.to_string()])
            .arg("-f")
            .arg(&script_path);
        for (name, value) in fixed {
            cmd.arg("-D").arg(format!("{name}={value}"));
        }
        if log {
            // -r: the mean latency of every statement, where the time goes
            cmd.arg("-r").arg("-l").arg("--log-prefix").arg(&prefix);
        }
        cmd.arg(db_url);
        let out = cmd.output().map_err(|source| Error::Spawn { program: "pgbench".into(), source })?;
        if !out.status.success() {
            return Err(Error::Pgbench(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if warmup > 0 {
        pgbench(warmup, false)?;
    }
    let summary = pgbench(duration, true)?;
    let failed: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut hist = new_hist();
    let mut requests = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("log")) {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            // client_id transaction_no time script_no time_epoch time_us
            if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<u64>().ok()) {
                hist.record(us.max(1))?;
                requests += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed > 0 {
        return Err(Error::PgbenchFailed(failed));
    }
    Ok((Figures { workload, concurrency, requests, secs: duration as f64, hist, cpu: None }, statements(&summary)))
}

/// One statement of a script and its mean latency (pgbench `-r`).
pub struct Statement {
    pub ms: f64,
    pub sql: String,
}

/// The per-statement latencies pgbench `-r` prints after its summary:
/// `latency [failures] statement` per line, meta-commands included.
fn statements(summary: &str) -> Vec<Statement> {
    let Some((_, table)) = summary.split_once("statement latencies in milliseconds") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let mut words = line.split_whitespace().peekable();
        let Some(ms) = words.next().and_then(|w| w.parse::<f64>().ok()) else { break };
        if words.peek().is_some_and(|w| w.parse::<u64>().is_ok()) {
            words.next();
        }
        let sql: String = words.collect::<Vec<_>>().join(" ");
        out.push(Statement { ms, sql: sql.chars().take(72).collect() });
    }
    out
}
