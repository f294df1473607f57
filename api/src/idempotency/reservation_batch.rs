//! Reservation batches (group commit of `POST /v1/reservations`): a
//! [`super::keyed`] batch whose effects are decided and written by
//! `ledger::reservation_batch`. Besides what every keyed batch leaves
//! alone, a reservation runs alone after the batch when its SKU's row is
//! held by another transaction (skipped, not waited for), when its SKU does
//! not exist (alone, it is refused), or when it is a second reservation of
//! one order and SKU in the batch. Requests go to lanes by their SKU, so
//! batches in flight together never share a SKU, and one SKU's
//! reservations are decided in the order they arrived.

use deadpool_postgres::Transaction;
use ledger::inventory::Reservation;
use ledger::reservation_batch::{BatchedReservation, NewReservation};
use ledger::{Batched, TenantId};

use super::keyed::{Effects, Job};

/// New reservations.
pub struct Reservations;

impl Effects for Reservations {
    type Item = NewReservation;
    type Row = Reservation;
    const SIZE_METRIC: &'static str = "ledger_reservation_batch_size";
    const FAILED_METRIC: &'static str = "ledger_reservation_batches_failed_total";
    const PHASE_METRIC: &'static str = "ledger_reservation_batch_phase_seconds";
    const PHASE: &'static str = "reservations";
    // its statements are not the lone path's: a failed batch of one runs alone
    const ONE_FAILS_AS_ALONE: bool = false;

    fn lane(tenant: TenantId, reservation: &NewReservation) -> u128 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (tenant.0, &reservation.sku).hash(&mut h);
        u128::from(h.finish())
    }

    async fn apply(tx: &Transaction<'_>, jobs: &[&Job<NewReservation>]) -> ledger::Result<Vec<Batched<Reservation>>> {
        let items: Vec<BatchedReservation<'_>> = jobs
            .iter()
            .map(|j| BatchedReservation { tenant: j.tenant, new: &j.item, request_id: j.request_id.as_deref() })
            .collect();
        ledger::reservation_batch::reserve_many(tx, &items).await
    }
}
