//! Card charges: a charge paid at a payment provider, in two transactions
//! with the provider call between them (a database transaction cannot
//! include an HTTP call).
//!
//! 1. [`begin`] creates the charge `processing` with its provider key (a pure
//!    function of tenant, order and attempt, so every resend is the same
//!    request at the provider) and a lease; the caller commits it with its
//!    Idempotency-Key, whose recovery point names the charge.
//! 2. The caller asks the provider (no database transaction open).
//! 3. [`complete`] records the answer under the charge's row lock: a
//!    success writes the one ledger transaction (from the tenant's provider
//!    clearing account to the seller and the platform) and the
//!    `charge.succeeded` event; a decline marks the charge `failed`. A charge
//!    already final is returned as it is, so the client's request, its
//!    retries, the completer and a webhook can all race here and only the
//!    first writes.
//!
//! A charge whose answer was lost stays `processing` until someone resends
//! with the same key: the client's retry, or the completer once the lease
//! passed ([`claim_stale`]).

use std::time::Duration;

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::charges::{existing_attempt, get, get_in, Charge, ChargeStatus, ChargeTerms, PlatformFee};
use crate::db::Cached;
use crate::events::ChargeSucceededV1;
use crate::money::Currency;
use crate::outbox;
use crate::posting::{lock_debited, post};
use crate::{Decline, Error, Outcome, Result, TenantId};

/// A card charge as asked for. Owned: a batch of first transactions
/// (`card_batch::begin_many`) takes it from its request's handler to
/// another task.
#[derive(Debug, Clone)]
pub struct NewCardCharge {
    pub order_id: String,
    pub attempt: i32,
    pub payment_method: String,
    pub seller: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFee>,
    pub receipt_email: Option<String>,
    /// The provider's Idempotency-Key for this (tenant, order, attempt).
    pub provider_key: String,
    /// How long the request that creates it may talk to the provider before
    /// the completer may take the charge over.
    pub lease: Duration,
    /// `"capture": false`: the provider is asked for a manual capture, and
    /// the authorization holds this long once it is made (`None`: captured
    /// at once).
    pub authorize: Option<Duration>,
}

impl NewCardCharge {
    pub(crate) fn same_as(&self, c: &Charge) -> bool {
        c.payment_method.as_deref() == Some(self.payment_method.as_str())
            && self.seller == c.seller_account_id
            && self.amount == c.requested_amount()
            && self.authorize.is_some() == c.authorize_for.is_some()
            && self.currency == c.currency
            && self.platform_fee == c.platform_fee
            && self.receipt_email == c.receipt_email
    }
}

/// What the first transaction found or made: the final answer when the
/// attempt already succeeded or was declined, else the charge `processing`
/// (ask the provider, with its key).
pub type Begun = crate::phases::Begun<Charge>;

/// The final answer a card charge gives, once it has one.
pub fn outcome_of(charge: Charge) -> Option<Outcome<Charge>> {
    match charge.status {
        ChargeStatus::Processing | ChargeStatus::RequiresAction => None,
        ChargeStatus::Failed => Some(Outcome::Declined(Decline::CardDeclined {
            code: charge.decline_code.clone().unwrap_or_else(|| "card_declined".to_owned()),
        })),
        _ => Some(Outcome::Applied(charge)),
    }
}

