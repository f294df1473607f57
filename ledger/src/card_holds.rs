//! The end of a card authorization: its capture or its cancellation at the
//! payment provider, each an effect through the protocol every effect at the
//! provider shares (`service::effects`).
//!
//! `holds` decides, under the charge's row lock, which end wins (a capture,
//! a void, or the expirer) and [`begin`] records it: the charge `capturing`
//! or `voiding`, its reference and reason on the authorization, and one
//! `card_authorization_ends` row (its primary key is the charge: one end,
//! ever) with a lease. The provider is then asked with a key derived from
//! the charge alone (`gateway::capture_key`, `gateway::void_key`), and
//! [`complete`] records the answer under the row lock:
//!
//! - captured: the `charge` transaction from the tenant's provider clearing
//!   account to the seller and the platform, for what was captured (the
//!   issuer released the rest), and `charge.captured`;
//! - cancelled: nothing moves in the ledger (the issuer held the money);
//!   the charge is `voided`, with `charge.voided`. A capture that finds the
//!   authorization already cancelled at the provider (it expired there
//!   first) ends the same way, reason `expired`, and its request is answered
//!   `authorization_expired`.
//!
//! A capture and a cancellation are idempotent at the provider by the
//! payment's own state as well as by their keys (a payment is captured or
//! cancelled once), and only this row's end is ever sent for a charge: so an
//! answer about the payment (it is `succeeded`, it is `canceled`) is this
//! end's answer, whenever it was sent.

use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::cards::{flag, matches_payment};
use crate::charges::{self, captured_event, voided_event, Charge, ChargeStatus, VoidReason};
use crate::db::Cached;
use crate::phases::Completion;
use crate::{outbox, Decline, Outcome, Result, TenantId};

/// Which end a card authorization is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capture,
    Void,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Capture => "capture",
            Kind::Void => "void",
        }
    }

    /// The charge's status while this end is in flight.
    pub fn in_flight(self) -> ChargeStatus {
        match self {
            Kind::Capture => ChargeStatus::Capturing,
            Kind::Void => ChargeStatus::Voiding,
        }
    }
}

/// An end as `holds` decided it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum End<'a> {
    /// Take `amount` (checked against the hold and the fee), by `reference`.
    Capture { amount: rust_decimal::Decimal, reference: &'a str },
    /// Cancel, asked for (with its reference) or expired.
    Void { reason: VoidReason, reference: Option<&'a str> },
}

/// Records the end that won (the caller holds the charge's row lock and has
/// checked it is `authorized`): the charge in flight, with a lease of
/// `lease` for whoever asks the provider.
pub(crate) async fn begin(
    tx: &Transaction<'_>,
    tenant: TenantId,
    charge: &Charge,
    end: &End<'_>,
    lease: Duration,
) -> Result<Charge> {
    let lease = lease.as_secs_f64();
    match *end {
        End::Capture { amount, reference } => {
            // the charge's amount is what it takes (refunds read it)
            tx.cached_execute(
                "WITH c AS (UPDATE charges SET status = 'capturing', amount = $2 WHERE id = $1), \
                      a AS (UPDATE charge_authorizations SET capture_reference = $3 WHERE charge_id = $1) \
                 INSERT INTO card_authorization_ends (charge_id, kind, lease_until) \
                 VALUES ($1, 'capture', now() + make_interval(secs => $4))",
                &[&charge.id, &amount, &reference, &lease],
            )
            .await?;
        }
        End::Void { reason, reference } => {
            tx.cached_execute(
                "WITH c AS (UPDATE charges SET status = 'voiding' WHERE id = $1), \
                      a AS (UPDATE charge_authorizations SET void_reference = $2, void_reason = $3 \
                             WHERE charge_id = $1) \
                 INSERT INTO card_authorization_ends (charge_id, kind, lease_until) \
                 VALUES ($1, 'void', now() + make_interval(secs => $4))",
                &[&charge.id, &reference, &reason.as_str(), &lease],
            )
            .await?;
        }
    }
    charges::get_in(tx, tenant, charge.id).await
}

/// The charge right before its end is sent to the provider, with a fresh
/// lease (and the send counted) while that end is in flight.
pub async fn take(client: &impl Cached, tenant: TenantId, id: Uuid, kind: Kind, lease: Duration) -> Result<Charge> {
    client
        .cached_execute(
            "UPDATE card_authorization_ends e SET lease_until = now() + make_interval(secs => $4), \
                    sends = e.sends + 1, first_sent_at = coalesce(e.first_sent_at, now()) FROM charges c \
              WHERE e.charge_id = $1 AND c.id = e.charge_id AND c.tenant_id = $2 AND e.kind = $3 \
                AND e.completed_at IS NULL",
            &[&id, &tenant.0, &kind.as_str(), &lease.as_secs_f64()],
        )
        .await?;
    charges::get_in(client, tenant, id).await
}

/// Ends of `kind` in flight whose lease has passed, oldest lease first, at
/// most `limit`, each leased again in the same statement (two completers
/// never take the same one).
pub async fn claim_stale(
    client: &impl GenericClient,
    kind: Kind,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(TenantId, Charge)>> {
    let rows = client
        .query(
            "UPDATE card_authorization_ends e SET lease_until = now() + make_interval(secs => $2), \
                    first_sent_at = coalesce(e.first_sent_at, now()) FROM charges c \
              WHERE c.id = e.charge_id AND e.charge_id IN ( \
                    SELECT charge_id FROM card_authorization_ends \
                     WHERE completed_at IS NULL AND lease_until < now() AND kind = $1 \
                     ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING c.tenant_id, c.id",
            &[&kind.as_str(), &lease.as_secs_f64(), &limit],
        )
        .await?;
    let mut taken = Vec::with_capacity(rows.len());
    for r in rows {
        let tenant = TenantId(r.get(0));
        taken.push((tenant, charges::get(client, tenant, r.get(1)).await?));
    }
    Ok(taken)
}

/// Whether the end was first sent less than `window` ago (never sent: yes).
pub async fn sent_within(client: &impl GenericClient, id: Uuid, window: Duration) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce(first_sent_at > clock_timestamp() - make_interval(secs => $2), true) \
               FROM card_authorization_ends WHERE charge_id = $1",
            &[&id, &window.as_secs_f64()],
        )
        .await?;
    Ok(row.get(0))
}

