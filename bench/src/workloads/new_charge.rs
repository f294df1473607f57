//! New charges: a fresh key and order per request, a buyer and seller spread
//! over many, the one hot platform-fee account; first against the API with
//! group commit, then against the second API process where every charge runs
//! alone in its transaction (`CHARGE_BATCH_MAX=1`), right after, so that the
//! two are compared on the same load.

use crate::batches;
use crate::error::Result;
use crate::load::{closed_loop, new_charge};

use super::context::{At, Ctx, Workload};

/// The batched workload's name: the baseline the fairness workloads compare with.
pub(super) const NAME: &str = "new charge";

pub(super) const BATCHED: Workload = Workload { name: NAME, at: At::Every, run: |ctx, c| Box::pin(batched(ctx, c)) };

pub(super) const ALONE: Workload =
    Workload { name: "new charge (alone)", at: At::Every, run: |ctx, c| Box::pin(alone(ctx, c)) };

async fn batched(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let one = move |task: usize, seq: u64, _measured: bool| {
        new_charge(http.clone(), acc.clone(), format!("o{c}-{task}-{seq}"), task, seq)
    };
    // The API's batch metrics around the workload, warm-up included.
    let scraped = batches::scrape(&ctx.http.client, &ctx.metrics).await?;
    let (f, w, sent) = closed_loop(&ctx.args, NAME, c, one).await;
    if ctx.sample_answer.is_empty() {
        if let Some(s) = sent.iter().find(|s| s.status == 201) {
            ctx.sample_answer = String::from_utf8_lossy(&s.answer).into_owned();
        }
    }
    ctx.created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
    ctx.note_rss();
    eprintln!("  {}", f.row());
    let profile = batches::Profile::between(c, &scraped, &batches::scrape(&ctx.http.client, &ctx.metrics).await?);
    eprintln!("  {}", profile.line());
    // The rate alone divides it once measured (`alone`).
    ctx.group_commit.push((profile, f.rps()));
    ctx.wrong_by.push((NAME.into(), c, w));
    ctx.results.push(f);
    // A request that failed is not stored: its retry would run afresh (and
    // it was counted wrong already), so only the created ones are replayed.
    ctx.replayable = sent.into_iter().filter(|s| s.status == 201).collect();
    Ok(())
}

async fn alone(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (http, acc) = (ctx.http_alone.clone(), ctx.accounts.clone());
    let one = move |task: usize, seq: u64, _measured: bool| {
        new_charge(http.clone(), acc.clone(), format!("a{c}-{task}-{seq}"), task, seq)
    };
    let (f, w, sent) = closed_loop(&ctx.args, ALONE.name, c, one).await;
    ctx.created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
    if let Some((_, batched)) = ctx.group_commit.last_mut() {
        *batched /= f.rps();
    }
    ctx.record(f, ALONE.name, w);
    Ok(())
}
