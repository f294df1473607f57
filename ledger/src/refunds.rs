//! Refunds of charges, wallet and card, each at most once per (charge,
//! reference), forever, whatever its Idempotency-Key.
//!
//! A refund is decided whole in its first transaction ([`begin`]), under the
//! charge's row lock: its reference, what remains of the charge, and the
//! seller's and the platform's shares, which its ledger transaction takes
//! back at once (the buyer's side is credited). So nothing that can refuse a
//! refund is checked after money has left at the provider, and the seller's
//! share cannot be spent while the provider is asked.
//!
//! - A wallet refund is final there: `succeeded`, with its `charge.refunded`
//!   event.
//! - A card refund is `pending`, with its provider key (an HMAC of tenant,
//!   charge and reference) and a lease. The caller asks the provider with no
//!   transaction open, then [`complete`] records the answer: `succeeded`
//!   (with the event), or `failed`, when one transaction of kind
//!   `refund_reversal` gives the seller and the platform their shares back
//!   and `charge.refund_failed` is written. A refund the provider fails after
//!   it succeeded (a late `refund.failed`) is reversed the same way, once.
//!
//! A pending refund counts against what remains of its charge (the charge's
//! `refunded_amount` includes it), so two refunds never both take the same
//! remainder, whatever the provider answers later.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::{Decimal, RoundingStrategy};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::cards::{flag, minor_units};
use crate::charges::{lock, ChargeRow};
use crate::db::Cached;
use crate::events::{ChargeRefundFailedV1, ChargeRefundedV1};
use crate::money::{parse_amount, Currency};
use crate::outbox;
use crate::pagination::{Cursor, Filters, Page};
use crate::phases::{Begun, Completion};
use crate::posting::{lock_debited, post};
use crate::{Decline, Error, Outcome, Result, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    /// A card refund the provider has not answered for yet. Its ledger
    /// transaction is posted: the seller's share is held back meanwhile.
    Pending,
    Succeeded,
    /// The provider failed it: its ledger transaction was undone.
    Failed,
}

impl RefundStatus {
    fn parse(text: &str) -> Result<RefundStatus> {
        Ok(match text {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            other => return Err(Error::unknown("refund status", other)),
        })
    }

    /// The status as stored and shown (and as a list filters by it).
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Refund {
    pub id: Uuid,
    pub tenant: TenantId,
    pub charge_id: Uuid,
    /// The client's name for this refund, unique per charge: its natural key.
    pub reference: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub status: RefundStatus,
    /// The ledger transaction that gave the money back.
    pub transaction_id: Uuid,
    /// The transaction that undid it, once the provider failed it.
    pub reversal_transaction_id: Option<Uuid>,
    /// The provider's reason for a failed refund.
    pub failure_code: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The provider's refund (`re_...`), once it answered.
    pub provider_refund_id: Option<String>,
    /// The provider's Idempotency-Key of a card refund (never shown).
    pub provider_key: Option<String>,
    /// The provider payment a card refund draws on.
    pub provider_payment_id: Option<String>,
    /// When the refund was first sent to the provider: the provider's key
    /// window and its look-ups are measured from here.
    pub first_sent_at: Option<DateTime<Utc>>,
    /// Whether its request named no amount (all that remained): the terms a
    /// retry under the same reference is compared with.
    whole_remainder: bool,
    fee_amount: Decimal,
}

impl Refund {
    pub fn is_card(&self) -> bool {
        self.provider_key.is_some()
    }
}

/// A refund as asked for.
pub struct NewRefund<'a> {
    /// Unique per charge.
    pub reference: &'a str,
    /// All that remains of the charge when `None`.
    pub amount: Option<&'a str>,
    /// The provider key a card refund is sent with (unused for a wallet
    /// charge): a pure function of tenant, charge and reference.
    pub provider_key: &'a str,
    /// How long the request that creates a card refund may talk to the
    /// provider before the completer may take it over.
    pub lease: Duration,
}

