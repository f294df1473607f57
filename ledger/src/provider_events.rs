//! Webhooks from the payment provider: at least once, out of order,
//! possibly long after the call. Each event is recorded in the inbox (by its
//! id) in the same transaction as its effect, so a repeat changes nothing.
//!
//! - A payment that succeeded or failed completes a card charge still
//!   `processing` (`cards::complete`, as the client's retry or the completer
//!   would).
//! - One that repeats the recorded outcome is a no-op.
//! - One that contradicts it (a failure after a success, a success of a
//!   failed charge, a second payment for a paid charge, another amount) moves
//!   no money: it is flagged in `provider_flags` for an operator
//!   (`ledger-workers provider-flags`).

use deadpool_postgres::Transaction;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::cards::{complete, flag, Completion, ProviderAnswer};
use crate::refunds::{RefundAnswer, RefundStatus};
use crate::{inbox, Result, TenantId};

/// The inbox's consumer name for provider webhooks.
pub const CONSUMER: &str = "provider-webhooks";

/// An event as the ledger reads it (the API parses and verifies it).
#[derive(Debug, Clone)]
pub struct ProviderEvent {
    /// The provider's event id (`evt_...`): what a repeat is known by.
    pub id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// A payment's final outcome, with the metadata we sent with it.
    Payment { answer: ProviderAnswer, tenant_id: Option<Uuid>, charge_id: Option<Uuid> },
    /// A refund's final outcome (succeeded, or failed, also after it had
    /// succeeded), with the metadata we sent with it.
    Refund { answer: RefundAnswer, tenant_id: Option<Uuid>, charge_id: Option<Uuid>, reference: Option<String> },
    /// Anything else (refunds, other objects): recorded, nothing to do.
    Other,
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Seen before: nothing done.
    Duplicate,
    /// Completed a `processing` charge.
    Completed,
    /// The charge already had this outcome.
    AlreadyRecorded,
    /// Contradicts the recorded outcome: flagged, no money moved.
    Flagged,
    /// Nothing to do with it (no charge of ours, or not a payment outcome).
    Ignored,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Duplicate => "duplicate",
            Effect::Completed => "completed",
            Effect::AlreadyRecorded => "already_recorded",
            Effect::Flagged => "flagged",
            Effect::Ignored => "ignored",
        }
    }
}

