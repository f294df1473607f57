//! Many new reservations in one database transaction, by set-based
//! statements: group commit of `POST /v1/reservations`, as
//! [`crate::charge_batch`] is of new wallet charges. Each reservation gets
//! the outcome it would get alone ([`crate::inventory::reserve`]), as if
//! the batch's reservations had run one after another in the order given:
//! its reservation and its event, its natural-key answer or conflict, its
//! `out_of_stock` decline with what was left at its turn.
//!
//! The SKUs are locked in (tenant, SKU) order in one statement (two
//! batches, or a batch and a lone reservation, cannot deadlock on them); a
//! SKU another transaction holds is skipped, not waited for, and its
//! reservations run alone after the batch. The orders' reservations are
//! read after the locks, the stock is checked here in order against what
//! the batch took before, and what was decided is written in three
//! statements (the SKUs' reserved counts, the reservations, their events).
//! A second reservation of one order and SKU in the batch runs alone after
//! it (it then finds the first by its natural key).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::db::Cached;
use crate::events::ReservationHeldV1;
use crate::inventory::{found, out_of_stock, reservation_from_row, Reservation, RESERVATION_COLUMNS};
use crate::{outbox, Batched, Outcome, Result, TenantId};

/// A new reservation as asked for. Owned: a batch takes it from its
/// request's handler to another task.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub order_id: String,
    pub sku: String,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
}

/// One reservation of a batch.
pub struct BatchedReservation<'a> {
    pub tenant: TenantId,
    pub new: &'a NewReservation,
    /// The request it is made for, carried on its event (`request_id`).
    pub request_id: Option<&'a str>,
}

/// The SKUs `$2` of tenants `$1`, locked in (tenant, SKU) order; one
/// another transaction holds is skipped.
const LOCK_MANY_SQL: &str = "SELECT s.tenant_id, s.sku, s.on_hand, s.reserved FROM skus s \
     JOIN unnest($1::uuid[], $2::text[]) AS d(t, sku) ON s.tenant_id = d.t AND s.sku = d.sku \
     ORDER BY s.tenant_id, s.sku FOR UPDATE OF s SKIP LOCKED";

const RESERVE_MANY_SQL: &str = "UPDATE skus s SET reserved = s.reserved + d.q, updated_at = now() \
     FROM unnest($1::uuid[], $2::text[], $3::int8[]) AS d(t, sku, q) WHERE s.tenant_id = d.t AND s.sku = d.sku";

