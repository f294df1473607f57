//! Fairness under contention: new charges while one buyer's account row is
//! held by a transaction outside the service.
//!
//! A separate database connection runs `BEGIN; SELECT ... FOR UPDATE` on the
//! first buyer's row and holds it for the whole measurement (warm-up
//! included), then `ROLLBACK`. Meanwhile the new-charge workload runs over
//! all the other buyers against the batched API, plus one extra client that
//! keeps charging the locked buyer. A batch skips a buyer whose row another
//! transaction holds (`Locks::Skip` in the ledger) and leaves that charge to
//! run alone, where it waits for the row; so the other buyers' charges should
//! not wait behind it, and their p99 should stay within twice the plain
//! workload's. The locked buyer's requests are counted apart: each ends with
//! the API's answer to a lock wait past its `lock_timeout` (409 or 503), or
//! succeeds once the row is released; only another answer is a wrong one.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Error, Result};
use crate::load::{charge_body_by, closed_loop, new_charge_by, spread, Accounts, Http, Wrong};

use super::context::{At, Ctx, Workload};
use super::fairness::{Fairness, Target};
use super::new_charge;

const NAME: &str = "new charge (one buyer locked)";

pub(super) const WORKLOAD: Workload = Workload { name: NAME, at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

/// The buyer whose row is held (an index into the buyers): the first.
const LOCKED: usize = 0;

/// The locked buyer's client: what its requests were answered.
#[derive(Default)]
struct Locked {
    /// 201: created once the row was released.
    created: u64,
    /// 409 or 503: the lock wait ran past the API's timeout.
    timed_out: u64,
    wrong: Wrong,
    longest: Duration,
}

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let buyer = ctx.accounts.buyers[LOCKED].clone();
    // Its own connection (the bench's role, not the service's pool), so
    // that none of the service's timeouts cut the hold short.
    let (holder, conn) = tokio_postgres::connect(&ctx.db_url, tokio_postgres::NoTls).await?;
    actix_web::rt::spawn(conn);
    holder.batch_execute("BEGIN").await?;
    let held = holder.query("SELECT 1 FROM accounts WHERE id = $1::text::uuid FOR UPDATE", &[&buyer]).await?;
    if held.len() != 1 {
        return Err(Error::LockedBuyer(format!("no account row {buyer}")));
    }

    let stop = Rc::new(Cell::new(false));
    let locked = actix_web::rt::spawn(charge_locked(ctx.http.clone(), ctx.accounts.clone(), c, stop.clone()));

    // Every buyer but the locked one, picked as the new-charge workload picks.
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let others = acc.buyers.len() - 1;
    let one = move |task: usize, seq: u64, _measured: bool| {
        let (http, acc) = (http.clone(), acc.clone());
        async move {
            let i = spread(task, seq);
            new_charge_by(&http, &acc, format!("f{c}-{task}-{seq}"), LOCKED + 1 + i % others, i).await
        }
    };
    let (f, w, sent) = closed_loop(&ctx.args, NAME, c, one).await;
    stop.set(true);
    holder.batch_execute("ROLLBACK").await?;
    // The client's last request, waiting for the row until now, completes.
    let locked = locked.await.map_err(|_| Error::Panicked)?;

    ctx.created_total += sent.iter().filter(|s| s.status == 201).count() as u64 + locked.created;
    ctx.note_rss();
    eprintln!("  {}", f.row());
    ctx.wrong_by.push((NAME.into(), c, w));
    ctx.wrong_by.push((format!("{NAME}, the locked buyer's client"), c, locked.wrong));
    let note = format!(
        "the locked buyer's client: {} requests, {} answered 409/503 (lock timeout), {} created (201) after the \
         ROLLBACK, {} other; the longest took {:.2} s",
        locked.created + locked.timed_out + locked.wrong.total(),
        locked.timed_out,
        locked.created,
        locked.wrong.total(),
        locked.longest.as_secs_f64()
    );
    let details = json!({
        "locked_buyer_client": {
            "requests": locked.created + locked.timed_out + locked.wrong.total(),
            "lock_timeout_409_503": locked.timed_out,
            "created_after_rollback": locked.created,
            "other": locked.wrong.total(),
            "longest_secs": crate::load::round(locked.longest.as_secs_f64()),
        },
    });
    let baseline = ctx.figures(new_charge::NAME, c);
    let fairness = Fairness::new(f, new_charge::NAME, baseline, Target::AtMost(2.0), vec![note], details);
    ctx.fairness.push(fairness);
    Ok(())
}

/// Charges the locked buyer, one request at a time, until `stop`.
async fn charge_locked(http: Rc<Http>, acc: Rc<Accounts>, c: usize, stop: Rc<Cell<bool>>) -> Locked {
    let mut out = Locked::default();
    let mut seq = 0u64;
    while !stop.get() {
        let order = format!("l{c}-{seq}");
        let body = charge_body_by(&acc, &order, LOCKED, spread(0, seq));
        let t0 = Instant::now();
        // Quiet: its refusals are expected, and counted here.
        match http.send("/v1/charges", &format!("charge:{order}"), body).await {
            Ok((201, _, _)) => out.created += 1,
            Ok((409 | 503, _, _)) => out.timed_out += 1,
            Ok((status, _, answer)) => {
                eprintln!("  the locked buyer's charge: {status} {}", String::from_utf8_lossy(&answer));
                if (200..300).contains(&status) {
                    out.wrong.not_created += 1;
                } else {
                    out.wrong.non_2xx += 1;
                }
            }
            Err(_) => out.wrong.transport += 1,
        }
        out.longest = out.longest.max(t0.elapsed());
        seq += 1;
    }
    out
}
