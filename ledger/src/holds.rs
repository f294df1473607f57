//! Authorize now, capture later: a wallet charge made with `"capture":
//! false` holds its amount until it is captured (all or part), voided, or
//! its deadline passes; exactly one of the three ends it.
//!
//! The hold is entries like everything else. The authorization moves the
//! amount from the buyer to the tenant's holds account in its currency
//! (`holds:<CURRENCY>`, created on first use, one that may go negative so
//! that captures and voids never wait for its row): an `authorization`
//! transaction. The buyer's balance is then what it can spend (its
//! available balance, which every floor check reads), and what is held for
//! it is the sum of its open authorizations. A capture pays the seller and
//! the platform from the holds account (a `charge`, the charge's
//! `transaction_id`, as for a charge made at once) and gives what it did not
//! take back to the buyer (a `release`); a void or an expiry gives all of it
//! back (a `release`). So the holds account's balance is always the sum of
//! the open authorizations (the audit checks it).
//!
//! Each end runs under the charge's row lock and first reads its status, so
//! a capture, a void and the expirer racing each other find one winner; the
//! losers see its status and change nothing. A capture is refused once the
//! deadline has passed by the database's clock, even before the expirer has
//! run, so a capture and an expiry cannot both win.
//!
//! A card authorization is held by the card's issuer, not in the ledger:
//! its end is an effect at the provider (`card_holds`). The same checks run
//! here under the same lock; the winner leaves the charge `capturing` or
//! `voiding`, and the provider's answer ends it.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::charges::{self, Authorization, Charge, ChargeStatus, ChargeTerms, VoidReason};
use crate::db::Cached;
use crate::money::Currency;
use crate::phases::Begun;
use crate::posting::post;
use crate::{outbox, Decline, Error, Outcome, Result, TenantId};

/// The reference of the tenant's holds account in `currency`.
pub fn reference(currency: Currency) -> String {
    format!("holds:{}", currency.code())
}

/// The tenant's holds account in `currency`, created on first use.
pub async fn account(client: &impl Cached, tenant: TenantId, currency: Currency) -> Result<Uuid> {
    crate::accounts::system(client, tenant, &reference(currency), currency, "the holds account").await
}

/// A capture as asked: its reference (one capture per charge, ever) and
/// how much, all that is held when `None`.
#[derive(Debug, Clone, Copy)]
pub struct Capture<'a> {
    pub reference: &'a str,
    /// As asked, parsed in the charge's currency once the charge is read.
    pub amount: Option<&'a str>,
}

/// Captures an authorization: `amount` (at most what is held, at least the
/// platform fee) goes to the seller and the platform, the rest back to the
/// buyer. The same reference and amount again is the same capture
/// (`Existing`, or still in flight); anything else on a charge that is not
/// `authorized` is refused with its status. A wallet's is made here
/// (`Final`); a card's is left `capturing` for the provider (`InFlight`,
/// `lease` for whoever asks it).
pub async fn capture(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    capture: &Capture<'_>,
    lease: std::time::Duration,
) -> Result<Begun<Charge>> {
    let charge = charges::lock(tx, tenant, id).await?.charge;
    let auth = authorization(&charge)?;
    let amount = match capture.amount {
        Some(text) => crate::money::parse_amount(text, charge.currency)?,
        None => auth.amount,
    };
    if charge.status != ChargeStatus::Authorized {
        if auth.capture_reference.as_deref() == Some(capture.reference) {
            if charge.status == ChargeStatus::Voided {
                // the provider ended a card's authorization before this capture
                return Ok(Begun::Final(Outcome::Declined(Decline::AuthorizationExpired)));
            }
            if amount != charge.amount {
                return Err(Error::NaturalKeyConflict(format!(
                    "charge {id} was captured with reference `{}` for another amount",
                    capture.reference
                )));
            }
            return Ok(match charge.status {
                ChargeStatus::Capturing => Begun::InFlight(charge),
                _ => Begun::Final(Outcome::Existing(charge)),
            });
        }
        return Err(Error::ChargeNotAuthorized { id, status: charge.status.as_str() });
    }
    if amount > auth.amount {
        return Err(Error::CaptureExceedsAuthorization { id, authorized: auth.amount });
    }
    let terms = ChargeTerms {
        payer: auth.hold_account_id,
        seller: charge.seller_account_id,
        amount,
        fee: charge.platform_fee.as_ref(),
    };
    terms.check()?;
    if past_deadline(tx, auth).await? {
        return Err(Error::AuthorizationExpired { id, expires_at: auth.expires_at });
    }
    if charge.is_card() {
        let end = crate::card_holds::End::Capture { amount, reference: capture.reference };
        return crate::card_holds::begin(tx, tenant, &charge, &end, lease).await.map(Begun::InFlight);
    }
    let (hold, buyer) = wallet(&charge, auth)?;
    let mut ids = terms.accounts(hold);
    ids.push(buyer);
    let locked = read(tx, tenant, &ids, charge.currency).await?;
    let transaction_id = posted(post(tx, tenant, "charge", charge.currency, &locked, &terms.legs(hold)).await?)?;
    let rest = auth.amount - amount;
    let release = if rest.is_zero() {
        None
    } else {
        Some(posted(post(tx, tenant, "release", charge.currency, &locked, &[(hold, -rest), (buyer, rest)]).await?)?)
    };
    tx.cached_execute(
        "WITH c AS (UPDATE charges SET status = 'succeeded', amount = $2, transaction_id = $3 WHERE id = $1) \
         UPDATE charge_authorizations SET release_transaction_id = $4, capture_reference = $5, captured_at = now() \
          WHERE charge_id = $1",
        &[&id, &amount, &transaction_id, &release, &capture.reference],
    )
    .await?;
    let charge = charges::get_in(tx, tenant, id).await?;
    outbox::enqueue(tx, tenant, Some(&charge.order_id), &charges::captured_event(&charge)?).await?;
    Ok(Begun::Final(Outcome::Applied(charge)))
}

