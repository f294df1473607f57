//! The event feed: a tenant's events, so that a client can catch up without
//! a message broker. Each event is served as the stored bytes of the
//! envelope the relay publishes to RabbitMQ (`ledger::outbox::Message`).

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::state::AppState;

/// An event: the JSON envelope the relay publishes to RabbitMQ for it, the
/// same bytes. Kept as long as the outbox keeps the event:
/// `OUTBOX_RETENTION_SECS` (7 days by default) after its first publication.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The event's id: the same every time it is published, which consumers
    /// deduplicate on, and the cursor of the list. A UUIDv7 of the clock of
    /// the process that wrote the event; the list's order is the order the
    /// events were written in, which need not be the order of these ids.
    pub message_id: Uuid,
    /// The event type, e.g. `charge.succeeded`; the AMQP routing key.
    #[serde(rename = "type")]
    #[schema(example = "charge.succeeded")]
    pub event_type: String,
    /// The version of `data`'s shape for this type; a breaking change is a
    /// new version, published beside the old one.
    #[schema(minimum = 1, example = 1)]
    pub version: u32,
    pub tenant_id: Uuid,
    /// The order the event is about, if any.
    pub order_id: Option<String>,
    /// When the event was written, by the clock of the process that wrote it.
    pub occurred_at: DateTime<Utc>,
    /// The event's payload, in the shape of its type and version (for
    /// `charge.succeeded`, the charge).
    #[schema(value_type = Object)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Get an event by its `message_id`.
#[utoipa::path(
    operation_id = "get_event",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event's `message_id`")),
    responses(
        (status = 200, description = "The event: the envelope the relay publishes, byte for byte", body = Event),
        (status = 404, description = "`event_not_found`: no such event for this tenant, or no longer kept; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/events/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let event = ledger::feed::get(&**client, caller.0, *id).await?;
    Ok(json(event.payload))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `message_id` of an event of this list: the page holds the events
    /// just older than it (the next page after a page: its last event's id).
    pub starting_after: Option<Uuid>,
    /// The `message_id` of an event of this list: the page holds the events
    /// just newer than it (the page before a page: its first event's id; to
    /// catch up, the newest event already seen).
    pub ending_before: Option<Uuid>,
    /// Only events of exactly this type, e.g. `charge.succeeded` (a type
    /// that does not exist lists nothing).
    #[serde(rename = "type")]
    #[param(
        min_length = 1,
        max_length = 100,
        pattern = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
        example = "charge.succeeded"
    )]
    pub event_type: Option<String>,
    /// Only events written at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    pub created_gte: Option<DateTime<Utc>>,
    /// Only events written before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    pub created_lt: Option<DateTime<Utc>>,
}

/// Whether `value` is an event type as the `type` parameter documents it:
/// dot-separated words of lower-case letters, digits and `_`.
fn is_event_type(value: &str) -> bool {
    value.len() <= 100
        && value.contains('.')
        && value.split('.').all(|word| {
            word.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

#[derive(Debug, utoipa::ToSchema)]
pub struct EventList {
    /// The page, newest first.
    pub data: Vec<Event>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older events (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

/// List the events the outbox holds, newest first (in the order they were
/// written), a page at a time: each the envelope the relay publishes to
/// RabbitMQ, byte for byte. Events are kept as long as the outbox keeps
/// them: `OUTBOX_RETENTION_SECS` (7 days by default) after their first
/// publication; a cursor that is no longer kept is 404 `event_not_found`.
#[utoipa::path(
    operation_id = "list_events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events (empty when none)", body = EventList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`event_not_found`: `starting_after` or `ending_before` is not one of this tenant's events (or no longer kept)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `type` is not dot-separated words of lower-case letters, digits and `_` (at most 100 characters)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/events")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let event_type = match q.event_type.as_deref() {
        Some(t) if !is_event_type(t) => {
            return Err(ApiError::invalid_field(
                "`type` must be dot-separated words of lower-case letters, digits and `_`, at most 100 characters",
            ))
        }
        t => t,
    };
    let filter = ledger::feed::EventFilter { event_type, created_gte: q.created_gte, created_lt: q.created_lt };
    let client = state.pool.get().await?;
    let page = ledger::feed::list(&**client, caller.0, &filter, cursor, limit).await?;
    let events: Vec<&str> = page.data.iter().map(|e| e.payload.as_str()).collect();
    Ok(json(format!("{{\"data\":[{}],\"has_more\":{}}}", events.join(","), page.has_more)))
}

/// A 200 with a JSON body made of stored envelopes, unchanged.
fn json(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body)
}

#[cfg(test)]
mod tests {
    use super::is_event_type;

    #[test]
    fn event_types_are_dot_separated_lower_case_words() {
        for ok in ["charge.succeeded", "charge.refund_failed", "reservation.held", "a.b.c", "v2.x1"] {
            assert!(is_event_type(ok), "{ok}");
        }
        for bad in
            ["", "charge", ".succeeded", "charge.", "Charge.succeeded", "charge..x", "1a.b", "a._b", "a.b ", "a.é"]
        {
            assert!(!is_event_type(bad), "{bad:?}");
        }
        assert!(!is_event_type(&format!("a.{}", "b".repeat(99))));
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// Only to this endpoint (whatever its event types); absent: to every
    /// enabled endpoint subscribed to the event's type.
    pub endpoint_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redelivery {
    pub event_id: Uuid,
    /// The endpoints the event goes to again, each from its first attempt.
    pub endpoint_ids: Vec<Uuid>,
}

/// Send an event to webhook endpoints again.
///
/// Each delivery starts over (due now, from its first attempt), whether it
/// was delivered, failed or never made (an endpoint registered after the
/// event); its earlier attempts stay in the endpoint's attempts list. The
/// event goes with its own `webhook-id`: a receiver that dedupes on it
/// ignores a copy it already applied.
#[utoipa::path(
    operation_id = "redeliver_event",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event's `message_id`"), IdempotencyKey),
    request_body = Redeliver,
    responses(
        (status = 200, description = "Scheduled: the endpoints it goes to (none when no endpoint wants it)", body = Redelivery),
        (status = 404, description = "`event_not_found`: no such event for this tenant, or no longer kept; `webhook_endpoint_not_found`: `endpoint_id` is not one of this tenant's endpoints; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/events/{id}/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: JsonBody<Redeliver>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, message_id, endpoint) = (caller.0, *id, body.value.endpoint_id);
    idempotency::run(&state, tenant, &key, &body.canonical, Applied::Ok, async |tx| {
        let event = ledger::feed::get(&**tx, tenant, message_id).await?;
        if let Some(endpoint) = endpoint {
            ledger::webhook_endpoints::get(&**tx, tenant, endpoint).await?;
        }
        let endpoint_ids = ledger::webhook_deliveries::redeliver(
            &**tx,
            tenant,
            message_id,
            &event.event_type,
            event.payload.as_bytes(),
            endpoint,
        )
        .await?;
        Ok(ledger::Outcome::Applied(Redelivery { event_id: message_id, endpoint_ids }))
    })
    .await
}