/// The first transaction of a card charge: finds the attempt's charge by its
/// natural key, or creates it `processing`. Refuses another attempt of an
/// order that is paid or still processing.
pub async fn begin(tx: &Transaction<'_>, tenant: TenantId, new: &NewCardCharge) -> Result<Begun> {
    let terms = ChargeTerms { payer: None, seller: new.seller, amount: new.amount, fee: new.platform_fee.as_ref() };
    terms.check()?;
    // the seller and the platform (the payer, the clearing account, comes with the answer)
    let ids = &terms.accounts(new.seller)[1..];
    // The accounts must exist and hold the currency before the provider is
    // asked. Read, not locked: they are only credited, later, and a lock
    // here serialized every card charge to one seller or one platform
    // account. A concurrent duplicate of this attempt (under another key)
    // meets this one's row in the order's unique index and is answered 409
    // `contention`, to retry, which finds this charge.
    lock_debited(tx, tenant, ids, &[], new.currency).await?;
    if let Some(existing) = existing_attempt(tx, tenant, &new.order_id, new.attempt, |c| new.same_as(c)).await? {
        return Ok(match existing.status {
            ChargeStatus::Processing | ChargeStatus::RequiresAction => Begun::InFlight(existing),
            ChargeStatus::Failed => Begun::Final(outcome_of(existing).expect("final")),
            _ => Begun::Final(Outcome::Existing(existing)),
        });
    }
    let fee = new.platform_fee.as_ref().map_or(Decimal::ZERO, |f| f.amount);
    let id = Uuid::now_v7();
    tx.cached_execute(
        "INSERT INTO charges (id, tenant_id, order_id, attempt, seller_account_id, platform_account_id, amount, fee, \
                              currency, receipt_email, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'processing')",
        &[
            &id,
            &tenant.0,
            &new.order_id,
            &new.attempt,
            &new.seller,
            &new.platform_fee.as_ref().map(|f| f.account_id),
            &new.amount,
            &fee,
            &new.currency.code(),
            &new.receipt_email,
        ],
    )
    .await?;
    tx.cached_execute(
        "INSERT INTO card_charges (charge_id, payment_method, provider_key, lease_until, authorize_secs) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5::float8)",
        &[
            &id,
            &new.payment_method,
            &new.provider_key,
            &new.lease.as_secs_f64(),
            &new.authorize.map(|w| w.as_secs_f64()),
        ],
    )
    .await?;
    Ok(Begun::InFlight(get_in(tx, tenant, id).await?))
}

/// A charge and its tenant.
#[derive(Debug, Clone)]
pub struct Owned {
    pub tenant: TenantId,
    pub charge: Charge,
}

/// The charge, right before it is sent to the provider, with a fresh lease
/// when it is still `processing`: whoever drives it now holds the completer
/// off for `lease`, and the send is counted (`sends`, read by [`abandon`]).
/// A `requires_action` charge keeps its lease: that is the buyer's window.
/// Every send takes the row here first, the completer's too, so a process
/// never sends a charge it last read long ago (another may have recorded
/// its outcome meanwhile).
pub async fn take(client: &impl Cached, tenant: TenantId, id: Uuid, lease: Duration) -> Result<Charge> {
    client
        .cached_execute(
            "UPDATE card_charges k SET lease_until = now() + make_interval(secs => $3), sends = k.sends + 1, \
                    first_sent_at = coalesce(k.first_sent_at, now()) FROM charges c \
              WHERE k.charge_id = $1 AND c.id = k.charge_id AND c.tenant_id = $2 AND c.status = 'processing'",
            &[&id, &tenant.0, &lease.as_secs_f64()],
        )
        .await?;
    get_in(client, tenant, id).await
}

/// Whether the charge was first sent less than `window` ago, by the
/// database's clock (never sent: yes).
pub async fn sent_within(client: &impl GenericClient, id: Uuid, window: Duration) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce(first_sent_at > clock_timestamp() - make_interval(secs => $2), true) \
               FROM card_charges WHERE charge_id = $1",
            &[&id, &window.as_secs_f64()],
        )
        .await?;
    Ok(row.get(0))
}

/// Charges left `processing` whose lease has passed, oldest lease first, at
/// most `limit`, each leased again for `lease` in the same statement: two
/// completers never take the same charge at once. Not a send: each is taken
/// ([`take`]) again right before it is sent.
pub async fn claim_stale(client: &impl GenericClient, lease: Duration, limit: i64) -> Result<Vec<Owned>> {
    let rows = client
        .query(
            "UPDATE card_charges k SET lease_until = now() + make_interval(secs => $1), \
                    first_sent_at = coalesce(k.first_sent_at, now()) FROM charges c \
              WHERE c.id = k.charge_id AND k.charge_id IN ( \
                    SELECT charge_id FROM card_charges WHERE completed_at IS NULL AND lease_until < now() \
                     ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED) \
                AND c.status IN ('processing', 'requires_action') \
             RETURNING c.tenant_id, c.id",
            &[&lease.as_secs_f64(), &limit],
        )
        .await?;
    let mut taken = Vec::with_capacity(rows.len());
    for r in rows {
        let tenant = TenantId(r.get(0));
        taken.push(Owned { tenant, charge: get(client, tenant, r.get(1)).await? });
    }
    Ok(taken)
}