const COLUMNS: &str = "r.id, r.tenant_id, r.charge_id, r.reference, r.amount, r.currency, r.status, \
     r.transaction_id, r.reversal_transaction_id, q.failure_code, r.created_at, r.provider_refund_id, \
     q.provider_key, k.provider_payment_id, q.first_sent_at, r.whole_remainder, r.fee_amount";
/// A refund, its `card_refunds` row and its charge's `card_charges` row (a card refund's).
const FROM: &str = "refunds r LEFT JOIN card_refunds q ON q.refund_id = r.id \
     LEFT JOIN card_charges k ON k.charge_id = r.charge_id";

fn from_row(row: &Row) -> Result<Refund> {
    let currency = crate::stored::currency(row.get(5))?;
    Ok(Refund {
        id: row.get(0),
        tenant: TenantId(row.get(1)),
        charge_id: row.get(2),
        reference: row.get(3),
        amount: currency.normalize(row.get(4)),
        currency,
        status: RefundStatus::parse(row.get(6))?,
        transaction_id: row.get(7),
        reversal_transaction_id: row.get(8),
        failure_code: row.get(9),
        created_at: row.get(10),
        provider_refund_id: row.get(11),
        provider_key: row.get(12),
        provider_payment_id: row.get(13),
        first_sent_at: row.get(14),
        whole_remainder: row.get(15),
        fee_amount: currency.normalize(row.get(16)),
    })
}

/// A refund by id, within its tenant.
pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Refund> {
    let row = client.query_opt(&get_sql(), &[&id, &tenant.0]).await?;
    from_row(&row.ok_or_else(|| Error::unknown("refund", id.to_string()))?)
}

/// [`get`] with the session's prepared statement, as `charges::get_in`.
pub async fn get_in(client: &impl Cached, tenant: TenantId, id: Uuid) -> Result<Refund> {
    let row = client.cached_opt(&get_sql(), &[&id, &tenant.0]).await?;
    from_row(&row.ok_or_else(|| Error::unknown("refund", id.to_string()))?)
}

fn get_sql() -> String {
    format!("SELECT {COLUMNS} FROM {FROM} WHERE r.id = $1 AND r.tenant_id = $2")
}

/// A charge's refunds (of the tenant's charge, else `ChargeNotFound`), in
/// `status` when given, newest first, `limit` (1 to
/// [`MAX_PAGE`](crate::pagination::MAX_PAGE)) from `cursor`. A cursor must
/// be one of the charge's refunds (else `RefundNotFound`). The page is read
/// from `refunds (charge_id, id)`; a status is a filter over the charge's
/// refunds.
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    charge_id: Uuid,
    status: Option<RefundStatus>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Refund>> {
    client
        .query_opt("SELECT 1 FROM charges WHERE id = $1 AND tenant_id = $2", &[&charge_id, &tenant.0])
        .await?
        .ok_or(Error::ChargeNotFound(charge_id))?;
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM refunds WHERE id = $1 AND charge_id = $2", &[&id, &charge_id])
            .await?
            .is_some();
        if !known {
            return Err(Error::RefundNotFound(id));
        }
    }
    let (sql, params) = list_statement(tenant, charge_id, status, cursor, limit);
    let rows = client.query(&sql, &params.params()).await?;
    let data = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    Ok(Page::read(data, limit, cursor))
}

/// The statement [`list`] runs for `status` and `cursor` (its text depends
/// on whether a status is given and on the cursor, not on their values).
pub fn list_sql(status: Option<RefundStatus>, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), Uuid::nil(), status, cursor, 0).0
}

/// A page's statement: the given filters only, so that its generic plan
/// reads the page from `refunds (charge_id, id)` at the cursor
/// ([`Filters`](crate::pagination::Filters)).
fn list_statement(
    tenant: TenantId,
    charge_id: Uuid,
    status: Option<RefundStatus>,
    cursor: Cursor,
    limit: i64,
) -> (String, Filters<'static>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("r.charge_id =", charge_id)
        .and("r.tenant_id =", tenant.0)
        .and_some("r.status =", status.map(RefundStatus::as_str))
        .cursor("r.id", cursor, cursor.item());
    let limit = w.bind(limit + 1);
    (format!("SELECT {COLUMNS} FROM {FROM} WHERE {} ORDER BY r.id {order} LIMIT {limit}", w.sql()), w)
}

