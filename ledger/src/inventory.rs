//! Stock: restocks, reservations and their release.
//!
//! `skus.on_hand` is restocked minus committed; `skus.reserved` is what held
//! reservations keep aside. The CHECK `reserved <= on_hand` makes overselling
//! impossible even if the code were wrong; the conditional UPDATE makes it
//! a clean `OutOfStock` answer instead of an error.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::db::Cached;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::events::{
    ReservationCommittedV1, ReservationHeldV1, ReservationReleasedV1, ReservationStatusV1, ReservationV1,
};
use crate::outbox;
use crate::pagination::{Cursor, Filters, Page};
use crate::{Decline, Error, Outcome, Result, TenantId};

/// The largest quantity one restock or reservation may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Sku {
    pub sku: String,
    /// Restocked minus committed (sold and paid).
    pub on_hand: i64,
    /// Held by reservations of orders not yet paid.
    pub reserved: i64,
    /// What a new reservation can still take: on hand minus reserved.
    pub available: i64,
    pub updated_at: DateTime<Utc>,
}

fn sku_from_row(row: &Row) -> Sku {
    let on_hand: i64 = row.get(1);
    let reserved: i64 = row.get(2);
    Sku { sku: row.get(0), on_hand, reserved, available: on_hand - reserved, updated_at: row.get(3) }
}

/// Adds `quantity` to the SKU's stock, creating the SKU on its first restock.
pub async fn restock(tx: &Transaction<'_>, tenant: TenantId, sku: &str, quantity: i64) -> Result<Outcome<Sku>> {
    let row = tx
        .cached_one(
            "INSERT INTO skus (tenant_id, sku, on_hand) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, sku) DO UPDATE SET on_hand = skus.on_hand + EXCLUDED.on_hand, updated_at = now() \
             RETURNING sku, on_hand, reserved, updated_at",
            &[&tenant.0, &sku, &quantity],
        )
        .await?;
    tx.cached_execute(
        "INSERT INTO stock_entries (tenant_id, sku, kind, quantity) VALUES ($1, $2, 'restock', $3)",
        &[&tenant.0, &sku, &quantity],
    )
    .await?;
    Ok(Outcome::Applied(sku_from_row(&row)))
}

pub async fn get_sku(client: &impl GenericClient, tenant: TenantId, sku: &str) -> Result<Sku> {
    let row = client
        .query_opt(
            "SELECT sku, on_hand, reserved, updated_at FROM skus WHERE tenant_id = $1 AND sku = $2",
            &[&tenant.0, &sku],
        )
        .await?
        .ok_or_else(|| Error::SkuNotFound(sku.to_owned()))?;
    Ok(sku_from_row(&row))
}

#[derive(Debug, Clone)]
pub struct Reservation {
    pub id: Uuid,
    pub order_id: String,
    pub sku: String,
    pub quantity: i64,
    pub status: ReservationStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when it holds unpaid: past it, the expirer releases it, unless
    /// a charge of its order paid it or may still. `None` for a
    /// reservation made before reservations expired.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Stock is set aside for the order.
    Held,
    /// The hold was given back before payment.
    Released,
    /// The order was paid and the stock left the shelf.
    Committed,
}

impl ReservationStatus {
    /// A status read from the database; one this code does not know is an
    /// error, never a guess.
    fn stored(s: &str) -> Result<Self> {
        match s {
            "held" => Ok(ReservationStatus::Held),
            "released" => Ok(ReservationStatus::Released),
            "committed" => Ok(ReservationStatus::Committed),
            other => Err(Error::unknown("reservation status", other)),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Released => "released",
            ReservationStatus::Committed => "committed",
        }
    }
}

pub(crate) const RESERVATION_COLUMNS: &str = "id, order_id, sku, quantity, status, created_at, updated_at, expires_at";

pub(crate) fn reservation_from_row(row: &Row) -> Result<Reservation> {
    Ok(Reservation {
        id: row.get(0),
        order_id: row.get(1),
        sku: row.get(2),
        quantity: row.get(3),
        status: ReservationStatus::stored(row.get(4))?,
        created_at: row.get(5),
        updated_at: row.get(6),
        expires_at: row.get(7),
    })
}

