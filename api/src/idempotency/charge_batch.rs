//! Charge batches (group commit), the engine's batched mode: concurrent
//! new wallet charges (`POST /v1/charges` with a buyer's wallet) are
//! gathered into batches, and each batch is one
//! PostgreSQL transaction of set-based statements (`ledger::charge_batch`)
//! and one commit, instead of one transaction and one commit per request.
//!
//! Every request of a batch keeps what it has alone: its Idempotency-Key
//! claimed (all of the batch's in one statement), its own outcome (its
//! charge and event, its decline, its error), its answer stored in the same
//! transaction and replayed byte for byte, all or none of it committed. A
//! request a batch does not decide runs alone through
//! [`super::run`] after the batch's commit, where it finds
//! what the batch did: a key used before or twice in the batch, a buyer
//! whose row another transaction holds (the batch skips it rather than
//! wait: one locked buyer never holds up strangers), a second charge of an
//! order in the batch, a buyer only a credit in the same batch could pay
//! for. When the batch itself fails (a statement error, a
//! deadlock, a lost connection) nothing of it is committed and every one of
//! its requests runs alone, so one bad request never fails its neighbours
//! (a batch of one request gets the error it would get alone).
//!
//! How batches form and go out is [`super::batches`]'s: requests go to
//! lanes by their buyer, so batches in flight together never share a buyer.

use std::collections::HashSet;

use deadpool_postgres::Pool;
use ledger::charge_batch::{Batched, BatchedCharge, Locks};
use ledger::charges::{Charge, NewCharge};
use ledger::idempotency::{Answer, KeyClaim};
use ledger::{Outcome, TenantId};
use tokio::sync::oneshot;

use super::batches::{Batch, Reply};
use super::crash_points;
use crate::error::{claim_failed, ApiError};

/// A request handed to the batcher.
pub struct Job {
    pub tenant: TenantId,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub charge: NewCharge,
    pub request_id: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// The answer stored and sent for a charge's outcome: the one a charge
/// alone gets (given at start: the batcher knows no route).
pub type ToAnswer = fn(Outcome<Charge>) -> Answer;

/// New wallet charges, batched.
pub struct Charges {
    pub pool: Pool,
    pub retention_secs: f64,
    pub answer: ToAnswer,
}

impl Batch for Charges {
    type Job = Job;

    /// A buyer always goes to the same lane: batches in flight at once
    /// never share a buyer, so none waits for another's row locks, and one
    /// buyer's charges are decided in the order they arrived.
    fn lane(job: &Job) -> u128 {
        job.charge.buyer.as_u128()
    }

    async fn run(&self, jobs: Vec<Job>) {
        metrics::histogram!("ledger_charge_batch_size").record(jobs.len() as f64);
        // A key twice in one batch: the first goes in, the others run alone
        // after the commit and replay its answer.
        let mut keys = HashSet::new();
        let (batch, again): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| keys.insert((j.tenant.0, j.key.clone())));
        let replies = match self.commit(&batch).await {
            Ok(replies) => replies,
            // A batch of one failed as the request would alone (the same
            // statements, one row each): its error is the answer, and a
            // lock wait is not waited twice.
            Err(e) if batch.len() == 1 => vec![Reply::Failed(e)],
            Err(e) => {
                tracing::warn!(error = %e, requests = batch.len(), "a batch of charges failed; each runs alone");
                metrics::counter!("ledger_charge_batches_failed_total").increment(1);
                batch.iter().map(|_| Reply::Alone).collect()
            }
        };
        for (job, reply) in batch.into_iter().zip(replies) {
            let _ = job.reply.send(reply);
        }
        for job in again {
            let _ = job.reply.send(Reply::Alone);
        }
    }
}

impl Charges {
    /// One transaction for the whole batch; a reply per job, in order.
    async fn commit(&self, jobs: &[Job]) -> Result<Vec<Reply>, ApiError> {
        let mut phase = Phases::start();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        phase.done("connection");
        let claims: Vec<KeyClaim<'_>> =
            jobs.iter().map(|j| KeyClaim { tenant: j.tenant, key: &j.key, fingerprint: &j.fingerprint }).collect();
        let owned = ledger::idempotency::claim_many(&tx, &claims, self.retention_secs).await.map_err(claim_failed)?;
        phase.done("claim");
        crash_points::keys_locked();
        let mine: Vec<usize> = (0..jobs.len()).filter(|i| owned[*i]).collect();
        let items: Vec<BatchedCharge<'_>> = mine
            .iter()
            .map(|&i| BatchedCharge {
                tenant: jobs[i].tenant,
                new: &jobs[i].charge,
                request_id: jobs[i].request_id.as_deref(),
            })
            .collect();
        let results = ledger::charge_batch::create_many(&tx, &items, Locks::Skip).await?;
        phase.done("charges");
        let mut replies: Vec<Reply> = jobs.iter().map(|_| Reply::Alone).collect();
        let mut release: Vec<(TenantId, &str)> = Vec::new();
        for (&i, result) in mine.iter().zip(results) {
            replies[i] = match result {
                Batched::Done(Ok(outcome)) => Reply::Answer((self.answer)(outcome)),
                Batched::Done(Err(e)) => {
                    release.push((jobs[i].tenant, &jobs[i].key));
                    Reply::Failed(e.into())
                }
                Batched::Alone => {
                    release.push((jobs[i].tenant, &jobs[i].key));
                    Reply::Alone
                }
            };
        }
        let stored: Vec<(TenantId, &str, &Answer)> = replies
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Reply::Answer(a) => Some((jobs[i].tenant, jobs[i].key.as_str(), a)),
                _ => None,
            })
            .collect();
        ledger::idempotency::store_many(&tx, &stored).await?;
        ledger::idempotency::release_many(&tx, &release).await?;
        phase.done("answers");
        tx.commit().await?;
        phase.done("commit");
        crash_points::committed();
        Ok(replies)
    }
}

/// Where a batch's time goes, phase by phase, as a histogram per phase
/// (`ledger_charge_batch_phase_seconds`): the connection and `BEGIN`, the
/// key claims, the charges (locks, reads, decisions and writes), the stored
/// answers, the commit (the WAL flush). `make bench` prints their means.
struct Phases(std::time::Instant);

impl Phases {
    fn start() -> Phases {
        Phases(std::time::Instant::now())
    }

    fn done(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!("ledger_charge_batch_phase_seconds", "phase" => phase).record((now - self.0).as_secs_f64());
        self.0 = now;
    }
}
