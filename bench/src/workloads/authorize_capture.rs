//! Authorize now, capture later: a new order's authorization, then its
//! capture; the latency is that of both, the rate is of whole checkouts
//! (two requests each), beside the charge made at once.

use std::cell::Cell;
use std::rc::Rc;

use crate::error::Result;
use crate::load::{authorize_capture, closed_loop};

use super::context::{At, Ctx, Workload};

pub(super) const WORKLOAD: Workload =
    Workload { name: "authorize + capture", at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let captured = Rc::new(Cell::new(0u64));
    let one = {
        let captured = captured.clone();
        move |task: usize, seq: u64, _measured: bool| {
            let (http, acc, captured) = (http.clone(), acc.clone(), captured.clone());
            async move {
                let order = format!("ac{c}-{task}-{seq}");
                let (w, done) = authorize_capture(&http, &acc, &order, task * 7919 + seq as usize * 104_729).await;
                captured.set(captured.get() + done as u64);
                (w, None)
            }
        }
    };
    let (f, w, _) = closed_loop(&ctx.args, WORKLOAD.name, c, one).await;
    ctx.created_total += captured.get();
    ctx.note_rss();
    ctx.record(f, WORKLOAD.name, w);
    Ok(())
}
