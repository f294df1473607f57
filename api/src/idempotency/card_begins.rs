//! New card charges' first transactions, batched (`POST /v1/charges` with
//! a `payment_method`): a [`super::keyed`] batch whose charges are created
//! in flight by `ledger::card_batch::begin_many`, each key marked with its
//! charge as its recovery point, before any of them is sent to the
//! provider ([`super::run_two_phase_batched`]). A card charge's first
//! transaction is otherwise one transaction and one commit of its own per
//! request, and at a provider's latency hundreds of them are in flight at
//! once. Besides what every keyed batch leaves alone, a charge runs alone
//! after the batch when its order has a charge already (an attempt made
//! before, an order paid or in flight), when an account it names is missing
//! or in another currency, or when its order is twice in the batch.

use deadpool_postgres::Transaction;
use ledger::card_batch::NewCardBegin;
use ledger::cards::NewCardCharge;
use ledger::charges::Charge;
use ledger::idempotency::RecoveryPoint;
use ledger::{Batched, Outcome, TenantId};

use super::keyed::{Effects, Job};

/// New card charges, up to the provider.
pub struct CardBegins;

impl Effects for CardBegins {
    type Item = NewCardCharge;
    type Row = Charge;
    const SIZE_METRIC: &'static str = "ledger_card_begin_batch_size";
    const FAILED_METRIC: &'static str = "ledger_card_begin_batches_failed_total";
    const PHASE_METRIC: &'static str = "ledger_card_begin_batch_phase_seconds";
    const PHASE: &'static str = "charges";
    // A batch of one that failed ran the batch's statements, not the lone
    // path's: alone, the request gets the lone path's answer.
    const ONE_FAILS_AS_ALONE: bool = false;

    /// Card charges lock no rows of their own (their accounts are read, not
    /// locked): any lane will do; one order keeps to one.
    fn lane(tenant: TenantId, charge: &NewCardCharge) -> u128 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (tenant.0, &charge.order_id).hash(&mut h);
        u128::from(h.finish())
    }

    fn in_flight(outcome: &Outcome<Charge>) -> Option<RecoveryPoint> {
        match outcome {
            Outcome::Applied(charge) => Some(RecoveryPoint::Charge(charge.id)),
            Outcome::Existing(_) | Outcome::Declined(_) => None,
        }
    }

    async fn apply(tx: &Transaction<'_>, jobs: &[&Job<NewCardCharge>]) -> ledger::Result<Vec<Batched<Charge>>> {
        let items: Vec<NewCardBegin<'_>> =
            jobs.iter().map(|j| NewCardBegin { tenant: j.tenant, new: &j.item }).collect();
        ledger::card_batch::begin_many(tx, &items).await
    }
}