/// Voids an authorization on request: everything held goes back to the
/// buyer. The same reference again is the same void (`Existing`, or still
/// in flight); a charge captured, expired or voided under another reference
/// is refused with its status. A wallet's is made here (`Final`); a card's
/// is left `voiding` for the provider (`InFlight`).
pub async fn void(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    reference: &str,
    lease: std::time::Duration,
) -> Result<Begun<Charge>> {
    let charge = charges::lock(tx, tenant, id).await?.charge;
    let auth = authorization(&charge)?;
    if charge.status != ChargeStatus::Authorized {
        if auth.void_reason == Some(VoidReason::Requested) && auth.void_reference.as_deref() == Some(reference) {
            return Ok(match charge.status {
                ChargeStatus::Voiding => Begun::InFlight(charge),
                _ => Begun::Final(Outcome::Existing(charge)),
            });
        }
        return Err(Error::ChargeNotAuthorized { id, status: charge.status.as_str() });
    }
    if charge.is_card() {
        let end = crate::card_holds::End::Void { reason: VoidReason::Requested, reference: Some(reference) };
        return crate::card_holds::begin(tx, tenant, &charge, &end, lease).await.map(Begun::InFlight);
    }
    let voided = release_all(tx, tenant, &charge, auth, VoidReason::Requested, Some(reference)).await?;
    Ok(Begun::Final(Outcome::Applied(voided)))
}

/// Authorizations whose deadline has passed, soonest first, at most
/// `limit`: what the expirer voids next.
pub async fn due(client: &impl GenericClient, limit: i64) -> Result<Vec<(TenantId, Uuid)>> {
    let rows = client
        .query(
            "SELECT c.tenant_id, c.id FROM charge_authorizations h JOIN charges c ON c.id = h.charge_id \
              WHERE h.captured_at IS NULL AND h.voided_at IS NULL AND h.expires_at <= now() \
                AND c.status = 'authorized' \
              ORDER BY h.expires_at LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (TenantId(r.get(0)), r.get(1))).collect())
}

/// What an expiry did.
#[derive(Debug)]
pub enum Expired {
    /// A wallet's hold went back to the buyer: the charge is `voided`.
    Released(Charge),
    /// A card's authorization is to be cancelled at the provider: the
    /// charge is `voiding` (`card_holds`), for the caller to drive.
    Cancelling(Charge),
}

/// Voids an authorization past its deadline (reason `expired`), unless a
/// capture or a void ended it first: `None` then, nothing written.
pub async fn expire(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    lease: std::time::Duration,
) -> Result<Option<Expired>> {
    let charge = charges::lock(tx, tenant, id).await?.charge;
    let auth = authorization(&charge)?;
    if charge.status != ChargeStatus::Authorized {
        return Ok(None);
    }
    if !past_deadline(tx, auth).await? {
        return Ok(None);
    }
    if charge.is_card() {
        let end = crate::card_holds::End::Void { reason: VoidReason::Expired, reference: None };
        return crate::card_holds::begin(tx, tenant, &charge, &end, lease).await.map(|c| Some(Expired::Cancelling(c)));
    }
    release_all(tx, tenant, &charge, auth, VoidReason::Expired, None).await.map(|c| Some(Expired::Released(c)))
}

/// What is held for `account` by its open authorizations.
pub async fn pending(client: &impl GenericClient, tenant: TenantId, account: Uuid) -> Result<Decimal> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(h.amount), 0) FROM charges c JOIN charge_authorizations h ON h.charge_id = c.id \
              WHERE c.buyer_account_id = $1 AND c.tenant_id = $2 AND c.status = 'authorized'",
            &[&account, &tenant.0],
        )
        .await?;
    Ok(row.get(0))
}