/// The refund of a charge by its reference.
pub async fn by_reference(
    client: &impl GenericClient,
    tenant: TenantId,
    charge_id: Uuid,
    reference: &str,
) -> Result<Option<Refund>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM {FROM} WHERE r.tenant_id = $1 AND r.charge_id = $2 AND r.reference = $3"),
            &[&tenant.0, &charge_id, &reference],
        )
        .await?
        .map(|r| from_row(&r))
        .transpose()
}

/// The refund the provider knows by `provider_refund_id`.
pub async fn by_provider_refund(client: &impl GenericClient, provider_refund_id: &str) -> Result<Option<Refund>> {
    client
        .query_opt(&format!("SELECT {COLUMNS} FROM {FROM} WHERE r.provider_refund_id = $1"), &[&provider_refund_id])
        .await?
        .map(|r| from_row(&r))
        .transpose()
}

/// The final answer a refund gives, once it has one.
pub fn outcome_of(refund: Refund) -> Option<Outcome<Refund>> {
    match refund.status {
        RefundStatus::Pending => None,
        RefundStatus::Failed => Some(Outcome::Declined(Decline::RefundFailed {
            code: refund.failure_code.clone().unwrap_or_else(|| "refund_failed".to_owned()),
        })),
        RefundStatus::Succeeded => Some(Outcome::Applied(refund)),
    }
}

/// The first transaction of a refund: finds it by its reference, or decides
/// it whole and posts it (see the module's documentation). A wallet refund
/// is final here; a card refund is left `pending` for the provider.
pub async fn begin(
    tx: &Transaction<'_>,
    tenant: TenantId,
    charge_id: Uuid,
    new: &NewRefund<'_>,
) -> Result<Begun<Refund>> {
    // The row lock serializes refunds of one charge: two refunds cannot both
    // see the same remainder, nor both miss the same reference.
    let ChargeRow { charge, fee, refunded_fee } = lock(tx, tenant, charge_id).await?;
    if !charge.status.paid() {
        return Err(Error::ChargeNotPaid { id: charge_id });
    }
    let currency = charge.currency;
    let asked = new.amount.map(|text| parse_amount(text, currency)).transpose()?;
    if let Some(refund) = by_reference(&**tx, tenant, charge_id, new.reference).await? {
        let same = match asked {
            None => refund.whole_remainder,
            Some(amount) => !refund.whole_remainder && amount == refund.amount,
        };
        if !same {
            return Err(Error::NaturalKeyConflict(format!(
                "refund `{}` of charge {charge_id} was made with other terms",
                new.reference
            )));
        }
        return Ok(match refund.status {
            RefundStatus::Pending => Begun::InFlight(refund),
            RefundStatus::Failed => Begun::Final(outcome_of(refund).expect("final")),
            RefundStatus::Succeeded => Begun::Final(Outcome::Existing(refund)),
        });
    }
    let remaining = charge.amount - charge.refunded_amount;
    let amount = match asked {
        Some(amount) => amount,
        None if remaining.is_zero() => {
            return Ok(Begun::Final(Outcome::Declined(Decline::RefundExceedsCharge { remaining })))
        }
        None => remaining,
    };
    if amount > remaining {
        return Ok(Begun::Final(Outcome::Declined(Decline::RefundExceedsCharge { remaining })));
    }
    let refunded_after = charge.refunded_amount + amount;
    let fee_after = if refunded_after == charge.amount {
        fee
    } else {
        (fee * refunded_after / charge.amount)
            .round_dp_with_strategy(currency.scale(), RoundingStrategy::MidpointNearestEven)
    };
    let fee_part = fee_after - refunded_fee;
    // the buyer's wallet, or the clearing account a card charge was taken from
    let payer = charge.debited_account().ok_or(Error::ChargeNotPaid { id: charge_id })?;
    let mut ids = vec![payer, charge.seller_account_id];
    let mut legs = vec![(payer, amount), (charge.seller_account_id, -(amount - fee_part))];
    if let Some(platform) = &charge.platform_fee {
        ids.push(platform.account_id);
        legs.push((platform.account_id, -fee_part));
    }
    // the buyer is credited: only the seller's and the platform's rows are locked
    let locked = lock_debited(tx, tenant, &ids, &ids[1..], currency).await?;
    let transaction_id = match post(tx, tenant, "refund", currency, &locked, &legs).await? {
        Ok(id) => id,
        Err(decline) => return Ok(Begun::Final(Outcome::Declined(decline))),
    };
    tx.cached_execute(
        "UPDATE charges SET refunded_amount = refunded_amount + $2, refunded_fee = refunded_fee + $3 WHERE id = $1",
        &[&charge_id, &amount, &fee_part],
    )
    .await?;
    let card = charge.is_card();
    let id = Uuid::now_v7();
    tx.cached_execute(
        "INSERT INTO refunds (id, tenant_id, charge_id, reference, amount, fee_amount, currency, transaction_id, \
                              whole_remainder, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &id,
            &tenant.0,
            &charge_id,
            &new.reference,
            &amount,
            &fee_part,
            &currency.code(),
            &transaction_id,
            &asked.is_none(),
            &if card { "pending" } else { "succeeded" },
        ],
    )
    .await?;
    if card {
        tx.cached_execute(
            "INSERT INTO card_refunds (refund_id, provider_key, lease_until) \
             VALUES ($1, $2, now() + make_interval(secs => $3))",
            &[&id, &new.provider_key, &new.lease.as_secs_f64()],
        )
        .await?;
    }
    let refund = get_in(tx, tenant, id).await?;
    if card {
        return Ok(Begun::InFlight(refund));
    }
    refunded_event(tx, &charge.order_id, &refund).await?;
    Ok(Begun::Final(Outcome::Applied(refund)))
}

