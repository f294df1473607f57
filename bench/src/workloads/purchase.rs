//! Purchases: a reservation, then the charge of the same order; the
//! latency is that of both.

use std::cell::Cell;
use std::rc::Rc;

use crate::error::Result;
use crate::load::{closed_loop, purchase};

use super::context::{At, Ctx, Workload};

pub(super) const WORKLOAD: Workload =
    Workload { name: "purchase (res+charge)", at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let reserved = Rc::new(Cell::new(0u64));
    let charged = Rc::new(Cell::new(0u64));
    let one = {
        let (reserved, charged) = (reserved.clone(), charged.clone());
        move |task: usize, seq: u64, _measured: bool| {
            let (http, acc, reserved, charged) = (http.clone(), acc.clone(), reserved.clone(), charged.clone());
            async move {
                let order = format!("p{c}-{task}-{seq}");
                let (w, r, paid) = purchase(&http, &acc, &order, task * 7919 + seq as usize * 104_729).await;
                reserved.set(reserved.get() + r as u64);
                charged.set(charged.get() + paid as u64);
                (w, None)
            }
        }
    };
    let (f, w, _) = closed_loop(&ctx.args, WORKLOAD.name, c, one).await;
    ctx.reserved_total += reserved.get();
    ctx.created_total += charged.get();
    ctx.note_rss();
    // its wrong answers (of both requests) are listed as "purchase"
    ctx.record(f, "purchase", w);
    Ok(())
}
