//! Growth: does a new charge cost more once the ledger is large?
//!
//! The issue asks for new-charge p50/p99 with an empty ledger and with at
//! least 10 million entries in it, the target being p99 (grown) within 1.2×
//! of p99 (empty). This step runs after the HTTP workloads, against the same
//! `ledger-api serve` process, with the same new-charge request as the "new
//! charge" workload, at every configured concurrency, for the same warm-up and
//! duration:
//!
//! 1. "new charge (empty)": measured right before seeding. The ledger then
//!    only holds what the earlier workloads wrote (tens of thousands of
//!    entries); the other tables (idempotency keys, outbox, charges) have
//!    grown from them as well, and keep that size for both measurements, so
//!    the two runs differ only by the ledger's size, and sit back to back so
//!    that a noisy shared machine disturbs both alike.
//! 2. Seeding `--growth-entries` ledger entries with set-based SQL (below).
//! 3. "new charge (10M)" (the seeded count): measured right after, same
//!    settings.
//!
//! The ratio printed and written to the JSON (`growth`) is p99(grown) ÷
//! p99(empty) per concurrency.
//!
//! Seeded data. Each seeded ledger transaction has three legs, the split of a
//! marketplace sale: one of the bench's buyers is debited, one of its sellers
//! credited the amount minus a 10% fee, and the hot platform-fee account the
//! fee; so every transaction sums to zero, a third of the entries land on the
//! platform-fee account and the rest spread over every buyer and seller. The
//! transactions are of kind `transfer`, not `charge`: a charge transaction
//! belongs to a `charges` row (the bench checks one charge transaction per
//! charge), and seeding millions of charges too is out of the time budget;
//! this step measures the ledger tables. Ids are UUIDv7 with timestamps
//! spread over the past year, in order, like the ids the service generates;
//! `created_at` matches them. The amounts (1.00 to 49.99) leave the buyers'
//! funding far from zero. The accounts' cached balances are moved by the sum
//! of the seeded entries per account, read back from the table, so every
//! invariant of `ledger::audit` keeps holding.
//!
//! How it is seeded, in one database transaction, so that a failure leaves
//! the ledger as it was:
//! - `session_replication_role = replica` (the bench connects as superuser):
//!   no per-row triggers. The deferred zero-sum trigger would otherwise run
//!   one query per inserted row at commit; the foreign-key checks, also
//!   per-row triggers, are skipped too. Both are checked afterwards,
//!   set-based: the balance update must reach an account of the tenant, in
//!   that currency, for every account the seeded entries name, and one
//!   aggregate over the seeded entries finds every transaction with its three
//!   legs in one currency summing to zero.
//! - The indexes of `ledger_entries` (primary key, the (transaction, leg)
//!   unique constraint, the account-and-time index, the BRIN on time) are
//!   dropped before the inserts and rebuilt after, from their definitions
//!   read from the catalog. Maintaining them row by row costs about 60% of
//!   the load (22 s against 8.5 s per million entries on the loaded 2-core
//!   test machine); building them with a sort is several times faster. The
//!   rebuild re-checks uniqueness. The trade-off: the rebuilt indexes are
//!   packed as a fresh build, denser than ones grown by years of inserts;
//!   their depth, what a lookup pays, is the same at this size (three
//!   levels). `ledger_transactions` keeps its primary key (referenced by
//!   foreign keys; ordered ids append cheaply).
//! - Inserts in chunks of `CHUNK` transactions, each one statement:
//!   `generate_series` → ledger transactions and their entries (a
//!   data-modifying CTE), joined to the buyers and sellers passed as arrays.
//!
//! Then `VACUUM ANALYZE` of the seeded tables (the planner sees the real
//! sizes and the visibility map is set) and a `CHECKPOINT`, so that writing
//! back the seeded pages does not land in the grown measurement. Each phase
//! is timed and printed.

use std::rc::Rc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::history;
use crate::load::{closed_loop, new_charge, round, Accounts, Args, Figures, Http, Wrong};

/// Ledger transactions per insert statement (three entries each).
const CHUNK: i64 = 500_000;

/// Legs per seeded transaction.
const LEGS: i64 = 3;