/// What the provider answered, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    /// The money was taken: the provider's payment, its amount in minor
    /// units and its currency (lowercase, as the provider writes it).
    Succeeded { payment_id: String, amount_minor: i64, currency: String },
    /// The card holds the amount for a manual capture (`"capture": false`):
    /// the provider's payment, its amount and currency.
    Authorized { payment_id: String, amount_minor: i64, currency: String },
    /// Declined, for good: a new attempt may follow.
    Declined { payment_id: Option<String>, code: String },
    /// The buyer must authenticate first (3-D Secure): the payment, what the
    /// storefront needs to finish it, and how long the buyer has before the
    /// payment is cancelled.
    RequiresAction {
        payment_id: String,
        client_secret: Option<String>,
        next_action: Option<serde_json::Value>,
        window: Duration,
    },
}

/// What the second transaction left: the charge's final answer, or the
/// charge still `processing`.
pub type Completion = crate::phases::Completion<Charge>;

/// The amount in the currency's minor units (cents; yen are whole).
pub fn minor_units(amount: Decimal, currency: Currency) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (amount * Decimal::from(10i64.pow(currency.scale()))).trunc().to_i64().unwrap_or(i64::MAX)
}

/// An amount in minor units back as a decimal of the currency.
pub fn from_minor_units(minor: i64, currency: Currency) -> Decimal {
    Decimal::new(minor, currency.scale())
}

/// The reference of the tenant's provider clearing account in `currency`.
pub fn clearing_reference(currency: Currency) -> String {
    format!("provider-clearing:{}", currency.code())
}

/// The tenant's provider clearing account in `currency`, created on first
/// use. It may go negative: it stands for what the provider owes the tenant.
pub(crate) async fn clearing_account(tx: &Transaction<'_>, tenant: TenantId, currency: Currency) -> Result<Uuid> {
    crate::accounts::system(tx, tenant, &clearing_reference(currency), currency, "the provider clearing account").await
}

/// Records a contradiction for an operator; no money moves on it.
pub async fn flag(
    client: &impl GenericClient,
    tenant: Option<TenantId>,
    charge_id: Option<Uuid>,
    event_id: Option<&str>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO provider_flags (tenant_id, charge_id, event_id, kind, detail) VALUES ($1, $2, $3, $4, $5)",
            &[&tenant.map(|t| t.0), &charge_id, &event_id, &kind, detail],
        )
        .await?;
    Ok(())
}