async fn refunded_event(tx: &Transaction<'_>, order_id: &str, refund: &Refund) -> Result<()> {
    let event = ChargeRefundedV1 {
        id: refund.id,
        charge_id: refund.charge_id,
        amount: refund.amount,
        currency: refund.currency,
        transaction_id: refund.transaction_id,
        created_at: refund.created_at,
    };
    outbox::enqueue(tx, refund.tenant, Some(order_id), &event).await?;
    Ok(())
}

/// Whether the refund was first sent less than `window` ago, by the
/// database's clock (never sent: yes).
pub async fn sent_within(client: &impl GenericClient, id: Uuid, window: Duration) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce(first_sent_at > clock_timestamp() - make_interval(secs => $2), true) \
               FROM card_refunds WHERE refund_id = $1",
            &[&id, &window.as_secs_f64()],
        )
        .await?;
    Ok(row.get(0))
}

/// The refund, with a fresh lease when it is still `pending`, and its first
/// send time set if this is the first: whoever drives it now holds the
/// completer off for `lease`, and is about to send it.
pub async fn take(client: &impl Cached, tenant: TenantId, id: Uuid, lease: Duration) -> Result<Refund> {
    client
        .cached_execute(
            "UPDATE card_refunds q SET lease_until = now() + make_interval(secs => $3), \
                    first_sent_at = coalesce(q.first_sent_at, now()) FROM refunds r \
              WHERE q.refund_id = $1 AND r.id = q.refund_id AND r.tenant_id = $2 AND r.status = 'pending'",
            &[&id, &tenant.0, &lease.as_secs_f64()],
        )
        .await?;
    get_in(client, tenant, id).await
}

