//! Fairness under abuse: new charges while wrong API keys flood the API
//! from the same address.
//!
//! At the first configured concurrency only (one figure; it takes a while),
//! a side task sends about [`BAD_PER_SEC`] requests a second, paced, spread
//! over [`SENDERS`] connections, each with a fresh random key of the right
//! shape (`lk_` and 64 lowercase hex digits) that no tenant has: the API
//! looks each up unless it refuses the address first, after a burst of
//! failures, with 429 `too_many_failed_authentications`. The new-charge
//! workload runs meanwhile, with the bench tenant's key, from the same
//! address (127.0.0.1): what keeps it working is that the API still answers
//! a key it has cached. Counted: the bad requests' answers (401, 429,
//! other), and the database's transactions over the run, from
//! `pg_stat_database` (what the flood costs the database, beside what the
//! legitimate charges do). The target is the legitimate p99 unchanged.
//!
//! A legitimate request refused with 429 `too_many_failed_authentications`
//! is counted apart (it wrote nothing) and left out of the latency and the
//! rate, which its microsecond answer would flatter; its client waits a
//! second before the next, as the answer's `Retry-After` asks. Any other
//! answer but 201 is a wrong one.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::load::{charge_body_by, check_created, closed_loop_timing, round, spread, Wrong};

use super::context::{At, Ctx, Workload};
use super::fairness::{Fairness, Target};
use super::new_charge;

const NAME: &str = "new charge (under bad keys)";

pub(super) const WORKLOAD: Workload = Workload { name: NAME, at: At::First, run: |ctx, c| Box::pin(run(ctx, c)) };

/// Wrong-key requests a second, all senders together.
const BAD_PER_SEC: f64 = 2_000.0;

/// Connections the wrong keys are spread over, one sender each.
const SENDERS: usize = 8;

/// How long an idle PostgreSQL backend may keep its counts before
/// `pg_stat_database` sees them (PostgreSQL 15: at most every second while
/// busy, within 10 s once idle), plus a margin.
const STATS_SETTLE: Duration = Duration::from_millis(11_000);

/// What the wrong keys were answered.
#[derive(Default)]
struct Bad {
    unauthorized: u64,
    refused: u64,
    other: u64,
    transport: u64,
}