/// The second transaction: records the provider's answer for a charge under
/// its row lock. `None` only reads the charge's state under that lock.
pub async fn complete(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    answer: Option<&ProviderAnswer>,
) -> Result<Completion> {
    let charge = crate::charges::lock(tx, tenant, id).await?.charge;
    if let Some(done) = outcome_of(charge.clone()) {
        return Ok(Completion::Final(done));
    }
    match answer {
        None => Ok(Completion::Processing(charge)),
        // already waiting for the buyer: the window runs from the first time
        Some(ProviderAnswer::RequiresAction { .. }) if charge.status == ChargeStatus::RequiresAction => {
            Ok(Completion::Processing(charge))
        }
        Some(ProviderAnswer::RequiresAction { payment_id, client_secret, next_action, window }) => {
            tx.cached_execute("UPDATE charges SET status = 'requires_action' WHERE id = $1", &[&id]).await?;
            // the lease becomes the buyer's window: the completer takes the
            // charge when it has passed, and cancels it at the provider
            tx.cached_execute(
                "UPDATE card_charges SET provider_payment_id = $2, client_secret = $3, next_action = $4, \
                        lease_until = now() + make_interval(secs => $5) WHERE charge_id = $1",
                &[&id, &payment_id, &client_secret, &next_action, &window.as_secs_f64()],
            )
            .await?;
            Ok(Completion::Processing(get_in(tx, tenant, id).await?))
        }
        Some(ProviderAnswer::Declined { payment_id, code }) => {
            tx.cached_execute("UPDATE charges SET status = 'failed' WHERE id = $1", &[&id]).await?;
            tx.cached_execute(
                "UPDATE card_charges SET decline_code = $2, provider_payment_id = $3, completed_at = now(), \
                        lease_until = NULL WHERE charge_id = $1",
                &[&id, &code, &payment_id],
            )
            .await?;
            let failed = get_in(tx, tenant, id).await?;
            Ok(Completion::Final(outcome_of(failed).expect("final")))
        }
        Some(ProviderAnswer::Authorized { payment_id, amount_minor, currency }) => {
            if !matches_payment(tx, tenant, &charge, payment_id, *amount_minor, currency).await? {
                return Ok(Completion::Processing(charge));
            }
            let Some(window) = charge.authorize_for else {
                // a manual capture this charge never asked for: an operator decides
                let detail = serde_json::json!({"payment_id": payment_id});
                flag(&**tx, Some(tenant), Some(id), None, "unexpected_authorization", &detail).await?;
                return Ok(Completion::Processing(charge));
            };
            let clearing = clearing_account(tx, tenant, charge.currency).await?;
            tx.cached_execute(
                "WITH c AS (UPDATE charges SET status = 'authorized' WHERE id = $1), \
                      a AS (INSERT INTO charge_authorizations (charge_id, amount, expires_at) \
                            VALUES ($1, $4, now() + make_interval(secs => $5))) \
                 UPDATE card_charges SET provider_payment_id = $2, clearing_account_id = $3, completed_at = now(), \
                        lease_until = NULL WHERE charge_id = $1",
                &[&id, &payment_id, &clearing, &charge.amount, &window.as_secs_f64()],
            )
            .await?;
            let authorized = get_in(tx, tenant, id).await?;
            outbox::enqueue(tx, tenant, Some(&authorized.order_id), &crate::charges::authorized_event(&authorized)?)
                .await?;
            Ok(Completion::Final(Outcome::Applied(authorized)))
        }
        Some(ProviderAnswer::Succeeded { payment_id, amount_minor, currency }) => {
            if !matches_payment(tx, tenant, &charge, payment_id, *amount_minor, currency).await? {
                return Ok(Completion::Processing(charge));
            }
            let clearing = clearing_account(tx, tenant, charge.currency).await?;
            let transaction_id = book(tx, tenant, &charge, clearing).await?;
            tx.cached_execute(
                "UPDATE charges SET status = 'succeeded', transaction_id = $2 WHERE id = $1",
                &[&id, &transaction_id],
            )
            .await?;
            tx.cached_execute(
                "UPDATE card_charges SET provider_payment_id = $2, clearing_account_id = $3, completed_at = now(), \
                        lease_until = NULL WHERE charge_id = $1",
                &[&id, &payment_id, &clearing],
            )
            .await?;
            let paid = get_in(tx, tenant, id).await?;
            outbox::enqueue(tx, tenant, Some(&paid.order_id), &ChargeSucceededV1::from(&paid)).await?;
            Ok(Completion::Final(Outcome::Applied(paid)))
        }
    }
}

/// Books what a card payment took (the charge's `amount`): one `charge`
/// transaction from the tenant's provider clearing account to the seller
/// and the platform.
pub(crate) async fn book(tx: &Transaction<'_>, tenant: TenantId, charge: &Charge, clearing: Uuid) -> Result<Uuid> {
    let terms = ChargeTerms {
        payer: Some(clearing),
        seller: charge.seller_account_id,
        amount: charge.amount,
        fee: charge.platform_fee.as_ref(),
    };
    let (ids, legs) = (terms.accounts(clearing), terms.legs(clearing));
    // only the clearing account is debited (it has no floor, so nothing is
    // locked); the seller's and the platform's credits go to slots
    let locked = lock_debited(tx, tenant, &ids, &[clearing], charge.currency).await?;
    match post(tx, tenant, "charge", charge.currency, &locked, &legs).await? {
        Ok(t) => Ok(t),
        // only credits and a clearing account that may go negative
        Err(decline) => Err(Error::unknown("decline of a card payment's posting", decline.to_string())),
    }
}

/// Whether the provider's payment is for the charge's amount and currency;
/// when it is not, flags it for an operator (`amount_mismatch`): money the
/// charge did not ask for is never booked.
pub(crate) async fn matches_payment(
    tx: &Transaction<'_>,
    tenant: TenantId,
    charge: &Charge,
    payment_id: &str,
    amount_minor: i64,
    currency: &str,
) -> Result<bool> {
    let expected = minor_units(charge.amount, charge.currency);
    if amount_minor == expected && currency.eq_ignore_ascii_case(charge.currency.code()) {
        return Ok(true);
    }
    let detail = serde_json::json!({"payment_id": payment_id, "provider_amount": amount_minor,
        "provider_currency": currency, "charge_amount": expected, "charge_currency": charge.currency.code()});
    flag(&**tx, Some(tenant), Some(charge.id), None, "amount_mismatch", &detail).await?;
    Ok(false)
}