/// One chunk: transactions `$5..=$6` of `$7`, for tenant `$1`, buyers `$2`,
/// sellers `$3`, platform-fee account `$4`.
const SEED_SQL: &str = "
WITH buyer AS (
    SELECT id, (i - 1) AS i FROM unnest($2::uuid[]) WITH ORDINALITY AS b(id, i)
), seller AS (
    SELECT id, (i - 1) AS i FROM unnest($3::uuid[]) WITH ORDINALITY AS s(id, i)
), g AS MATERIALIZED (
    SELECT s.n, s.ts,
           (lpad(to_hex((extract(epoch FROM s.ts) * 1000)::bigint << 16 | x'7000'::int), 16, '0')
             || to_hex(s.n | (-9223372036854775808)::bigint))::uuid AS id,
           (100 + s.n % 4900)::numeric / 100 AS amount,
           buyer.id AS buyer, seller.id AS seller
      FROM (SELECT n, now() - interval '365 days' + n * (interval '365 days' / $7::bigint) AS ts
              FROM generate_series($5::bigint, $6::bigint) AS n) s
      JOIN buyer ON buyer.i = (s.n * 7919) % cardinality($2::uuid[])
      JOIN seller ON seller.i = (s.n * 104729) % cardinality($3::uuid[])
), t AS (
    INSERT INTO ledger_transactions (id, tenant_id, kind, currency, created_at)
    SELECT g.id, $1, 'transfer', 'USD', g.ts FROM g
)
INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency, created_at)
SELECT g.id, l.leg,
       CASE l.leg WHEN 0 THEN g.buyer WHEN 1 THEN g.seller ELSE $4::uuid END,
       CASE l.leg WHEN 0 THEN -g.amount
                  WHEN 1 THEN g.amount - round(g.amount / 10, 2)
                  ELSE round(g.amount / 10, 2) END,
       'USD', g.ts
  FROM g CROSS JOIN (VALUES (0::int2), (1::int2), (2::int2)) AS l(leg)
 ORDER BY g.n, l.leg";

/// What the growth step measured.
pub struct Growth {
    pub seeded: i64,
    pub entries_before: i64,
    pub entries_after: i64,
    pub seed_secs: f64,
    pub vacuum_secs: f64,
    pub checkpoint_secs: f64,
    /// (empty, grown) per concurrency.
    pub pairs: Vec<(Figures, Figures)>,
    /// The history reads (`history`), (empty, grown) per read and concurrency.
    pub history: Vec<(Figures, Figures)>,
    /// Entries of the account the history reads read, before and after.
    pub history_entries: (i64, i64),
    /// Bringing the balance checkpoints up to date over the seeded history.
    pub checkpoints_secs: f64,
    /// The migrations of the history indexes, run again on the grown table
    /// (down, then up): (migration, seconds of its up).
    pub migrations: Vec<(String, f64)>,
    /// Charges created (201) by both measurements.
    pub created: u64,
    pub wrong: Vec<(String, usize, Wrong)>,
}

impl Growth {
    /// "10M", "200k": the grown row's label.
    fn size(&self) -> String {
        let n = self.seeded;
        if n >= 1_000_000 {
            format!("{}M", (n as f64 / 1e5).round() / 10.0)
        } else if n >= 1_000 {
            format!("{}k", n / 1_000)
        } else {
            n.to_string()
        }
    }

    pub fn rows(&self) -> impl Iterator<Item = &Figures> {
        self.pairs.iter().chain(&self.history).flat_map(|(e, g)| [e, g])
    }

    /// The history reads' p99(grown) ÷ p99(empty): (read, concurrency, ratio).
    pub fn history_ratios(&self) -> Vec<(&str, usize, f64)> {
        self.history
            .iter()
            .map(|(e, g)| (e.workload.rsplit_once(" (").map_or("", |(n, _)| n), e.concurrency, p99(g) / p99(e)))
            .collect()
    }

    /// p99(grown) ÷ p99(empty) per concurrency.
    pub fn ratios(&self) -> Vec<(usize, f64)> {
        self.pairs.iter().map(|(e, g)| (e.concurrency, p99(g) / p99(e))).collect()
    }

