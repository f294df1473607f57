//! Webhooks from the payment provider.

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpRequest, HttpResponse};
use gateway::webhook::{
    EventObject, CHARGE_REFUNDED, CHARGE_REFUND_UPDATED, PAYMENT_FAILED, PAYMENT_SUCCEEDED, REFUND_CREATED,
    REFUND_FAILED, REFUND_UPDATED, SIGNATURE_HEADER,
};
use ledger::provider_events::{EventKind, ProviderEvent};
use serde::Serialize;

use crate::error::{ApiError, ProblemCode};
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct WebhookReceipt {
    /// The provider's event id.
    pub id: String,
    /// What the event did: `completed` (a processing charge got its final
    /// status), `already_recorded`, `duplicate` (this event was received
    /// before), `flagged` (it contradicts what is recorded: no money moved,
    /// an operator decides), `ignored`.
    pub effect: String,
}

/// Receive an event from the payment provider.
///
/// Not for storefronts: the provider calls it, with no API key. The
/// `Stripe-Signature` header (HMAC-SHA256 of the timestamp and the body under
/// the webhook secret) must match and its timestamp must be recent; otherwise
/// the event is refused with 400 and nothing is written. Each event is
/// applied at most once (by its id), in the same transaction as its effect: a
/// payment outcome completes a card charge still `processing`, a refund
/// outcome (`refund.created`, `refund.updated`, `refund.failed`,
/// `charge.refund.updated`) a card refund still `pending`, and a refund the
/// provider fails after it succeeded is undone in the ledger; one that
/// repeats the recorded outcome changes nothing; one that contradicts it
/// moves no money and is flagged for an operator.
///
/// Not in the OpenAPI document: storefronts never call it, and a client
/// generated from the document must not offer it. Registered beside the
/// documented routes (`routes::configure`, `routes::UNDOCUMENTED`).
#[post("/provider/webhooks")]
pub async fn receive(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let signature = req.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let event = state
        .provider
        .verify_webhook(&body, signature)
        .map_err(|e| ApiError::bad_request(ProblemCode::InvalidSignature, format!("the webhook is refused: {e}")))?;
    let kind = match event.kind.as_str() {
        PAYMENT_SUCCEEDED | PAYMENT_FAILED => match event.object() {
            Ok(EventObject::PaymentIntent(intent)) => match service::provider::answer_of(&intent) {
                Some(answer) => EventKind::Payment {
                    answer,
                    tenant_id: intent.metadata.get("tenant_id").and_then(|t| t.parse().ok()),
                    charge_id: intent.metadata.get("charge_id").and_then(|c| c.parse().ok()),
                },
                None => EventKind::Other,
            },
            _ => return Err(ApiError::bad_request(ProblemCode::MalformedJson, "the event's object is not a payment")),
        },
        REFUND_CREATED | REFUND_UPDATED | REFUND_FAILED | CHARGE_REFUND_UPDATED => match event.object() {
            Ok(EventObject::Refund(refund)) => match service::provider::refund_answer_of(&refund) {
                Some(answer) => EventKind::Refund {
                    answer,
                    tenant_id: refund.metadata.get("tenant_id").and_then(|t| t.parse().ok()),
                    charge_id: refund.metadata.get("charge_id").and_then(|c| c.parse().ok()),
                    reference: refund.metadata.get("reference").cloned(),
                },
                None => EventKind::Other,
            },
            _ => return Err(ApiError::bad_request(ProblemCode::MalformedJson, "the event's object is not a refund")),
        },
        // the charge's totals: each refund's own events carry what we record
        CHARGE_REFUNDED => EventKind::Other,
        _ => EventKind::Other,
    };
    let received = ProviderEvent { id: event.id.clone(), kind };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let effect = ledger::provider_events::receive(&tx, &received).await?;
    tx.commit().await?;
    Ok(HttpResponse::build(StatusCode::OK).json(WebhookReceipt { id: event.id, effect: effect.as_str().to_owned() }))
}