/// Refunds left `pending` whose lease has passed, oldest lease first, at
/// most `limit`, each leased again for `lease` in the same statement: two
/// completers never take the same refund at once.
pub async fn claim_stale(client: &impl GenericClient, lease: Duration, limit: i64) -> Result<Vec<Refund>> {
    let rows = client
        .query(
            "UPDATE card_refunds q SET lease_until = now() + make_interval(secs => $1), \
                    first_sent_at = coalesce(q.first_sent_at, now()) FROM refunds r \
              WHERE r.id = q.refund_id AND q.refund_id IN ( \
                    SELECT refund_id FROM card_refunds WHERE completed_at IS NULL AND lease_until < now() \
                     ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED) \
                AND r.status = 'pending' \
             RETURNING r.tenant_id, r.id",
            &[&lease.as_secs_f64(), &limit],
        )
        .await?;
    let mut taken = Vec::with_capacity(rows.len());
    for r in rows {
        taken.push(get(client, TenantId(r.get(0)), r.get(1)).await?);
    }
    Ok(taken)
}

/// What the provider answered for a refund, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundAnswer {
    /// The buyer got the money back: the provider's refund, its amount in
    /// minor units and its currency (lowercase, as the provider writes it).
    Succeeded { refund_id: String, amount_minor: i64, currency: String },
    /// The provider failed the refund (or never made it), for good.
    Failed { refund_id: Option<String>, code: String },
}

/// The second transaction: records the provider's answer for a refund under
/// its charge's row lock. `None` only reads the refund's state under that
/// lock. A refund already final is returned as it is, except that a failure
/// of a succeeded refund reverses it (the provider's word wins; flagged).
pub async fn complete(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    answer: Option<&RefundAnswer>,
) -> Result<Completion<Refund>> {
    // Lock the charge first, as `begin` does: one lock order for a charge's refunds.
    let charge_id: Uuid = tx
        .cached_opt("SELECT charge_id FROM refunds WHERE id = $1 AND tenant_id = $2", &[&id, &tenant.0])
        .await?
        .ok_or_else(|| Error::unknown("refund", id.to_string()))?
        .get(0);
    let ChargeRow { charge, .. } = lock(tx, tenant, charge_id).await?;
    let refund = get_in(tx, tenant, id).await?;
    match (refund.status, answer) {
        (RefundStatus::Pending, None) => Ok(Completion::Processing(refund)),
        (RefundStatus::Pending, Some(RefundAnswer::Succeeded { refund_id, amount_minor, currency })) => {
            let expected = minor_units(refund.amount, refund.currency);
            if *amount_minor != expected || !currency.eq_ignore_ascii_case(refund.currency.code()) {
                // Never record a refund the ledger did not ask for: an operator decides.
                let detail = serde_json::json!({"refund_id": refund.id, "provider_refund_id": refund_id,
                    "provider_amount": amount_minor, "provider_currency": currency,
                    "refund_amount": expected, "refund_currency": refund.currency.code()});
                flag(&**tx, Some(tenant), Some(charge_id), None, "refund_amount_mismatch", &detail).await?;
                return Ok(Completion::Processing(refund));
            }
            tx.cached_execute(
                "UPDATE refunds SET status = 'succeeded', provider_refund_id = $2 WHERE id = $1",
                &[&id, &refund_id],
            )
            .await?;
            tx.cached_execute(
                "UPDATE card_refunds SET completed_at = now(), lease_until = NULL WHERE refund_id = $1",
                &[&id],
            )
            .await?;
            let done = get_in(tx, tenant, id).await?;
            refunded_event(tx, &charge.order_id, &done).await?;
            Ok(Completion::Final(Outcome::Applied(done)))
        }
        (RefundStatus::Pending | RefundStatus::Succeeded, Some(RefundAnswer::Failed { refund_id, code })) => {
            if refund.status == RefundStatus::Succeeded {
                // Only the refund the provider made can fail after succeeding.
                if refund_id.is_none() || refund_id.as_deref() != refund.provider_refund_id.as_deref() {
                    return Ok(Completion::Final(outcome_of(refund).expect("final")));
                }
                let detail = serde_json::json!({"refund_id": refund.id, "provider_refund_id": refund_id, "code": code});
                flag(&**tx, Some(tenant), Some(charge_id), None, "refund_failed_after_succeeded", &detail).await?;
            }
            reverse(tx, &charge, &refund, refund_id.as_deref(), code).await?;
            let failed = get_in(tx, tenant, id).await?;
            Ok(Completion::Final(outcome_of(failed).expect("final")))
        }
        _ => Ok(Completion::Final(outcome_of(refund).expect("final"))),
    }
}