impl From<&Reservation> for ReservationV1 {
    fn from(r: &Reservation) -> Self {
        ReservationV1 {
            id: r.id,
            order_id: r.order_id.clone(),
            sku: r.sku.clone(),
            quantity: r.quantity,
            status: match r.status {
                ReservationStatus::Held => ReservationStatusV1::Held,
                ReservationStatus::Released => ReservationStatusV1::Released,
                ReservationStatus::Committed => ReservationStatusV1::Committed,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Holds `quantity` of `sku` for an order until `expires_at`, or returns the
/// existing hold of that order and SKU when it asked for the same quantity
/// (its deadline is not a term: a retry computes another).
pub async fn reserve(
    tx: &Transaction<'_>,
    tenant: TenantId,
    order_id: &str,
    sku: &str,
    quantity: i64,
    expires_at: DateTime<Utc>,
) -> Result<Outcome<Reservation>> {
    // Lock the SKU first: concurrent reservations of one SKU queue here, and
    // a concurrent duplicate of this order finds the first one's row below.
    let stock = tx
        .cached_opt(
            "SELECT on_hand, reserved FROM skus WHERE tenant_id = $1 AND sku = $2 FOR UPDATE",
            &[&tenant.0, &sku],
        )
        .await?
        .ok_or_else(|| Error::SkuNotFound(sku.to_owned()))?;
    let existing = tx
        .cached_opt(
            &format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE tenant_id = $1 AND order_id = $2 AND sku = $3"
            ),
            &[&tenant.0, &order_id, &sku],
        )
        .await?;
    if let Some(row) = existing {
        return found(reservation_from_row(&row)?, quantity);
    }
    let (on_hand, reserved): (i64, i64) = (stock.get(0), stock.get(1));
    if let Some(declined) = out_of_stock(sku, on_hand - reserved, quantity) {
        return Ok(declined);
    }
    tx.cached_execute(
        "UPDATE skus SET reserved = reserved + $3, updated_at = now() WHERE tenant_id = $1 AND sku = $2",
        &[&tenant.0, &sku, &quantity],
    )
    .await?;
    let row = tx
        .cached_one(
            &format!(
                "INSERT INTO reservations (id, tenant_id, order_id, sku, quantity, status, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, 'held', $6) RETURNING {RESERVATION_COLUMNS}"
            ),
            &[&Uuid::now_v7(), &tenant.0, &order_id, &sku, &quantity, &expires_at],
        )
        .await?;
    let reservation = reservation_from_row(&row)?;
    outbox::enqueue(tx, tenant, Some(order_id), &ReservationHeldV1((&reservation).into())).await?;
    Ok(Outcome::Applied(reservation))
}

/// A reservation of the order and SKU found by its natural key: the answer
/// when it holds the same quantity, a conflict when it does not.
pub(crate) fn found(existing: Reservation, quantity: i64) -> Result<Outcome<Reservation>> {
    if existing.quantity != quantity {
        return Err(Error::NaturalKeyConflict(format!(
            "order `{}` already holds a reservation of `{}` for {} units",
            existing.order_id, existing.sku, existing.quantity
        )));
    }
    Ok(Outcome::Existing(existing))
}

/// The decline of a reservation of `quantity` when only `available` units
/// are left.
pub(crate) fn out_of_stock(sku: &str, available: i64, quantity: i64) -> Option<Outcome<Reservation>> {
    (available < quantity)
        .then(|| Outcome::Declined(Decline::OutOfStock { sku: sku.to_owned(), available, requested: quantity }))
}

pub async fn get_reservation(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Reservation> {
    let row = client
        .query_opt(
            &format!("SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1 AND tenant_id = $2"),
            &[&id, &tenant.0],
        )
        .await?
        .ok_or(Error::ReservationNotFound(id))?;
    reservation_from_row(&row)
}

/// Which of a tenant's reservations a list holds; every filter is optional.
#[derive(Debug, Default)]
pub struct ReservationFilter<'a> {
    pub order_id: Option<&'a str>,
    pub sku: Option<&'a str>,
    pub status: Option<ReservationStatus>,
}

/// The tenant's reservations that pass `filter`, newest first, `limit` (1
/// to [`MAX_PAGE`](crate::pagination::MAX_PAGE)) from `cursor`. A cursor
/// must be one of the tenant's reservations (else `ReservationNotFound`, as
/// for any id of another tenant's). A SKU's or a status's page is read from
/// an index that starts with the tenant and that column and ends with the
/// id; an order's reservations (one per SKU of the order) are found by the
/// order's unique index and sorted.
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    filter: &ReservationFilter<'_>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Reservation>> {
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM reservations WHERE id = $1 AND tenant_id = $2", &[&id, &tenant.0])
            .await?
            .is_some();
        if !known {
            return Err(Error::ReservationNotFound(id));
        }
    }
    let (sql, params) = list_statement(tenant, filter, cursor, limit);
    let rows = client.query(&sql, &params.params()).await?;
    let data = rows.iter().map(reservation_from_row).collect::<Result<Vec<_>>>()?;
    Ok(Page::read(data, limit, cursor))
}

/// The statement [`list`] runs for `filter` and `cursor` (its text depends
/// on which filters are given and on the cursor, not on their values).
pub fn list_sql(filter: &ReservationFilter<'_>, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), filter, cursor, 0).0
}

/// A page's statement: the given filters only, so that its generic plan
/// reads the page from the filter's index at the cursor
/// ([`Filters`](crate::pagination::Filters)).
fn list_statement<'a>(
    tenant: TenantId,
    filter: &ReservationFilter<'a>,
    cursor: Cursor,
    limit: i64,
) -> (String, Filters<'a>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("tenant_id =", tenant.0)
        .and_some("order_id =", filter.order_id)
        .and_some("sku =", filter.sku)
        .and_some("status =", filter.status.map(ReservationStatus::as_str))
        .cursor("id", cursor, cursor.item());
    let limit = w.bind(limit + 1);
    (format!("SELECT {RESERVATION_COLUMNS} FROM reservations WHERE {} ORDER BY id {order} LIMIT {limit}", w.sql()), w)
}

