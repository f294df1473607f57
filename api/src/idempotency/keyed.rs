//! Batches of new requests under Idempotency-Keys (group commit), the
//! engine's batched mode: concurrent requests of one kind (new wallet
//! charges, [`super::charge_batch`]; new reservations,
//! [`super::reservation_batch`]; new card charges' first transactions,
//! [`super::card_begins`]) are gathered into batches, and each batch
//! is one PostgreSQL transaction of set-based statements and one commit,
//! instead of one transaction and one commit per request.
//!
//! Every request of a batch keeps what it has alone: its Idempotency-Key
//! claimed (all of the batch's in one statement), its own outcome (its
//! effect and event, its decline, its error), its answer stored in the same
//! transaction and replayed byte for byte, all or none of it committed. A
//! key whose request completed before is answered from the batch: its
//! stored answer, read by the statement that claims the others. A
//! request a batch does not decide runs alone through [`super::run`] after
//! the batch's commit, where it finds what the batch did: a key used before
//! by a request still running or in flight, a key twice in the batch, and
//! whatever its kind leaves alone (a row another
//! transaction holds, which the batch skips rather than wait: one locked
//! row never holds up strangers). When the batch itself fails (a statement
//! error, a deadlock, a lost connection) nothing of it is committed and
//! every one of its requests runs alone, so one bad request never fails its
//! neighbours.
//!
//! How batches form and go out is [`super::batches`]'s.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;

use deadpool_postgres::{Pool, Transaction};
use ledger::idempotency::{Answer, BatchClaim, KeyClaim, RecoveryPoint};
use ledger::{Batched, Outcome, TenantId};
use tokio::sync::oneshot;

use super::batches::{Batch, Batcher, Reply, Shape};
use super::crash_points;
use crate::error::{claim_failed, ApiError};

/// A request handed to a batcher: its key and what it asks for.
pub struct Job<I> {
    pub tenant: TenantId,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub item: I,
    pub request_id: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// What a kind of batch does between its keys' claim and its answers'
/// store, and how it is measured.
pub trait Effects: Send + Sync + 'static {
    /// A request's effect as asked for (owned: it goes to another task, and
    /// back to the handler when it runs alone).
    type Item: Clone + Send + Sync + 'static;
    /// What it makes.
    type Row: Send + 'static;
    /// Metrics: requests per batch, batches failed, seconds per phase.
    const SIZE_METRIC: &'static str;
    const FAILED_METRIC: &'static str;
    const PHASE_METRIC: &'static str;
    /// The name of the phase that decides and writes the effects.
    const PHASE: &'static str;
    /// Whether a batch of one that failed failed as the request would alone
    /// (the same statements, one row each): its error is then the answer,
    /// and a lock wait is not waited twice.
    const ONE_FAILS_AS_ALONE: bool;
    /// Requests that lock the same rows map to the same lane.
    fn lane(tenant: TenantId, item: &Self::Item) -> u128;
    /// The recovery point of an outcome left in flight at the payment
    /// provider (a card charge created, not yet sent): its key is marked
    /// with it instead of storing an answer, as alone ([`super::first`]).
    /// None for an effect the ledger decides by itself.
    fn in_flight(_outcome: &Outcome<Self::Row>) -> Option<RecoveryPoint> {
        None
    }
    /// Decides and writes the effects of `jobs` within `tx`; one result per
    /// job, in order. An `Err` is the batch's.
    fn apply(
        tx: &Transaction<'_>,
        jobs: &[&Job<Self::Item>],
    ) -> impl Future<Output = ledger::Result<Vec<Batched<Self::Row>>>> + Send;
}

/// The answer stored and sent for an outcome: the one the request gets
/// alone (given at start: a batcher knows no route).
pub type ToAnswer<R> = fn(Outcome<R>) -> Answer;

/// New requests of one kind (`E`), batched.
pub struct Keyed<E: Effects> {
    pool: Pool,
    retention_secs: f64,
    answer: ToAnswer<E::Row>,
    kind: PhantomData<E>,
}

impl<E: Effects> Batch for Keyed<E> {
    type Job = Job<E::Item>;

    fn lane(job: &Job<E::Item>) -> u128 {
        E::lane(job.tenant, &job.item)
    }