impl Bad {
    fn total(&self) -> u64 {
        self.unauthorized + self.refused + self.other + self.transport
    }
}

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (stats, conn) = tokio_postgres::connect(&ctx.db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    let before = transactions(&stats).await?;

    let stop = Rc::new(Cell::new(false));
    let started = Instant::now();
    // A charge's body: what a client with a wrong key would send.
    let body = charge_body_by(&ctx.accounts, "bad-key", 0, 0);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            actix_web::rt::spawn(send_bad_keys(
                ctx.http.base.clone(),
                body.clone(),
                BAD_PER_SEC / SENDERS as f64,
                stop.clone(),
            ))
        })
        .collect();

    // The new-charge workload, its requests as that workload's.
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let (created, refused, legitimate) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let one = {
        let (created, refused, legitimate) = (created.clone(), refused.clone(), legitimate.clone());
        move |task: usize, seq: u64, _measured: bool| {
            let (http, acc) = (http.clone(), acc.clone());
            let (created, refused, legitimate) = (created.clone(), refused.clone(), legitimate.clone());
            async move {
                let i = spread(task, seq);
                let order = format!("b{c}-{task}-{seq}");
                let body = charge_body_by(&acc, &order, i % acc.buyers.len(), i);
                legitimate.set(legitimate.get() + 1);
                // Quiet: the refusals are counted here; a wrong answer is shown below.
                let r = http.send("/v1/charges", &format!("charge:{order}"), body).await;
                if let Ok((429, _, answer)) = &r {
                    if String::from_utf8_lossy(answer).contains("too_many_failed_authentications") {
                        refused.set(refused.get() + 1);
                        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
                        return (Wrong::default(), None, false);
                    }
                }
                let mut w = Wrong::default();
                if check_created(&mut w, &r) {
                    created.set(created.get() + 1);
                } else if let Ok((status, _, answer)) = &r {
                    eprintln!("  /v1/charges: {status} {}", String::from_utf8_lossy(answer));
                }
                (w, None, true)
            }
        }
    };
    let (f, w, _) = closed_loop_timing(&ctx.args, NAME, c, one).await;
    stop.set(true);
    let mut bad = Bad::default();
    for s in senders {
        let b = s.await.map_err(|_| Error::Panicked)?;
        bad.unauthorized += b.unauthorized;
        bad.refused += b.refused;
        bad.other += b.other;
        bad.transport += b.transport;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = transactions(&stats).await?;

    ctx.created_total += created.get();
    ctx.note_rss();
    eprintln!("  {}", f.row());
    ctx.wrong_by.push((NAME.into(), c, w));
    let (xacts, legitimate, refused) = (after - before, legitimate.get(), refused.get());
    let notes = vec![
        format!(
            "wrong keys: {} sent in {secs:.1} s ({:.0}/s, target {BAD_PER_SEC:.0}/s over {SENDERS} connections): \
             401 {}, 429 {}, other {}, transport errors {}",
            bad.total(),
            bad.total() as f64 / secs,
            bad.unauthorized,
            bad.refused,
            bad.other,
            bad.transport
        ),
        format!(
            "legitimate requests refused with 429 too_many_failed_authentications: {refused} of {legitimate} sent, \
             warm-up included (target 0; not in the figures)"
        ),
        // A wrong key answered 401 was looked up (one transaction); one
        // answered 429 was not.
        format!(
            "database transactions over the run: {xacts} ({:.0}/s, {:.2} per legitimate request); the wrong keys' \
             lookups among them: {} (one per 401)",
            xacts as f64 / secs,
            xacts as f64 / legitimate.max(1) as f64,
            bad.unauthorized
        ),
    ];
    let details = json!({
        "bad_keys": {
            "sent": bad.total(),
            "seconds": round(secs),
            "per_sec": round(bad.total() as f64 / secs),
            "target_per_sec": BAD_PER_SEC,
            "connections": SENDERS,
            "status_401": bad.unauthorized,
            "status_429": bad.refused,
            "other": bad.other,
            "transport_errors": bad.transport,
        },
        "legitimate_requests": legitimate,
        "legitimate_refused_429": refused,
        "db_transactions": xacts,
    });
    let baseline = ctx.figures(new_charge::NAME, c);
    let fairness = Fairness::new(f, new_charge::NAME, baseline, Target::Unchanged, notes, details);
    ctx.fairness.push(fairness);
    Ok(())
}

/// The bench database's transactions so far (committed and rolled back),
/// once every backend's counts have reached the statistics.
async fn transactions(db: &Client) -> Result<i64> {
    actix_web::rt::time::sleep(STATS_SETTLE).await;
    let row = db
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Sends wrong keys at `per_sec` on one connection until `stop`. Behind its
/// pace (an answer slower than the interval), it sends at once, and past a
/// tenth of a second behind it lets the missed sends go rather than burst.
async fn send_bad_keys(base: String, body: Vec<u8>, per_sec: f64, stop: Rc<Cell<bool>>) -> Bad {
    let client =
        awc::Client::builder().timeout(Duration::from_secs(10)).connector(awc::Connector::new().limit(1)).finish();
    let interval = Duration::from_secs_f64(1.0 / per_sec);
    let mut out = Bad::default();
    let mut next = Instant::now();
    while !stop.get() {
        let key = format!("lk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let sent = client
            .post(format!("{base}/v1/charges"))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Idempotency-Key", format!("bad:{}", uuid::Uuid::new_v4().simple())))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body.clone())
            .await;
        match sent {
            Ok(mut res) => {
                // read to the end, so that the connection is reused
                let _ = res.body().limit(1 << 16).await;
                match res.status().as_u16() {
                    401 => out.unauthorized += 1,
                    429 => out.refused += 1,
                    _ => out.other += 1,
                }
            }
            Err(_) => out.transport += 1,
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            actix_web::rt::time::sleep(next - now).await;
        } else if now - next > Duration::from_millis(100) {
            next = now;
        }
    }
    out
}