/// Gives a held reservation's stock back. Releasing a released reservation
/// changes nothing and returns it; a committed one cannot be released.
pub async fn release(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> Result<Outcome<Reservation>> {
    let row = tx
        .cached_opt(
            &format!("SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = $1 AND tenant_id = $2 FOR UPDATE"),
            &[&id, &tenant.0],
        )
        .await?
        .ok_or(Error::ReservationNotFound(id))?;
    let reservation = reservation_from_row(&row)?;
    match reservation.status {
        // Releasing again changes nothing and answers as the first release did.
        ReservationStatus::Released => return Ok(Outcome::Applied(reservation)),
        ReservationStatus::Committed => {
            return Err(Error::ReservationNotHeld { id, status: reservation.status.as_str() })
        }
        ReservationStatus::Held => {}
    }
    release_held(tx, tenant, &reservation).await.map(Outcome::Applied)
}

/// Gives a held reservation's stock back (the caller holds its row lock)
/// and enqueues `reservation.released`.
async fn release_held(tx: &Transaction<'_>, tenant: TenantId, reservation: &Reservation) -> Result<Reservation> {
    tx.cached_execute(
        "UPDATE skus SET reserved = reserved - $3, updated_at = now() WHERE tenant_id = $1 AND sku = $2",
        &[&tenant.0, &reservation.sku, &reservation.quantity],
    )
    .await?;
    let row = tx
        .cached_one(
            &format!(
                "UPDATE reservations SET status = 'released', updated_at = now() WHERE id = $1 RETURNING {RESERVATION_COLUMNS}"
            ),
            &[&reservation.id],
        )
        .await?;
    let reservation = reservation_from_row(&row)?;
    let event = ReservationReleasedV1((&reservation).into());
    outbox::enqueue(tx, tenant, Some(&reservation.order_id), &event).await?;
    Ok(reservation)
}

/// An order's held reservations, locked for the rest of `tx`, in SKU order
/// (so two transactions over one order cannot deadlock on them). The order
/// of the unique index (tenant, order, SKU): ordered by id, a generic plan
/// on a table without statistics yet walked every held reservation of the
/// tenant by (tenant, status, id) and filtered the order, for each message.
async fn held_of_order(tx: &Transaction<'_>, tenant: TenantId, order_id: &str) -> Result<Vec<Row>> {
    Ok(tx
        .cached_query(
            &format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations \
                  WHERE tenant_id = $1 AND order_id = $2 AND status = 'held' ORDER BY sku FOR UPDATE"
            ),
            &[&tenant.0, &order_id],
        )
        .await?)
}