/// Gives an open authorization's whole hold back to the buyer and records
/// why: the end of a void and of an expiry.
async fn release_all(
    tx: &Transaction<'_>,
    tenant: TenantId,
    charge: &Charge,
    auth: &Authorization,
    reason: VoidReason,
    reference: Option<&str>,
) -> Result<Charge> {
    let (hold, buyer) = wallet(charge, auth)?;
    let locked = read(tx, tenant, &[hold, buyer], charge.currency).await?;
    let release = posted(
        post(tx, tenant, "release", charge.currency, &locked, &[(hold, -auth.amount), (buyer, auth.amount)]).await?,
    )?;
    tx.cached_execute(
        "WITH c AS (UPDATE charges SET status = 'voided' WHERE id = $1) \
         UPDATE charge_authorizations SET release_transaction_id = $2, void_reference = $3, void_reason = $4, \
                                          voided_at = now() \
          WHERE charge_id = $1",
        &[&charge.id, &release, &reference, &reason.as_str()],
    )
    .await?;
    let charge = charges::get_in(tx, tenant, charge.id).await?;
    outbox::enqueue(tx, tenant, Some(&charge.order_id), &charges::voided_event(&charge)?).await?;
    Ok(charge)
}

/// Whether an authorization's deadline has passed, by the database's clock
/// (one clock for every process that may capture or expire it).
async fn past_deadline(tx: &Transaction<'_>, auth: &Authorization) -> Result<bool> {
    Ok(tx.cached_one("SELECT now() >= $1::timestamptz", &[&auth.expires_at]).await?.get(0))
}

/// The accounts `ids` read for a posting that debits none with a floor
/// (the holds account may go negative): no account row is locked, every
/// leg lands on a slot, so captures and voids never queue on a buyer.
async fn read(
    tx: &Transaction<'_>,
    tenant: TenantId,
    ids: &[Uuid],
    currency: Currency,
) -> Result<std::collections::BTreeMap<Uuid, crate::posting::LockedAccount>> {
    crate::posting::lock_debited(tx, tenant, ids, &[], currency).await
}

/// A posting that debits no account with a floor cannot be declined.
fn posted(result: std::result::Result<Uuid, crate::Decline>) -> Result<Uuid> {
    result.map_err(|decline| Error::unknown("decline of a hold's posting", format!("{decline:?}")))
}

fn authorization(charge: &Charge) -> Result<&Authorization> {
    charge.authorization.as_ref().ok_or(Error::ChargeNotAuthorized { id: charge.id, status: charge.status.as_str() })
}

/// A wallet authorization's holds account and buyer.
fn wallet(charge: &Charge, auth: &Authorization) -> Result<(Uuid, Uuid)> {
    match (auth.hold_account_id, charge.buyer_account_id) {
        (Some(hold), Some(buyer)) => Ok((hold, buyer)),
        _ => Err(Error::unknown("authorization without a wallet hold", charge.id.to_string())),
    }
}

/// The deadline of an authorization made now that holds for `window` (the
/// API bounds it to 30 days).
pub fn deadline(now: DateTime<Utc>, window: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(window).expect("an authorization window within chrono's range")
}
