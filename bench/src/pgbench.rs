//! The ceiling: pgbench running the statements of one charge, in the order the
//! service runs them, taken from the same constants the code executes.
//!
//! Per transaction the service runs: the API-key lookup and the read of a
//! completed answer under the key (outside the transaction), then BEGIN,
//! the idempotency claim, the account locks, the natural-key lookup, the
//! posting, the charge insert, the outbox insert, the stored answer, COMMIT. pgbench runs exactly those, with `-M prepared`.
//! Its parameters come from one extra lookup before BEGIN (pgbench variables
//! are integers or fixed strings; fresh uuids and account ids need SQL),
//! which holds no lock.

use std::process::Command;

use crate::error::{Error, Result};
use crate::{new_hist, Figures};

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
        "SELECT buyer, seller, ARRAY[buyer, seller, :platform::uuid]::text AS ids, \
         ARRAY[buyer, seller, :platform::uuid]::text AS legaccounts, \
         gen_random_uuid() AS txid, gen_random_uuid() AS chargeid, gen_random_uuid() AS msgid, \
         'pg-' || gen_random_uuid() AS orderid FROM bench_pick WHERE n = :b \\gset\n",
    );
    s.push_str("SELECT sha256(convert_to(:orderid, 'UTF8')) AS fp \\gset\n");
    // The service looks for a completed answer under the key first (a miss for a new charge).
    s.push_str(&bind(ledger::idempotency::COMPLETED_SQL, &["tenant", "orderid", "retention"]));
    s.push_str("BEGIN;\n");
    s.push_str(&bind(ledger::idempotency::CLAIM_SQL, &["tenant", "orderid", "fp", "retention"]));
    s.push_str(&bind(ledger::posting::LOCK_ACCOUNTS_SQL, &["ids", "tenant"]));
    s.push_str(&bind(&ledger::charges::find_order_sql(), &["tenant", "orderid"]));
    s.push_str(&bind(
        ledger::posting::POST_SQL,
        &["txid", "tenant", "kind", "currency", "legs", "legaccounts", "legamounts", "ids", "legamounts"],
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

/// Runs the script at `concurrency` clients for `duration` seconds (after a
/// warm-up run) and reads every transaction's latency from pgbench's log.
pub async fn run(
    duration: u64,
    warmup: u64,
    concurrency: usize,
    clients: usize,
    db_url: &str,
    buyers: usize,
    fixed: &[(&str, String)],
) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!("ledger-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let script_path = dir.join("charge.sql");
    std::fs::write(&script_path, script(buyers))?;
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
            cmd.arg("-l").arg("--log-prefix").arg(&prefix);
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
    let workload =
        if clients == concurrency { "pgbench (charge SQL)".to_owned() } else { format!("pgbench ({clients} conns)") };
    Ok(Figures { workload, concurrency, requests, secs: duration as f64, hist })
}
