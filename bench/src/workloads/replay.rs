//! Replays: the charges the new-charge workload created at the same
//! concurrency, sent again in turn; every answer must be the stored one
//! (`Idempotent-Replayed: true`, the same status and body).

use std::cell::Cell;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::load::{closed_loop, Wrong};

use super::context::{At, Ctx, Workload};

pub(super) const WORKLOAD: Workload = Workload { name: "replay", at: At::Every, run: |ctx, c| Box::pin(run(ctx, c)) };

async fn run(ctx: &mut Ctx, c: usize) -> Result<()> {
    let sent = std::mem::take(&mut ctx.replayable);
    if sent.is_empty() {
        return Err(Error::NothingToReplay);
    }
    let sent = Rc::new(sent);
    let next = Rc::new(Cell::new(0usize));
    let http = ctx.http.clone();
    let replay = move |_task: usize, _seq: u64, _measured: bool| {
        let (http, sent, next) = (http.clone(), sent.clone(), next.clone());
        async move {
            let i = next.get();
            next.set((i + 1) % sent.len());
            let s = &sent[i];
            let mut w = Wrong::default();
            match http.post("/v1/charges", &s.key, s.body.clone()).await {
                Ok((status, replayed, answer)) => {
                    if !(200..300).contains(&status) {
                        w.non_2xx += 1;
                    } else if !replayed {
                        w.not_replayed += 1;
                    } else if status != s.status || answer != s.answer {
                        w.replay_differs += 1;
                    }
                }
                Err(_) => w.transport += 1,
            }
            (w, None)
        }
    };
    let (f, w, _) = closed_loop(&ctx.args, WORKLOAD.name, c, replay).await;
    ctx.note_rss();
    ctx.record(f, WORKLOAD.name, w);
    Ok(())
}