/// Undoes a refund's ledger transaction: the payer gives the amount back,
/// the seller and the platform get their shares again.
async fn reverse(
    tx: &Transaction<'_>,
    charge: &crate::charges::Charge,
    refund: &Refund,
    provider_refund_id: Option<&str>,
    code: &str,
) -> Result<()> {
    let tenant = refund.tenant;
    let payer = charge.debited_account().ok_or(Error::ChargeNotPaid { id: charge.id })?;
    let mut ids = vec![payer, charge.seller_account_id];
    let mut legs = vec![(payer, -refund.amount), (charge.seller_account_id, refund.amount - refund.fee_amount)];
    if let Some(platform) = &charge.platform_fee {
        ids.push(platform.account_id);
        legs.push((platform.account_id, refund.fee_amount));
    }
    // Only the payer is debited: a card charge's clearing account, which may go negative.
    let locked = lock_debited(tx, tenant, &ids, &[payer], refund.currency).await?;
    let reversal = match post(tx, tenant, "refund_reversal", refund.currency, &locked, &legs).await? {
        Ok(id) => id,
        Err(decline) => return Err(Error::unknown("decline of a refund's reversal", decline.to_string())),
    };
    tx.cached_execute(
        "UPDATE charges SET refunded_amount = refunded_amount - $2, refunded_fee = refunded_fee - $3 WHERE id = $1",
        &[&charge.id, &refund.amount, &refund.fee_amount],
    )
    .await?;
    tx.cached_execute(
        "UPDATE refunds SET status = 'failed', reversal_transaction_id = $2, \
                provider_refund_id = coalesce(provider_refund_id, $3) WHERE id = $1",
        &[&refund.id, &reversal, &provider_refund_id],
    )
    .await?;
    tx.cached_execute(
        "UPDATE card_refunds SET failure_code = $2, completed_at = coalesce(completed_at, now()), lease_until = NULL \
          WHERE refund_id = $1",
        &[&refund.id, &code],
    )
    .await?;
    let event = ChargeRefundFailedV1 {
        id: refund.id,
        charge_id: charge.id,
        amount: refund.amount,
        currency: refund.currency,
        failure_code: code.to_owned(),
        reversal_transaction_id: reversal,
        created_at: Utc::now(),
    };
    outbox::enqueue(tx, tenant, Some(&charge.order_id), &event).await?;
    Ok(())
}

/// A card refund as reconciliation compares it with the provider's refunds.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub refund: Refund,
    /// The charge's refunded amount the provider should show for its
    /// payment: the sum of its refunds that did not fail.
    pub charge_refunded: Decimal,
}

/// Every card refund created in [from, to), and those that recorded one of
/// `provider_refund_ids`, each with its charge's refunded sum.
pub async fn card_refunds(
    client: &impl GenericClient,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    provider_refund_ids: &[String],
) -> Result<Vec<Reconciled>> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS}, s.refunded FROM {FROM} \
                   CROSS JOIN LATERAL (SELECT coalesce(sum(o.amount), 0) AS refunded FROM refunds o \
                                        WHERE o.charge_id = r.charge_id AND o.status <> 'failed') s \
                  WHERE q.refund_id IS NOT NULL \
                    AND ((r.created_at >= $1 AND r.created_at < $2) OR r.provider_refund_id = ANY($3)) \
                  ORDER BY r.created_at"
            ),
            &[&from, &to, &provider_refund_ids],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let refund = from_row(r)?;
            let charge_refunded = refund.currency.normalize(r.get(17));
            Ok(Reconciled { refund, charge_refunded })
        })
        .collect()
}
