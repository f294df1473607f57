//! Charge batches (group commit of new wallet charges, `POST /v1/charges`
//! with a buyer's wallet): a [`super::keyed`] batch whose effects are
//! decided and written by `ledger::charge_batch`. Besides what every keyed
//! batch leaves alone, a charge runs alone after the batch when its buyer's
//! row is held by another transaction (skipped, not waited for: one locked
//! buyer never holds up strangers), when it is a second charge of an order
//! in the batch, or when only a credit in the same batch could pay for it.
//! Requests go to lanes by their buyer, so batches in flight together never
//! share a buyer, and one buyer's charges are decided in the order they
//! arrived. A batch of one request that fails answers with the error it
//! would get alone (the same statements, one row each).

use deadpool_postgres::Transaction;
use ledger::charge_batch::{BatchedCharge, Locks};
use ledger::charges::{Charge, NewCharge};
use ledger::{Batched, TenantId};

use super::keyed::{Effects, Job};

/// New wallet charges.
pub struct Charges;

impl Effects for Charges {
    type Item = NewCharge;
    type Row = Charge;
    const SIZE_METRIC: &'static str = "ledger_charge_batch_size";
    const FAILED_METRIC: &'static str = "ledger_charge_batches_failed_total";
    const PHASE_METRIC: &'static str = "ledger_charge_batch_phase_seconds";
    const PHASE: &'static str = "charges";
    const ONE_FAILS_AS_ALONE: bool = true;

    fn lane(_: TenantId, charge: &NewCharge) -> u128 {
        charge.buyer.as_u128()
    }

    async fn apply(tx: &Transaction<'_>, jobs: &[&Job<NewCharge>]) -> ledger::Result<Vec<Batched<Charge>>> {
        let items: Vec<BatchedCharge<'_>> = jobs
            .iter()
            .map(|j| BatchedCharge { tenant: j.tenant, new: &j.item, request_id: j.request_id.as_deref() })
            .collect();
        ledger::charge_batch::create_many(tx, &items, Locks::Skip).await
    }
}