    pub fn json(&self) -> Value {
        json!({
            "entries_seeded": self.seeded,
            "entries_before": self.entries_before,
            "entries_after": self.entries_after,
            "seed_secs": round(self.seed_secs),
            "vacuum_analyze_secs": round(self.vacuum_secs),
            "checkpoint_secs": round(self.checkpoint_secs),
            "target_p99_ratio": 1.2,
            "checkpoints_secs": round(self.checkpoints_secs),
            "history_index_migrations_secs": self.migrations.iter().map(|(m, s)| json!({"migration": m, "secs": round(*s)})).collect::<Vec<_>>(),
            "history": {
                "account_entries_before": self.history_entries.0,
                "account_entries_after": self.history_entries.1,
                "reads": self.history.iter().map(|(e, g)| json!({
                    "read": e.workload.rsplit_once(" (").map_or("", |(n, _)| n),
                    "concurrency": e.concurrency,
                    "empty": e.json(),
                    "grown": g.json(),
                    "p50_ratio": round(p50(g) / p50(e)),
                    "p99_ratio": round(p99(g) / p99(e)),
                })).collect::<Vec<_>>(),
            },
            "by_concurrency": self.pairs.iter().map(|(e, g)| json!({
                "concurrency": e.concurrency,
                "empty": e.json(),
                "grown": g.json(),
                "p50_ratio": round(p50(g) / p50(e)),
                "p99_ratio": round(p99(g) / p99(e)),
            })).collect::<Vec<_>>(),
        })
    }
}

fn p50(f: &Figures) -> f64 {
    f.hist.value_at_quantile(0.5).max(1) as f64
}

fn p99(f: &Figures) -> f64 {
    f.hist.value_at_quantile(0.99).max(1) as f64
}

/// A seeding statement that failed, with PostgreSQL's code and message.
fn err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::Seeding(format!("{}: {}", db.code().code(), db.message())),
        None => Error::Postgres(e),
    }
}

/// Measures new charges at every concurrency, labelled `label`, orders
/// prefixed `prefix` (unique per measurement: an order id is also the key).
async fn measure(
    args: &Args,
    http: &Rc<Http>,
    acc: &Rc<Accounts>,
    label: &str,
    prefix: &str,
    created: &mut u64,
    wrong: &mut Vec<(String, usize, Wrong)>,
) -> Vec<Figures> {
    let mut out = Vec::new();
    for &c in &args.concurrency {
        let (http, acc) = (http.clone(), acc.clone());
        let prefix = format!("{prefix}{c}");
        let one = move |task: usize, seq: u64, _measured: bool| {
            new_charge(http.clone(), acc.clone(), format!("{prefix}-{task}-{seq}"), task, seq)
        };
        eprintln!("{label}, concurrency {c}");
        let (f, w, sent) = closed_loop(args, label, c, one).await;
        *created += sent.iter().filter(|s| s.status == 201).count() as u64;
        eprintln!("  {}", f.row());
        wrong.push((label.to_owned(), c, w));
        out.push(f);
    }
    out
}

/// The migrations that build the indexes the history reads use: (name,
/// down, up), as `diesel` runs them (each one statement, outside a
/// transaction).
const HISTORY_MIGRATIONS: [(&str, &str, &str); 2] = [
    (
        "2026-12-05-000023_entries_by_account_and_time",
        include_str!("../../migrations/2026-12-05-000023_entries_by_account_and_time/down.sql"),
        include_str!("../../migrations/2026-12-05-000023_entries_by_account_and_time/up.sql"),
    ),
    (
        "2026-12-05-000055_entries_by_time",
        include_str!("../../migrations/2026-12-05-000055_entries_by_time/down.sql"),
        include_str!("../../migrations/2026-12-05-000055_entries_by_time/up.sql"),
    ),
];

/// Entries of the ledger, or of one account.
async fn count_entries(db: &Client, account: Option<&str>) -> Result<i64> {
    let row = match account {
        None => db.query_one("SELECT count(*) FROM ledger_entries", &[]).await,
        Some(a) => {
            let id = Uuid::parse_str(a).map_err(|e| Error::Seeding(format!("account id {a}: {e}")))?;
            db.query_one("SELECT count(*) FROM ledger_entries WHERE account_id = $1", &[&id]).await
        }
    };
    row.map(|r| r.get(0)).map_err(err)
}