/// Undoes a card charge's first transaction after the provider refused the
/// request itself (a configuration error: nothing happened there): the
/// charge, its card row and the Idempotency-Key that names it are deleted,
/// so nothing is recorded, nothing is stored, and a retry starts afresh once
/// the configuration is fixed.
///
/// Only a charge still `processing` (under its row lock) that was never sent
/// before the refused request is undone. The provider refuses a revoked or
/// restricted key before it looks at the Idempotency-Key, so a refusal says
/// nothing about an earlier send whose answer was lost: that one may have
/// charged the card, and deleting the charge would free the attempt for a
/// second payment once the key window has passed. Such a charge stays in
/// flight (`false`), as a refund does, and is sent again with its key once
/// the configuration is fixed.
pub async fn abandon(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> Result<bool> {
    let charge = crate::charges::lock(tx, tenant, id).await?.charge;
    if !charge.status.in_flight() {
        return Ok(false);
    }
    let sends: i32 = tx.query_one("SELECT sends FROM card_charges WHERE charge_id = $1", &[&id]).await?.get(0);
    if sends > 1 {
        return Ok(false);
    }
    tx.cached_execute("DELETE FROM idempotency_keys WHERE charge_id = $1", &[&id]).await?;
    // an operator's evidence stays, without the charge it named
    tx.cached_execute("UPDATE provider_flags SET charge_id = NULL WHERE charge_id = $1", &[&id]).await?;
    tx.cached_execute("DELETE FROM card_charges WHERE charge_id = $1", &[&id]).await?;
    tx.cached_execute("DELETE FROM charges WHERE id = $1 AND status IN ('processing', 'requires_action')", &[&id])
        .await?;
    Ok(true)
}

/// The charge a provider payment belongs to, by its id, with its tenant.
pub async fn by_payment(client: &impl GenericClient, payment_id: &str) -> Result<Option<Owned>> {
    let row = client
        .query_opt(
            "SELECT c.tenant_id, c.id FROM card_charges k JOIN charges c ON c.id = k.charge_id \
              WHERE k.provider_payment_id = $1",
            &[&payment_id],
        )
        .await?;
    match row {
        None => Ok(None),
        Some(r) => {
            let tenant = TenantId(r.get(0));
            Ok(Some(Owned { tenant, charge: get(client, tenant, r.get(1)).await? }))
        }
    }
}

/// A card charge as reconciliation compares it with the provider's payments.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub tenant: TenantId,
    pub charge_id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    pub status: String,
    pub provider_payment_id: Option<String>,
    pub amount: Decimal,
    pub currency: Currency,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const RECONCILED: &str = "SELECT c.tenant_id, c.id, c.order_id, c.attempt, c.status, k.provider_payment_id, c.amount, \
     c.currency, c.created_at FROM charges c JOIN card_charges k ON k.charge_id = c.id";

fn reconciled(r: &tokio_postgres::Row) -> Result<Reconciled> {
    let currency = crate::stored::currency(r.get(7))?;
    Ok(Reconciled {
        tenant: TenantId(r.get(0)),
        charge_id: r.get(1),
        order_id: r.get(2),
        attempt: r.get(3),
        status: r.get(4),
        provider_payment_id: r.get(5),
        amount: currency.normalize(r.get(6)),
        currency,
        created_at: r.get(8),
    })
}

/// Every card charge created in [from, to).
pub async fn created_between(
    client: &impl GenericClient,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Reconciled>> {
    let rows = client
        .query(
            &format!("{RECONCILED} WHERE c.created_at >= $1 AND c.created_at < $2 ORDER BY c.created_at"),
            &[&from, &to],
        )
        .await?;
    rows.iter().map(reconciled).collect()
}

/// The card charges that recorded these provider payments.
pub async fn by_payments(client: &impl GenericClient, payment_ids: &[String]) -> Result<Vec<Reconciled>> {
    let rows = client.query(&format!("{RECONCILED} WHERE k.provider_payment_id = ANY($1)"), &[&payment_ids]).await?;
    rows.iter().map(reconciled).collect()
}