/// What the provider says of an authorization's payment, as an end records
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndAnswer {
    /// The payment is captured: `amount_minor` taken (`amount_received`).
    Captured { payment_id: String, amount_minor: i64, currency: String },
    /// The payment is cancelled: nothing taken, the issuer released the hold.
    Canceled { payment_id: String },
}

/// The final answer of an end whose charge is no longer in flight.
fn ended(charge: Charge, kind: Kind) -> Outcome<Charge> {
    match (kind, charge.status) {
        (Kind::Capture, ChargeStatus::Voided) => Outcome::Declined(Decline::AuthorizationExpired),
        _ => Outcome::Applied(charge),
    }
}

/// Records the provider's answer to an end of `kind` under the charge's row
/// lock. `None` only reads the charge's state under that lock.
pub async fn complete(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    kind: Kind,
    answer: Option<&EndAnswer>,
) -> Result<Completion<Charge>> {
    let charge = charges::lock(tx, tenant, id).await?.charge;
    if charge.status != kind.in_flight() {
        return Ok(Completion::Final(ended(charge, kind)));
    }
    match answer {
        None => Ok(Completion::Processing(charge)),
        Some(EndAnswer::Captured { payment_id, .. }) if kind == Kind::Void => {
            // captured by someone else (the provider's dashboard): the money
            // was taken, but not by anything this ledger asked; an operator decides
            let detail = serde_json::json!({"payment_id": payment_id});
            flag(&**tx, Some(tenant), Some(id), None, "captured_while_voiding", &detail).await?;
            Ok(Completion::Processing(charge))
        }
        Some(EndAnswer::Captured { payment_id, amount_minor, currency }) => {
            if !matches_payment(tx, tenant, &charge, payment_id, *amount_minor, currency).await? {
                return Ok(Completion::Processing(charge));
            }
            let clearing = charge.clearing_account_id.ok_or_else(|| charges::missing("clearing account", &charge))?;
            let transaction_id = crate::cards::book(tx, tenant, &charge, clearing).await?;
            tx.cached_execute(
                "WITH c AS (UPDATE charges SET status = 'succeeded', transaction_id = $2 WHERE id = $1), \
                      a AS (UPDATE charge_authorizations SET captured_at = now() WHERE charge_id = $1) \
                 UPDATE card_authorization_ends SET completed_at = now(), lease_until = NULL WHERE charge_id = $1",
                &[&id, &transaction_id],
            )
            .await?;
            let captured = charges::get_in(tx, tenant, id).await?;
            outbox::enqueue(tx, tenant, Some(&captured.order_id), &captured_event(&captured)?).await?;
            Ok(Completion::Final(Outcome::Applied(captured)))
        }
        Some(EndAnswer::Canceled { .. }) => {
            let held = charge.requested_amount();
            // A void keeps the reason it began with; a capture that found
            // the authorization cancelled lost to its expiry at the provider.
            tx.cached_execute(
                "WITH c AS (UPDATE charges SET status = 'voided', amount = $2 WHERE id = $1), \
                      a AS (UPDATE charge_authorizations SET voided_at = now(), \
                                   void_reason = coalesce(void_reason, 'expired') WHERE charge_id = $1) \
                 UPDATE card_authorization_ends SET completed_at = now(), lease_until = NULL WHERE charge_id = $1",
                &[&id, &held],
            )
            .await?;
            let voided = charges::get_in(tx, tenant, id).await?;
            outbox::enqueue(tx, tenant, Some(&voided.order_id), &voided_event(&voided)?).await?;
            Ok(Completion::Final(ended(voided, kind)))
        }
    }
}
