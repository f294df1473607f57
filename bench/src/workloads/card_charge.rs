//! New card charges through the fake provider: a figure beside the
//! wallet's (the provider's round trip between two transactions; card
//! charges are not batched).

use crate::error::Result;
use crate::load::{closed_loop, new_card_charge};

use super::context::{At, Ctx, Workload};

pub(super) const WORKLOAD: Workload =
    Workload { name: "new card charge", at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let card = move |task: usize, seq: u64, _measured: bool| {
        new_card_charge(http.clone(), acc.clone(), format!("k{c}-{task}-{seq}"), task, seq)
    };
    let (f, w, sent) = closed_loop(&ctx.args, WORKLOAD.name, c, card).await;
    ctx.created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
    ctx.note_rss();
    ctx.record(f, WORKLOAD.name, w);
    Ok(())
}