/// Releases an order's held reservations once its authorization was
/// voided (asked for, or expired): the stock held for a checkout that was
/// never paid comes back. Reservations already released or committed are
/// left as they are.
pub async fn release_order(tx: &Transaction<'_>, tenant: TenantId, order_id: &str) -> Result<Vec<Reservation>> {
    let rows = held_of_order(tx, tenant, order_id).await?;
    let mut released = Vec::with_capacity(rows.len());
    for row in rows {
        released.push(release_held(tx, tenant, &reservation_from_row(&row)?).await?);
    }
    Ok(released)
}

/// Held reservations past their deadline whose order no charge holds (none
/// paid it or may still), soonest first, at most `limit`: what the expirer
/// releases next.
pub async fn due(client: &impl GenericClient, limit: i64) -> Result<Vec<(TenantId, Uuid)>> {
    let rows = client
        .query(
            "SELECT r.tenant_id, r.id FROM reservations r \
              WHERE r.status = 'held' AND r.expires_at <= now() \
                AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.tenant_id = r.tenant_id AND c.order_id = r.order_id \
                                   AND c.status NOT IN ('failed', 'voided')) \
              ORDER BY r.expires_at LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (TenantId(r.get(0)), r.get(1))).collect())
}

/// Releases a held reservation past its deadline, unless it was released
/// or committed meanwhile, or a charge of its order now holds it (`None`
/// then, nothing written). The order's charges are read after the
/// reservation's row lock: a charge committed before it is seen; one
/// committed after finds the stock released, as after an explicit release.
pub async fn expire(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> Result<Option<Reservation>> {
    let row = tx
        .cached_opt(
            &format!(
                "SELECT {RESERVATION_COLUMNS} FROM reservations \
                  WHERE id = $1 AND tenant_id = $2 AND status = 'held' AND expires_at <= now() FOR UPDATE"
            ),
            &[&id, &tenant.0],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let reservation = reservation_from_row(&row)?;
    let paid = tx
        .cached_opt(
            "SELECT 1 FROM charges WHERE tenant_id = $1 AND order_id = $2 AND status NOT IN ('failed', 'voided') LIMIT 1",
            &[&tenant.0, &reservation.order_id],
        )
        .await?;
    if paid.is_some() {
        return Ok(None);
    }
    release_held(tx, tenant, &reservation).await.map(Some)
}

/// Commits an order's held reservations once its payment succeeded: the
/// stock leaves the shelf (on hand and reserved both drop) as one stock
/// entry per (order, SKU), which a UNIQUE index keeps to one, ever.
/// Reservations already released or committed are left as they are.
pub async fn commit_order(tx: &Transaction<'_>, tenant: TenantId, order_id: &str) -> Result<Vec<Reservation>> {
    let rows = held_of_order(tx, tenant, order_id).await?;
    let mut committed = Vec::with_capacity(rows.len());
    for row in rows {
        let r = reservation_from_row(&row)?;
        tx.cached_execute(
            "UPDATE skus SET on_hand = on_hand - $3, reserved = reserved - $3, updated_at = now() \
              WHERE tenant_id = $1 AND sku = $2",
            &[&tenant.0, &r.sku, &r.quantity],
        )
        .await?;
        tx.cached_execute(
            "INSERT INTO stock_entries (tenant_id, sku, kind, quantity, order_id) VALUES ($1, $2, 'commit', $3, $4)",
            &[&tenant.0, &r.sku, &(-r.quantity), &order_id],
        )
        .await?;
        let row = tx
            .cached_one(
                &format!(
                    "UPDATE reservations SET status = 'committed', updated_at = now() WHERE id = $1 RETURNING {RESERVATION_COLUMNS}"
                ),
                &[&r.id],
            )
            .await?;
        let r = reservation_from_row(&row)?;
        outbox::enqueue(tx, tenant, Some(order_id), &ReservationCommittedV1((&r).into())).await?;
        committed.push(r);
    }
    Ok(committed)
}
