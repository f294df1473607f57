//! The lanes of a group commit, for every kind of batch the engine runs
//! (new wallet charges, [`super::charge_batch`]; new card charges' first
//! transactions, [`super::card_begins`]; card payments recorded,
//! [`super::card_records`]): requests are gathered into batches, and each
//! batch is one PostgreSQL transaction and one commit.
//!
//! When batches go out: a lone request on an idle service (nothing else
//! waiting, no batch of its kind in flight) at once; on a busy one, after
//! `CHARGE_BATCH_WINDOW_US` or at `CHARGE_BATCH_MAX` requests, whichever
//! comes first. Requests go to `CHARGE_BATCH_CONCURRENCY` lanes by the rows
//! they lock ([`Batch::lane`]), and each lane runs one batch at a time on
//! its own connection: requests that arrive meanwhile wait in its queue,
//! which is what makes the next batch big under load, and batches in
//! flight together never share those rows, so none waits for another's
//! row locks.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ledger::idempotency::{Answer, Stored};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// How batches are formed (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub max: usize,
    pub window: Duration,
    pub concurrency: usize,
}

/// What a batch made of a request.
pub enum Reply {
    /// Committed: the answer, stored for the key.
    Answer(Answer),
    /// The key's request completed before: its stored answer, for the
    /// handler to replay (or refuse, for another request under the key).
    Replay(Stored),
    /// An effect at the provider, committed in flight (the key marked with
    /// its recovery point, no answer stored): the provider is to be asked.
    InFlight(uuid::Uuid),
    /// Refused, nothing written: the error it gets alone (not stored).
    Failed(ApiError),
    /// Not decided by the batch: run it alone.
    Alone,
}

/// A kind of batch: its requests, and the one transaction that runs many.
pub trait Batch: Send + Sync + 'static {
    /// A request, with the channel its [`Reply`] goes back on.
    type Job: Send + 'static;
    /// Requests that lock the same rows map to the same lane.
    fn lane(job: &Self::Job) -> u128;
    /// Runs `jobs` as one batch and replies to each (a job dropped without
    /// a reply runs alone).
    fn run(&self, jobs: Vec<Self::Job>) -> impl Future<Output = ()> + Send;
}

/// The handlers' end of a kind of batch: one queue per lane.
pub struct Batcher<B: Batch> {
    lanes: Arc<[mpsc::UnboundedSender<B::Job>]>,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Batcher { lanes: self.lanes.clone() }
    }
}

impl<B: Batch> Batcher<B> {
    /// Starts one task per lane on the current runtime; each ends when every
    /// `Batcher` is dropped and its queue is empty.
    pub fn start(batch: B, shape: Shape) -> Batcher<B> {
        let batch = Arc::new(batch);
        let busy = Arc::new(AtomicUsize::new(0));
        let lanes: Vec<_> = (0..shape.concurrency)
            .map(|_| {
                let (queue, jobs) = mpsc::unbounded_channel();
                tokio::spawn(lane(jobs, batch.clone(), shape, busy.clone()));
                queue
            })
            .collect();
        Batcher { lanes: lanes.into() }
    }

    /// Hands `job` to its lane's next batch and waits for its reply. A
    /// batch that vanished without replying (its task panicked) committed
    /// nothing this request could not find alone: the request runs alone.
    pub async fn submit(&self, job: impl FnOnce(oneshot::Sender<Reply>) -> B::Job) -> Reply {
        let (reply, answer) = oneshot::channel();
        let job = job(reply);
        let lane = (B::lane(&job) % self.lanes.len() as u128) as usize;
        if self.lanes[lane].send(job).is_err() {
            return Reply::Alone;
        }
        answer.await.unwrap_or(Reply::Alone)
    }
}

/// One lane: a batch at a time. `busy` counts the lanes of its kind with a
/// batch in flight.
async fn lane<B: Batch>(
    mut jobs: mpsc::UnboundedReceiver<B::Job>,
    batch: Arc<B>,
    shape: Shape,
    busy: Arc<AtomicUsize>,
) {
    // While a batch runs, requests gather in the queue for the next one.
    while let Some(first) = jobs.recv().await {
        let mut next = vec![first];
        while next.len() < shape.max {
            match jobs.try_recv() {
                Ok(job) => next.push(job),
                Err(_) => break,
            }
        }
        // Wait for more only on a busy process (more than one request
        // waiting, or another lane's batch in flight): an idle one sends a
        // lone request at once.
        if next.len() < shape.max && !shape.window.is_zero() && (next.len() > 1 || busy.load(Ordering::Relaxed) > 0) {
            let deadline = tokio::time::Instant::now() + shape.window;
            while next.len() < shape.max {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => next.push(job),
                    _ => break,
                }
            }
        }
        busy.fetch_add(1, Ordering::Relaxed);
        batch.run(next).await;
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}
