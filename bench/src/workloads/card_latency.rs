//! Card charges at a real provider's latency: the fake provider holds every
//! answer [`LATENCY_MS`] (`PUT /_fake/latency`, set back to 0 afterwards)
//! and [`CLIENTS`] clients charge cards at once, each its own order. A real
//! provider answers in hundreds of milliseconds, so card throughput is how
//! many charges can be in flight: none holds a pooled database connection
//! while the provider answers (`service::effects::ask`), so the API's pool
//! size does not cap them. The target: 1,000 a second.

use crate::error::{Error, Result};
use crate::load::{closed_loop, new_card_charge};

use super::context::{At, Ctx, Workload};

/// What the provider holds each answer, in milliseconds.
const LATENCY_MS: u64 = 300;
/// Clients charging at once.
const CLIENTS: usize = 512;

pub(super) const WORKLOAD: Workload =
    Workload { name: "card charge, 300 ms provider", at: At::First, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn set_latency(ctx: &Ctx, ms: u64) -> Result<()> {
    let url = format!("{}/_fake/latency", ctx.provider_url);
    let res = ctx.http.client.put(url).send_json(&serde_json::json!({ "ms": ms })).await;
    match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(Error::Http(format!("setting the provider's latency: {}", r.status()))),
        Err(e) => Err(Error::Http(format!("setting the provider's latency: {e}"))),
    }
}

async fn run(ctx: &mut Ctx, _: usize) -> Result<()> {
    set_latency(ctx, LATENCY_MS).await?;
    let (http, acc) = (ctx.http.clone(), ctx.accounts.clone());
    let card = move |task: usize, seq: u64, _measured: bool| {
        new_card_charge(http.clone(), acc.clone(), format!("kl-{task}-{seq}"), task, seq)
    };
    let (f, w, sent) = closed_loop(&ctx.args, WORKLOAD.name, CLIENTS, card).await;
    set_latency(ctx, 0).await?;
    ctx.created_total += sent.iter().filter(|s| s.status == 201).count() as u64;
    ctx.note_rss();
    ctx.record(f, WORKLOAD.name, w);
    Ok(())
}