/// Decides and writes the reservations `items` within `tx`; one result per
/// item, in order. An `Err` is the batch's (a statement failed): nothing of
/// it may be committed, and each reservation should run alone.
pub async fn reserve_many(tx: &Transaction<'_>, items: &[BatchedReservation<'_>]) -> Result<Vec<Batched<Reservation>>> {
    let mut results: Vec<Option<Batched<Reservation>>> = items.iter().map(|_| None).collect();
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if !seen.insert((item.tenant.0, item.new.order_id.as_str(), item.new.sku.as_str())) {
            results[i] = Some(Batched::Alone);
        }
    }
    let live: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
    if live.is_empty() {
        return Ok(results.into_iter().map(|r| r.expect("decided")).collect());
    }

    let mut skus: Vec<(Uuid, &str)> = live.iter().map(|&i| (items[i].tenant.0, items[i].new.sku.as_str())).collect();
    skus.sort_unstable();
    skus.dedup();
    let (t, s): (Vec<Uuid>, Vec<&str>) = skus.into_iter().unzip();
    // Stock left per locked SKU, as the batch takes it.
    let mut left: HashMap<(Uuid, String), i64> = HashMap::new();
    for row in tx.cached_query(LOCK_MANY_SQL, &[&t, &s]).await? {
        let (on_hand, reserved): (i64, i64) = (row.get(2), row.get(3));
        left.insert((row.get(0), row.get(1)), on_hand - reserved);
    }
    // The orders' reservations of these SKUs, read after the locks.
    let (mut et, mut eo, mut es) = (vec![], vec![], vec![]);
    for &i in &live {
        et.push(items[i].tenant.0);
        eo.push(items[i].new.order_id.as_str());
        es.push(items[i].new.sku.as_str());
    }
    let existing_sql = format!(
        "SELECT {RESERVATION_COLUMNS}, r.tenant_id FROM reservations r \
           JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS d(t, o, s) \
             ON r.tenant_id = d.t AND r.order_id = d.o AND r.sku = d.s"
    );
    let mut existing: HashMap<(Uuid, String, String), Reservation> = HashMap::new();
    for row in tx.cached_query(&existing_sql, &[&et, &eo, &es]).await? {
        let reservation = reservation_from_row(&row)?;
        let tenant: Uuid = row.get(row.len() - 1);
        existing.insert((tenant, reservation.order_id.clone(), reservation.sku.clone()), reservation);
    }

    // Each in order, as alone: the SKU (locked here, or alone), the natural
    // key, then the stock left at its turn.
    let mut taken: Vec<usize> = Vec::new();
    for &i in &live {
        let (tenant, new) = (items[i].tenant.0, items[i].new);
        let Some(available) = left.get_mut(&(tenant, new.sku.clone())) else {
            // held by another transaction, or no such SKU: alone, it waits or is refused
            results[i] = Some(Batched::Alone);
            continue;
        };
        if let Some(found_one) = existing.remove(&(tenant, new.order_id.clone(), new.sku.clone())) {
            results[i] = Some(Batched::Done(found(found_one, new.quantity)));
        } else if let Some(declined) = out_of_stock(&new.sku, *available, new.quantity) {
            results[i] = Some(Batched::Done(Ok(declined)));
        } else {
            *available -= new.quantity;
            taken.push(i);
        }
    }
    if !taken.is_empty() {
        for (i, reservation) in write(tx, items, &taken).await? {
            results[i] = Some(Batched::Done(Ok(Outcome::Applied(reservation))));
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every reservation decided")).collect())
}

/// Writes the reservations `taken`: the SKUs' reserved counts, the
/// reservations and their events. Returns each one's reservation.
async fn write(
    tx: &Transaction<'_>,
    items: &[BatchedReservation<'_>],
    taken: &[usize],
) -> Result<Vec<(usize, Reservation)>> {
    let mut by_sku: HashMap<(Uuid, &str), i64> = HashMap::new();
    let (mut ids, mut tenants, mut orders, mut skus, mut quantities, mut expires) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for &i in taken {
        let (tenant, new) = (items[i].tenant.0, items[i].new);
        *by_sku.entry((tenant, new.sku.as_str())).or_default() += new.quantity;
        ids.push(Uuid::now_v7());
        tenants.push(tenant);
        orders.push(new.order_id.as_str());
        skus.push(new.sku.as_str());
        quantities.push(new.quantity);
        expires.push(new.expires_at);
    }
    let mut counts: Vec<((Uuid, &str), i64)> = by_sku.into_iter().collect();
    // in the locks' order
    counts.sort_unstable();
    let (mut st, mut ss, mut sq) = (vec![], vec![], vec![]);
    for ((tenant, sku), n) in counts {
        st.push(tenant);
        ss.push(sku);
        sq.push(n);
    }
    tx.cached_execute(RESERVE_MANY_SQL, &[&st, &ss, &sq]).await?;
    let insert_sql = format!(
        "INSERT INTO reservations (id, tenant_id, order_id, sku, quantity, status, expires_at) \
         SELECT id, t, o, s, q, 'held', e \
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[], $6::timestamptz[]) \
             AS d(id, t, o, s, q, e) \
         RETURNING {RESERVATION_COLUMNS}"
    );
    let rows = tx.cached_query(&insert_sql, &[&ids, &tenants, &orders, &skus, &quantities, &expires]).await?;
    let mut by_id: HashMap<Uuid, Reservation> = HashMap::new();
    for row in rows {
        let reservation = reservation_from_row(&row)?;
        by_id.insert(reservation.id, reservation);
    }
    let mut made = Vec::with_capacity(taken.len());
    for (&i, id) in taken.iter().zip(&ids) {
        let reservation =
            by_id.remove(id).ok_or_else(|| crate::Error::unknown("batched reservation", id.to_string()))?;
        made.push((i, reservation));
    }
    let events: Vec<_> = made
        .iter()
        .map(|(i, r)| {
            let item = &items[*i];
            (item.tenant, Some(r.order_id.as_str()), item.request_id, ReservationHeldV1(r.into()))
        })
        .collect();
    outbox::enqueue_many(tx, &events).await?;
    Ok(made)
}