/// The inbox id of a provider event: its id's digest as a UUID (the inbox
/// keys on UUIDs; a provider's ids are text).
pub fn message_id(event_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("{CONSUMER}:{event_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// Applies one verified event within `tx`, recording it in the inbox.
pub async fn receive(tx: &Transaction<'_>, event: &ProviderEvent) -> Result<Effect> {
    if !inbox::record(tx, CONSUMER, message_id(&event.id)).await? {
        return Ok(Effect::Duplicate);
    }
    let (answer, tenant_id, charge_id) = match &event.kind {
        EventKind::Payment { answer, tenant_id, charge_id } => (answer, tenant_id, charge_id),
        EventKind::Refund { answer, tenant_id, charge_id, reference } => {
            return refund(tx, event, answer, *tenant_id, *charge_id, reference.as_deref()).await
        }
        EventKind::Other => return Ok(Effect::Ignored),
    };
    let payment_id = match answer {
        ProviderAnswer::Succeeded { payment_id, .. } | ProviderAnswer::Authorized { payment_id, .. } => {
            Some(payment_id.as_str())
        }
        ProviderAnswer::Declined { payment_id, .. } => payment_id.as_deref(),
        ProviderAnswer::RequiresAction { payment_id, .. } => Some(payment_id.as_str()),
    };
    // The charge: by the payment id recorded on it, else by the metadata we sent.
    let owner = match payment_id {
        Some(id) => tx
            .query_opt(
                "SELECT c.tenant_id, c.id FROM card_charges k JOIN charges c ON c.id = k.charge_id \
                  WHERE k.provider_payment_id = $1",
                &[&id],
            )
            .await?
            .map(|r| (TenantId(r.get(0)), r.get::<_, Uuid>(1))),
        None => None,
    };
    let owner = match (owner, tenant_id, charge_id) {
        (Some(o), _, _) => Some(o),
        (None, Some(t), Some(c)) => tx
            .query_opt(
                "SELECT c.tenant_id, c.id FROM charges c JOIN card_charges k ON k.charge_id = c.id \
                  WHERE c.id = $1 AND c.tenant_id = $2",
                &[c, t],
            )
            .await?
            .map(|r| (TenantId(r.get(0)), r.get::<_, Uuid>(1))),
        _ => None,
    };
    let Some((tenant, charge)) = owner else {
        // a payment we have no charge for: reconcile-payments reports it
        return Ok(Effect::Ignored);
    };
    let before = crate::charges::get(&**tx, tenant, charge).await?;
    if before.status.in_flight() {
        return Ok(match complete(tx, tenant, charge, Some(answer)).await? {
            Completion::Final(_) => Effect::Completed,
            // another amount: flagged by `complete`, nothing moved
            Completion::Processing(_) => Effect::Flagged,
        });
    }
    let contradiction = match (answer, before.status.paid()) {
        // A card authorization's capture in flight records its own answer
        // (its request's retry, or the completer: `card_holds`).
        (ProviderAnswer::Succeeded { payment_id, .. }, false)
            if before.status == crate::charges::ChargeStatus::Capturing
                && before.provider_payment_id.as_deref() == Some(payment_id) =>
        {
            None
        }
        // recorded when it came, or ended since (captured, voided)
        (ProviderAnswer::Authorized { .. }, _) => None,
        (ProviderAnswer::Succeeded { payment_id, .. }, true) => {
            (before.provider_payment_id.as_deref() != Some(payment_id)).then_some("second_payment")
        }
        (ProviderAnswer::Succeeded { .. }, false) => Some("succeeded_after_failed"),
        (ProviderAnswer::Declined { payment_id: Some(p), .. }, true) => {
            (before.provider_payment_id.as_deref() == Some(p)).then_some("failed_after_succeeded")
        }
        (ProviderAnswer::Declined { .. }, _) => None,
        (ProviderAnswer::RequiresAction { .. }, _) => None,
    };
    // A decline of another payment of a paid charge is an earlier attempt of
    // the same key's story (no money either way): nothing to flag.
    match contradiction {
        None => Ok(Effect::AlreadyRecorded),
        Some(kind) => {
            let detail = serde_json::json!({
                "event_id": event.id, "recorded_status": format!("{:?}", before.status).to_lowercase(),
                "recorded_payment_id": before.provider_payment_id, "event": format!("{answer:?}"),
            });
            flag(&**tx, Some(tenant), Some(charge), Some(&event.id), kind, &detail).await?;
            tracing::warn!(charge = %charge, event = %event.id, kind, "provider event contradicts the ledger: flagged");
            Ok(Effect::Flagged)
        }
    }
}

/// A refund's outcome: completes a `pending` refund, reverses a succeeded
/// one the provider failed later (`refunds::complete`), and flags a success
/// of a refund the ledger recorded as failed without the provider saying so
/// (a stored 5xx and a look-up that found nothing). A success of the very
/// refund the provider reported failed is its older event, delivered late
/// (webhooks come in any order, and a refund may fail after it succeeded,
/// never the other way round): already recorded, not a contradiction.
async fn refund(
    tx: &Transaction<'_>,
    event: &ProviderEvent,
    answer: &RefundAnswer,
    tenant_id: Option<Uuid>,
    charge_id: Option<Uuid>,
    reference: Option<&str>,
) -> Result<Effect> {
    let provider_refund_id = match answer {
        RefundAnswer::Succeeded { refund_id, .. } => Some(refund_id.as_str()),
        RefundAnswer::Failed { refund_id, .. } => refund_id.as_deref(),
    };
    // The refund: by the provider's id recorded on it, else by the metadata we sent.
    let mut found = match provider_refund_id {
        Some(id) => crate::refunds::by_provider_refund(&**tx, id).await?,
        None => None,
    };
    if let (None, Some(t), Some(c), Some(r)) = (&found, tenant_id, charge_id, reference) {
        found = crate::refunds::by_reference(&**tx, TenantId(t), c, r).await?;
    }
    let Some(before) = found.filter(|r| r.is_card()) else {
        // a refund we have no record of: reconcile-payments reports it
        return Ok(Effect::Ignored);
    };
    let contradiction = match (before.status, answer) {
        (RefundStatus::Failed, RefundAnswer::Succeeded { refund_id, .. })
            if before.provider_refund_id.as_deref() != Some(refund_id) =>
        {
            Some("refund_succeeded_after_failed")
        }
        (RefundStatus::Succeeded, RefundAnswer::Succeeded { refund_id, .. })
            if before.provider_refund_id.as_deref() != Some(refund_id) =>
        {
            Some("second_refund")
        }
        _ => None,
    };
    if let Some(kind) = contradiction {
        let detail = serde_json::json!({"event_id": event.id, "refund_id": before.id,
            "recorded_provider_refund_id": before.provider_refund_id, "event": format!("{answer:?}")});
        flag(&**tx, Some(before.tenant), Some(before.charge_id), Some(&event.id), kind, &detail).await?;
        tracing::warn!(refund = %before.id, event = %event.id, kind, "provider event contradicts the ledger: flagged");
        return Ok(Effect::Flagged);
    }
    let was = before.status;
    Ok(match crate::refunds::complete(tx, before.tenant, before.id, Some(answer)).await? {
        crate::phases::Completion::Processing(_) => Effect::Flagged,
        crate::phases::Completion::Final(_) => {
            let now = crate::refunds::get(&**tx, before.tenant, before.id).await?.status;
            if now == was {
                Effect::AlreadyRecorded
            } else {
                Effect::Completed
            }
        }
    })
}

/// An open flag: a contradiction an operator has not resolved.
#[derive(Debug, Clone)]
pub struct Flag {
    pub id: i64,
    pub tenant_id: Option<Uuid>,
    pub charge_id: Option<Uuid>,
    pub event_id: Option<String>,
    pub kind: String,
    pub detail: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Every open flag, oldest first.
pub async fn open_flags(client: &impl GenericClient) -> Result<Vec<Flag>> {
    let rows = client
        .query(
            "SELECT id, tenant_id, charge_id, event_id, kind, detail, created_at FROM provider_flags \
              WHERE resolved_at IS NULL ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Flag {
            id: r.get(0),
            tenant_id: r.get(1),
            charge_id: r.get(2),
            event_id: r.get(3),
            kind: r.get(4),
            detail: r.get(5),
            created_at: r.get(6),
        })
        .collect())
}