/// The growth step: measure, seed, measure.
pub async fn run(args: &Args, db_url: &str, http: &Rc<Http>, acc: &Rc<Accounts>) -> Result<Growth> {
    let mut created = 0;
    let mut wrong = Vec::new();
    let empty = measure(args, http, acc, "new charge (empty)", "ge", &mut created, &mut wrong).await;

    let (mut db, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await.map_err(err)?;
    actix_web::rt::spawn(conn);
    history::checkpoint(&mut db).await?;
    let points = history::points(&db, &acc.platform).await?;
    let account_before = count_entries(&db, Some(&acc.platform)).await?;
    let history_empty = history::measure(args, http, &acc.platform, &points, "empty", &mut wrong).await;

    let entries_before = count_entries(&db, None).await?;
    let transactions = (args.growth_entries as i64 + LEGS - 1) / LEGS;
    let seeded = transactions * LEGS;
    eprintln!("growth: seeding {seeded} ledger entries ({transactions} transactions)");
    let t0 = Instant::now();
    seed(&db, acc, transactions).await?;
    let seed_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    db.batch_execute("VACUUM ANALYZE ledger_entries, ledger_transactions, accounts").await.map_err(err)?;
    let vacuum_secs = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    db.batch_execute("CHECKPOINT").await.map_err(err)?;
    let checkpoint_secs = t2.elapsed().as_secs_f64();
    let entries_after = count_entries(&db, None).await?;
    eprintln!(
        "growth: {seeded} entries seeded in {seed_secs:.1} s, VACUUM ANALYZE {vacuum_secs:.1} s, \
         CHECKPOINT {checkpoint_secs:.1} s; ledger_entries: {entries_before} before, {entries_after} after"
    );

    // The seeded entries are stamped in the past year, behind the history
    // horizon, where the service never stamps one: the horizon goes back
    // and the checkpoints are made again over the whole history, timed.
    db.batch_execute(
        "DELETE FROM balance_checkpoints; DELETE FROM balance_settled; \
         UPDATE history_horizon SET settled_to = '1970-01-01Z'",
    )
    .await
    .map_err(err)?;
    let checkpoints_secs = history::checkpoint(&mut db).await?;
    eprintln!("growth: balance checkpoints over {entries_after} entries in {checkpoints_secs:.1} s");
    // The history indexes' migrations, again on the grown table: how long
    // each takes on this many entries (built CONCURRENTLY: writes go on).
    let mut migrations = Vec::new();
    for (name, down, up) in HISTORY_MIGRATIONS {
        db.batch_execute(down).await.map_err(err)?;
        let t = Instant::now();
        db.batch_execute(up).await.map_err(err)?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!("growth: migration {name} (up) on {entries_after} entries: {secs:.1} s");
        migrations.push((name.to_owned(), secs));
    }
    db.batch_execute("ANALYZE ledger_entries, balance_checkpoints").await.map_err(err)?;
    let points = history::points(&db, &acc.platform).await?;
    let account_after = count_entries(&db, Some(&acc.platform)).await?;

    let mut growth = Growth {
        seeded,
        entries_before,
        entries_after,
        seed_secs,
        vacuum_secs,
        checkpoint_secs,
        pairs: Vec::new(),
        history: Vec::new(),
        history_entries: (account_before, account_after),
        checkpoints_secs,
        migrations,
        created: 0,
        wrong: Vec::new(),
    };
    let label = format!("new charge ({})", growth.size());
    let grown = measure(args, http, acc, &label, "gg", &mut created, &mut wrong).await;
    growth.pairs = empty.into_iter().zip(grown).collect();
    let history_grown = history::measure(args, http, &acc.platform, &points, &growth.size(), &mut wrong).await;
    growth.history = history_empty.into_iter().zip(history_grown).collect();
    growth.created = created;
    growth.wrong = wrong;
    Ok(growth)
}

/// Seeds `transactions` three-leg ledger transactions in one database
/// transaction (see the module docs).
async fn seed(db: &Client, acc: &Accounts, transactions: i64) -> Result<()> {
    let parse = |s: &String| Uuid::parse_str(s).map_err(|e| Error::Seeding(format!("account id {s}: {e}")));
    let buyers = acc.buyers.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let sellers = acc.sellers.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
    let platform = parse(&acc.platform)?;
    let tenant: Uuid =
        db.query_one("SELECT tenant_id FROM accounts WHERE id = $1", &[&platform]).await.map_err(err)?.get(0);

    db.batch_execute(
        "SET session_replication_role = replica; SET jit = off; SET maintenance_work_mem = '256MB'; \
         SET work_mem = '64MB'; BEGIN",
    )
    .await
    .map_err(err)?;
    let first: i64 = db.query_one("SELECT coalesce(max(id), 0) FROM ledger_entries", &[]).await.map_err(err)?.get(0);

    // The indexes of ledger_entries, as the catalog defines them.
    let mut drops = Vec::new();
    let mut rebuild = Vec::new();
    for row in db
        .query(
            "SELECT i.relname, c.conname, pg_get_constraintdef(c.oid), pg_get_indexdef(i.oid) \
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
               LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid \
              WHERE x.indrelid = 'ledger_entries'::regclass ORDER BY i.relname",
            &[],
        )
        .await
        .map_err(err)?
    {
        let index: String = row.get(0);
        match (row.get::<_, Option<String>>(1), row.get::<_, Option<String>>(2)) {
            (Some(name), Some(def)) => {
                drops.push(format!("ALTER TABLE ledger_entries DROP CONSTRAINT \"{name}\""));
                rebuild.push(format!("ALTER TABLE ledger_entries ADD CONSTRAINT \"{name}\" {def}"));
            }
            _ => {
                drops.push(format!("DROP INDEX \"{index}\""));
                rebuild.push(row.get::<_, String>(3));
            }
        }
    }
    db.batch_execute(&drops.join("; ")).await.map_err(err)?;

    let t = Instant::now();
    let mut lo = 1i64;
    while lo <= transactions {
        let hi = (lo + CHUNK - 1).min(transactions);
        db.execute(SEED_SQL, &[&tenant, &buyers, &sellers, &platform, &lo, &hi, &transactions]).await.map_err(err)?;
        eprintln!("  {} of {} entries ({:.1} s)", hi * LEGS, transactions * LEGS, t.elapsed().as_secs_f64());
        lo = hi + 1;
    }
    let insert_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    db.batch_execute(&rebuild.join("; ")).await.map_err(err)?;
    let index_secs = t.elapsed().as_secs_f64();

    // The checks the triggers would have made, set-based. First the cached
    // balances: they move by the seeded entries, and every account those name
    // must be an account of the tenant in their currency.
    let t = Instant::now();
    // The slot rows folded into their accounts' rows first (no request runs
    // meanwhile): a buyer's funding may still sit on a slot, and its row
    // alone, never below zero by a CHECK, could not take the seeded debits.
    db.batch_execute(
        "UPDATE accounts a SET balance = a.balance + k.sum \
           FROM (SELECT account_id, sum(balance) AS sum FROM account_slots GROUP BY account_id) k \
          WHERE a.id = k.account_id; \
         UPDATE account_slots SET balance = 0 WHERE balance <> 0",
    )
    .await
    .map_err(err)?;
    let row = db
        .query_one(
            "WITH s AS (SELECT account_id, currency, sum(amount) AS delta FROM ledger_entries \
                         WHERE id > $1 GROUP BY account_id, currency), \
                  u AS (UPDATE accounts a SET balance = a.balance + s.delta FROM s \
                         WHERE a.id = s.account_id AND a.currency = s.currency AND a.tenant_id = $2 RETURNING 1) \
             SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM u)",
            &[&first, &tenant],
        )
        .await
        .map_err(err)?;
    let (named, moved): (i64, i64) = (row.get(0), row.get(1));
    if named != moved {
        return Err(Error::Seeding(format!("the entries name {named} accounts, {moved} of them exist")));
    }
    // Then every seeded transaction: all its legs, in one currency, summing
    // to zero. Grouping millions of transactions in a hash table spills to
    // disk (22 s for 10M entries on the loaded test machine); the rebuilt
    // (transaction, leg) index hands them over in order (13 s), hence no
    // hash aggregate for this one query.
    db.batch_execute("SET LOCAL enable_hashagg = off").await.map_err(err)?;
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE sum <> 0 OR legs <> $2 OR min_currency <> max_currency) \
               FROM (SELECT sum(amount), count(*) AS legs, min(currency) AS min_currency, max(currency) AS max_currency \
                       FROM ledger_entries WHERE id > $1 GROUP BY transaction_id) t",
            &[&first, &LEGS],
        )
        .await
        .map_err(err)?;
    let (checked, broken): (i64, i64) = (row.get(0), row.get(1));
    if checked != transactions || broken != 0 {
        return Err(Error::Seeding(format!(
            "{checked} seeded transactions found (expected {transactions}), {broken} unbalanced"
        )));
    }
    let check_secs = t.elapsed().as_secs_f64();
    // The tenant's accounts existed through the seeded year: a balance at an
    // instant before an account's creation is zero, whatever its entries.
    db.execute(
        "UPDATE accounts SET created_at = now() - interval '366 days' \
          WHERE tenant_id = $1 AND created_at > now() - interval '366 days'",
        &[&tenant],
    )
    .await
    .map_err(err)?;
    db.batch_execute("COMMIT; RESET session_replication_role").await.map_err(err)?;
    eprintln!(
        "  inserts {insert_secs:.1} s, index rebuild {index_secs:.1} s, \
         balances and zero-sum check {check_secs:.1} s ({moved} accounts)"
    );
    Ok(())
}
