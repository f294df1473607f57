//! Card payments recorded in batches (group commit of the card charge's
//! second transaction): concurrent card charges the provider has paid are
//! recorded in one PostgreSQL transaction of set-based statements
//! (`ledger::card_batch`), each with its final answer stored for its key,
//! instead of one transaction and one commit per request. Batches form and
//! go out as [`super::batches`] says.
//!
//! Every request keeps what it has alone ([`super::run_two_phase`]): its
//! payment recorded once, under its charge's row lock, with its answer
//! stored in the same transaction, or the answer another request stored
//! first. What the batch does not record (a charge another transaction
//! holds, one already final, a payment that does not match its charge, a
//! key that already has its answer) and every request of a batch that
//! failed is recorded alone after the batch, where it finds what the batch
//! did.

use deadpool_postgres::Pool;
use ledger::card_batch::{PaidCharge, Payment};
use ledger::idempotency::Answer;
use ledger::{Batched, TenantId};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::batches::{Batch, Reply};
use super::keyed::ToAnswer;
use crate::error::ApiError;

/// A paid card charge handed to the batcher.
pub struct Job {
    pub tenant: TenantId,
    pub charge_id: Uuid,
    pub key: String,
    pub payment: Payment,
    pub request_id: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// Card payments, recorded in batches.
pub struct CardRecords {
    pub pool: Pool,
    /// The answer a card charge's outcome gets: the one it gets alone
    /// (given at start: the batcher knows no route).
    pub answer: ToAnswer<ledger::charges::Charge>,
}

impl Batch for CardRecords {
    type Job = Job;

    /// Charges lock only their own rows (their accounts take the payments
    /// on slots): any lane will do.
    fn lane(job: &Job) -> u128 {
        job.charge_id.as_u128()
    }

    async fn run(&self, jobs: Vec<Job>) {
        let replies = match self.commit(&jobs).await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::warn!(error = %e, requests = jobs.len(), "a batch of card payments failed; each is recorded alone");
                jobs.iter().map(|_| Reply::Alone).collect()
            }
        };
        for (job, reply) in jobs.into_iter().zip(replies) {
            let _ = job.reply.send(reply);
        }
    }
}

impl CardRecords {
    /// One transaction for the whole batch; a reply per job, in order.
    async fn commit(&self, jobs: &[Job]) -> Result<Vec<Reply>, ApiError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let items: Vec<PaidCharge<'_>> = jobs
            .iter()
            .map(|j| PaidCharge {
                tenant: j.tenant,
                charge_id: j.charge_id,
                payment: &j.payment,
                request_id: j.request_id.as_deref(),
            })
            .collect();
        let results = ledger::card_batch::record_paid_many(&tx, &items).await?;
        let mut replies: Vec<Reply> = results
            .into_iter()
            .map(|r| match r {
                Batched::Done(Ok(outcome)) => Reply::Answer((self.answer)(outcome)),
                Batched::Done(Err(e)) => Reply::Failed(e.into()),
                Batched::Alone => Reply::Alone,
            })
            .collect();
        let answered: Vec<usize> = (0..jobs.len()).filter(|&i| matches!(replies[i], Reply::Answer(_))).collect();
        let answers: Vec<(TenantId, &str, &Answer)> = answered
            .iter()
            .filter_map(|&i| match &replies[i] {
                Reply::Answer(a) => Some((jobs[i].tenant, jobs[i].key.as_str(), a)),
                _ => None,
            })
            .collect();
        let stored = ledger::idempotency::store_final_many(&tx, &answers).await?;
        tx.commit().await?;
        // A key that had its answer already (stored by a retry first) or is
        // gone: alone, the request finds the charge recorded and answers as
        // that key does.
        for (&i, stored) in answered.iter().zip(stored) {
            if !stored {
                replies[i] = Reply::Alone;
            }
        }
        Ok(replies)
    }
}
