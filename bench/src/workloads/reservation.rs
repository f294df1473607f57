//! Reservations: a fresh order on one of many SKUs, every tenth on the hot
//! one (reservations are not batched).

use std::cell::Cell;
use std::rc::Rc;

use serde_json::json;

use crate::error::Result;
use crate::load::{check_created, closed_loop, sku_for, Wrong};

use super::context::{At, Ctx, Workload};

pub(super) const WORKLOAD: Workload =
    Workload { name: "reservation", at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let http = ctx.http.clone();
    let created = Rc::new(Cell::new(0u64));
    let reserve = {
        let created = created.clone();
        move |task: usize, seq: u64, _measured: bool| {
            let (http, created) = (http.clone(), created.clone());
            async move {
                let order = format!("r{c}-{task}-{seq}");
                let sku = sku_for(task * 7919 + seq as usize * 31);
                let body = json!({"order_id": order, "sku": sku, "quantity": 1}).to_string().into_bytes();
                let mut w = Wrong::default();
                let r = http.post("/v1/reservations", &format!("hold:{order}"), body).await;
                if check_created(&mut w, &r) {
                    created.set(created.get() + 1);
                }
                (w, None)
            }
        }
    };
    let (f, w, _) = closed_loop(&ctx.args, WORKLOAD.name, c, reserve).await;
    ctx.reserved_total += created.get();
    ctx.note_rss();
    ctx.record(f, WORKLOAD.name, w);
    Ok(())
}