    async fn run(&self, jobs: Vec<Job<E::Item>>) {
        metrics::histogram!(E::SIZE_METRIC).record(jobs.len() as f64);
        // A key twice in one batch: the first goes in, the others run alone
        // after the commit and replay its answer.
        let mut keys = HashSet::new();
        let (batch, again): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| keys.insert((j.tenant.0, j.key.clone())));
        let replies = match self.commit(&batch).await {
            Ok(replies) => replies,
            Err(e) if batch.len() == 1 && E::ONE_FAILS_AS_ALONE => vec![Reply::Failed(e)],
            Err(e) => {
                tracing::warn!(error = %e, requests = batch.len(), phase = E::PHASE, "a batch failed; each request runs alone");
                metrics::counter!(E::FAILED_METRIC).increment(1);
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

impl<E: Effects> Keyed<E> {
    /// Its batcher, when batching is on (`shape`).
    pub fn start(
        shape: Option<Shape>,
        pool: &Pool,
        retention_secs: f64,
        answer: ToAnswer<E::Row>,
    ) -> Option<Batcher<Keyed<E>>> {
        shape
            .map(|shape| Batcher::start(Keyed { pool: pool.clone(), retention_secs, answer, kind: PhantomData }, shape))
    }

    /// One transaction for the whole batch; a reply per job, in order.
    async fn commit(&self, jobs: &[Job<E::Item>]) -> Result<Vec<Reply>, ApiError> {
        let mut phase = Phases::start(E::PHASE_METRIC);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        phase.done("connection");
        // A retry of a completed request is answered from its stored answer,
        // read for the whole batch in the statement that claims the others:
        // no read of its own before the batch, which every new request would
        // pay, and no claim, so a batch of retries writes nothing. A key this
        // batch does not own (still running, or completed since) runs alone.
        let claims: Vec<KeyClaim<'_>> =
            jobs.iter().map(|j| KeyClaim { tenant: j.tenant, key: &j.key, fingerprint: &j.fingerprint }).collect();
        let claimed =
            ledger::idempotency::claim_batch(&tx, &claims, self.retention_secs).await.map_err(claim_failed)?;
        let mut mine: Vec<usize> = Vec::new();
        let mut replies: Vec<Reply> = Vec::with_capacity(jobs.len());
        for (i, claim) in claimed.into_iter().enumerate() {
            replies.push(match claim {
                BatchClaim::Owned => {
                    mine.push(i);
                    Reply::Alone
                }
                BatchClaim::Stored(stored) => Reply::Replay(stored),
                BatchClaim::Other => Reply::Alone,
            });
        }
        phase.done("claim");
        crash_points::keys_locked();
        let claimed: Vec<&Job<E::Item>> = mine.iter().map(|&i| &jobs[i]).collect();
        let results = E::apply(&tx, &claimed).await?;
        phase.done(E::PHASE);
        let mut release: Vec<(TenantId, &str)> = Vec::new();
        let mut in_flight: Vec<(TenantId, &str, RecoveryPoint)> = Vec::new();
        for (&i, result) in mine.iter().zip(results) {
            replies[i] = match result {
                Batched::Done(Ok(outcome)) => match E::in_flight(&outcome) {
                    Some(point) => {
                        in_flight.push((jobs[i].tenant, &jobs[i].key, point));
                        Reply::InFlight(point.id())
                    }
                    None => Reply::Answer((self.answer)(outcome)),
                },
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
        ledger::idempotency::mark_in_flight_many(&tx, &in_flight).await?;
        ledger::idempotency::release_many(&tx, &release).await?;
        phase.done("answers");
        tx.commit().await?;
        phase.done("commit");
        // (an effect left in flight has its own crash point, its handler's)
        if !stored.is_empty() {
            crash_points::committed();
        }
        Ok(replies)
    }
}

/// Where a batch's time goes, phase by phase, as a histogram per phase
/// (`ledger_charge_batch_phase_seconds` for charges): the connection and
/// `BEGIN`, the key claims, the effects (locks, reads, decisions and
/// writes), the stored answers, the commit (the WAL flush). `make bench`
/// prints their means.
struct Phases {
    metric: &'static str,
    at: std::time::Instant,
}

impl Phases {
    fn start(metric: &'static str) -> Phases {
        Phases { metric, at: std::time::Instant::now() }
    }

    fn done(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!(self.metric, "phase" => phase).record((now - self.at).as_secs_f64());
        self.at = now;
    }
}
