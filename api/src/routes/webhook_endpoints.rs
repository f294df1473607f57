//! Webhook endpoints: where a tenant's storefront receives its events,
//! signed the Standard Webhooks way (`service::signing`) and delivered by
//! the webhooks worker (`workers::webhooks`).

use actix_web::http::StatusCode;
use actix_web::{delete, get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use ledger::webhook_endpoints::{Change, NewEndpoint, ALL, EVENT_TYPES};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    #[schema(example = "https://shop.example.com/webhooks/ledger")]
    pub url: String,
    pub description: Option<String>,
    /// The event types delivered to it; `*` for all.
    #[schema(example = json!(["charge.succeeded", "charge.captured"]))]
    pub enabled_events: Vec<String>,
    /// A disabled endpoint is delivered nothing until it is enabled again
    /// (its deliveries wait meanwhile). The service disables one that has
    /// failed every attempt for 3 days (`disabled_reason`).
    pub enabled: bool,
    /// Why the service disabled it; cleared when it is enabled again.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed (absent after a delivery).
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs (both
    /// signatures are sent meanwhile).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it was deleted: only the answer to its deletion shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<ledger::webhook_endpoints::Endpoint> for WebhookEndpoint {
    fn from(e: ledger::webhook_endpoints::Endpoint) -> Self {
        WebhookEndpoint {
            id: e.id,
            url: e.url,
            description: e.description,
            enabled_events: e.enabled_events,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at,
            created_at: e.created_at,
            updated_at: e.updated_at,
            deleted_at: e.deleted_at,
        }
    }
}

/// An endpoint with its signing secret: shown here only, when the endpoint
/// is made and when its secret is rotated (and in a replay of those
/// requests with their Idempotency-Key).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// `whsec_` and base64: give it to a Standard Webhooks verifier.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

impl From<ledger::webhook_endpoints::WithSecret> for WebhookEndpointWithSecret {
    fn from(e: ledger::webhook_endpoints::WithSecret) -> Self {
        WebhookEndpointWithSecret { endpoint: e.endpoint.into(), secret: e.secret }
    }
}

/// An event type an endpoint subscribes to; `*` for all of them.
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[allow(dead_code)] // documents the values `enabled_events` takes (kept as strings)
pub enum WebhookEventType {
    #[schema(rename = "*")]
    All,
    #[schema(rename = "charge.succeeded")]
    ChargeSucceeded,
    #[schema(rename = "charge.refunded")]
    ChargeRefunded,
    #[schema(rename = "charge.refund_failed")]
    ChargeRefundFailed,
    #[schema(rename = "charge.authorized")]
    ChargeAuthorized,
    #[schema(rename = "charge.captured")]
    ChargeCaptured,
    #[schema(rename = "charge.voided")]
    ChargeVoided,
    #[schema(rename = "reservation.held")]
    ReservationHeld,
    #[schema(rename = "reservation.released")]
    ReservationReleased,
    #[schema(rename = "reservation.committed")]
    ReservationCommitted,
    #[schema(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// Where to POST the events: `https://` (or `http://`), not a private,
    /// loopback or link-local address.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^https?://[!-~]+$",
        example = "https://shop.example.com/webhooks/ledger"
    )]
    pub url: String,
    /// The event types to deliver, or `["*"]` for all of them.
    #[schema(value_type = Vec<WebhookEventType>, min_items = 1, max_items = 64, example = json!(["*"]))]
    pub enabled_events: Vec<String>,
    #[schema(max_length = 500, example = "storefront order updates")]
    pub description: Option<String>,
}

/// Checks a destination and a list of event types.
async fn checked(state: &AppState, url: &str, events: &[String]) -> Result<(), ApiError> {
    service::destinations::check(url, state.config.webhook_allow_private).await.map_err(|refused| match refused {
        service::destinations::Refused::InvalidUrl(why) => ApiError::rule(ProblemCode::InvalidUrl, why),
        service::destinations::Refused::Private(why) => ApiError::rule(ProblemCode::PrivateDestination, why),
    })?;
    if events.is_empty() || events.len() > 64 {
        return Err(ApiError::invalid_field("`enabled_events` holds 1 to 64 event types"));
    }
    if let Some(unknown) = events.iter().find(|e| e.as_str() != ALL && !EVENT_TYPES.contains(&e.as_str())) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::UnknownEventType,
            format!("`{unknown}` is not an event type: one of {} or `*`", EVENT_TYPES.join(", ")),
        ));
    }
    Ok(())
}

fn description(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    match value {
        Some(d) if d.chars().count() > 500 => Err(ApiError::invalid_field("`description` has at most 500 characters")),
        other => Ok(other),
    }
}

/// Register a webhook endpoint.
///
/// Each event of the subscribed types is POSTed to it (`ledger-workers
/// webhooks`) at least once, its body the event's envelope (as `GET
/// /v1/events/{id}` shows it), signed with the Standard Webhooks scheme:
/// `webhook-id` (the event id, the same on every retry: dedupe on it),
/// `webhook-timestamp`, `webhook-signature`. A 2xx within 10 seconds is a
/// delivery; anything else is retried with backoff for about three days.
/// Order across events is not promised. The signing secret (`whsec_`) is in
/// this answer only.
#[utoipa::path(
    operation_id = "create_webhook_endpoint",
    tag = "webhooks",
    params(IdempotencyKey),
    request_body = CreateWebhookEndpoint,
    responses(
        (status = 201, description = "Registered: the endpoint and its signing secret", body = WebhookEndpointWithSecret),
        (status = 409, description = "`invalid_url`: not an `http` or `https` URL, or its host does not resolve; `private_destination`: its host is (or resolves to) a private, loopback or link-local address", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_event_type`; `invalid_field`: `enabled_events` empty or longer than 64, `description` over 500 characters", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhook_endpoints")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateWebhookEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    checked(&state, &b.url, &b.enabled_events).await?;
    let secret = service::signing::new_secret();
    let new = NewEndpoint {
        url: &b.url,
        description: description(b.description.as_deref())?,
        enabled_events: &b.enabled_events,
        secret: &secret,
    };
    idempotency::run(&state, caller.0, &key, &body.canonical, Applied::Created, async |tx| {
        Ok(ledger::webhook_endpoints::create(tx, caller.0, &new).await?.map(WebhookEndpointWithSecret::from))
    })
    .await
}

/// Get a webhook endpoint (without its secret).
#[utoipa::path(
    operation_id = "get_webhook_endpoint",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpoint),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this tenant (or deleted); `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhook_endpoints/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let endpoint = ledger::webhook_endpoints::get(&**client, caller.0, *id).await?;
    Ok(HttpResponse::Ok().json(WebhookEndpoint::from(endpoint)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookEndpointsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of an endpoint of this list: the page holds the endpoints just older than it.
    pub starting_after: Option<Uuid>,
    /// The id of an endpoint of this list: the page holds the endpoints just newer than it.
    pub ending_before: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointList {
    /// The page, newest first.
    pub data: Vec<WebhookEndpoint>,
    /// Whether the list goes on past this page in the direction it was read.
    pub has_more: bool,
}

/// List webhook endpoints, newest first, a page at a time.
#[utoipa::path(
    operation_id = "list_webhook_endpoints",
    tag = "webhooks",
    params(WebhookEndpointsQuery),
    responses(
        (status = 200, description = "A page of endpoints (empty when none)", body = WebhookEndpointList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`webhook_endpoint_not_found`: `starting_after` or `ending_before` is not one of this tenant's endpoints", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhook_endpoints")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<WebhookEndpointsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let client = state.pool.get().await?;
    let page = ledger::webhook_endpoints::list(&**client, caller.0, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(WebhookEndpointList {
        data: page.data.into_iter().map(WebhookEndpoint::from).collect(),
        has_more: page.has_more,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^https?://[!-~]+$",
        example = "https://shop.example.com/webhooks/ledger"
    )]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<WebhookEventType>>, min_items = 1, max_items = 64)]
    pub enabled_events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 500)]
    pub description: Option<Option<String>>,
}

/// A field given as `null` is `Some(None)`, one left out `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Change a webhook endpoint: its URL, events, description, or whether it is enabled.
///
/// Only the fields given change. The same request again leaves the same
/// endpoint (no Idempotency-Key needed).
#[utoipa::path(
    operation_id = "update_webhook_endpoint",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    request_body = UpdateWebhookEndpoint,
    responses(
        (status = 200, description = "The endpoint as changed", body = WebhookEndpoint),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this tenant (or deleted); `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`invalid_url`, `private_destination`: as when registering", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_event_type`, `invalid_field`: as when registering", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/webhook_endpoints/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: JsonBody<UpdateWebhookEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let client = state.pool.get().await?;
    let current = ledger::webhook_endpoints::get(&**client, caller.0, *id).await?;
    let url = b.url.as_deref().unwrap_or(&current.url);
    let events = b.enabled_events.as_deref().unwrap_or(&current.enabled_events);
    checked(&state, url, events).await?;
    let change = Change {
        url: b.url.as_deref(),
        description: b.description.as_ref().map(|d| description(d.as_deref())).transpose()?,
        enabled_events: b.enabled_events.as_deref(),
        enabled: b.enabled,
    };
    let endpoint = ledger::webhook_endpoints::update(&**client, caller.0, *id, &change).await?;
    Ok(HttpResponse::Ok().json(WebhookEndpoint::from(endpoint)))
}

/// Delete a webhook endpoint: nothing more is delivered to it.
#[utoipa::path(
    operation_id = "delete_webhook_endpoint",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id")),
    responses(
        (status = 200, description = "Deleted: the endpoint, with `deleted_at`", body = WebhookEndpoint),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this tenant (or deleted already); `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/webhook_endpoints/{id}")]
pub async fn remove(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let endpoint = ledger::webhook_endpoints::delete(&**client, caller.0, *id).await?;
    Ok(HttpResponse::Ok().json(WebhookEndpoint::from(endpoint)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the current secret keeps signing beside the new one, in
    /// seconds (0 to 604,800; default 86,400): time for the receiver to
    /// switch. 0 stops it at once.
    #[schema(minimum = 0, maximum = 604800, example = 86400)]
    pub expire_previous_in: Option<i64>,
}

/// Rotate a webhook endpoint's signing secret.
///
/// The new secret is in this answer only; the previous one keeps signing
/// beside it (two signatures in `webhook-signature`) for
/// `expire_previous_in` seconds.
#[utoipa::path(
    operation_id = "rotate_webhook_endpoint_secret",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id"), IdempotencyKey),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "Rotated: the endpoint and its new signing secret", body = WebhookEndpointWithSecret),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this tenant (or deleted); `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `expire_previous_in` not from 0 to 604,800", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/webhook_endpoints/{id}/rotate_secret")]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: JsonBody<RotateSecret>,
) -> Result<HttpResponse, ApiError> {
    let overlap = body.value.expire_previous_in.unwrap_or(86_400);
    if !(0..=604_800).contains(&overlap) {
        return Err(ApiError::invalid_field("`expire_previous_in` is 0 to 604800 seconds"));
    }
    let secret = service::signing::new_secret();
    let (tenant, id) = (caller.0, *id);
    idempotency::run(&state, tenant, &key, &body.canonical, Applied::Ok, async |tx| {
        Ok(ledger::webhook_endpoints::rotate(tx, tenant, id, &secret, overlap)
            .await?
            .map(WebhookEndpointWithSecret::from))
    })
    .await
}

/// One attempt to deliver an event to an endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    /// The attempt's id: the list's cursor.
    #[schema(example = 1042)]
    pub id: i64,
    /// The event's `message_id` (the `webhook-id` sent).
    pub event_id: Uuid,
    #[schema(example = "charge.succeeded")]
    pub event_type: String,
    pub attempted_at: DateTime<Utc>,
    /// What the endpoint answered; absent when it did not (see `error`).
    pub status_code: Option<i32>,
    /// From the request's start to the answer's first KiB, or the error.
    pub latency_ms: i32,
    /// The first KiB of the answer's body.
    pub response_excerpt: Option<String>,
    /// Why there was no answer: the destination refused, the connection, a timeout.
    pub error: Option<String>,
    /// A 2xx: this attempt delivered the event.
    pub delivered: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// An attempt id of this endpoint: the page holds the attempts just older than it.
    #[param(minimum = 1)]
    pub starting_after: Option<i64>,
    /// An attempt id of this endpoint: the page holds the attempts just newer than it.
    #[param(minimum = 1)]
    pub ending_before: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookAttemptList {
    /// The page, newest first.
    pub data: Vec<WebhookAttempt>,
    /// Whether the list goes on past this page in the direction it was read.
    pub has_more: bool,
}

/// List an endpoint's delivery attempts, newest first, a page at a time.
#[utoipa::path(
    operation_id = "list_webhook_attempts",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook endpoint id"), AttemptsQuery),
    responses(
        (status = 200, description = "A page of attempts (empty when none)", body = WebhookAttemptList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`webhook_endpoint_not_found`: no such endpoint for this tenant (or deleted); `webhook_attempt_not_found`: `starting_after` or `ending_before` is not one of its attempts; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/webhook_endpoints/{id}/attempts")]
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<AttemptsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    // the attempts' cursors are their sequence numbers
    let (cursor, limit) = super::page(q.limit, q.starting_after, q.ending_before)?;
    let client = state.pool.get().await?;
    // the endpoint must be the caller's (and not deleted)
    ledger::webhook_endpoints::get(&**client, caller.0, *id).await?;
    let page = ledger::webhook_deliveries::attempts(&**client, *id, cursor, limit).await?;
    let data = page
        .data
        .into_iter()
        .map(|a| WebhookAttempt {
            id: a.id,
            event_id: a.message_id,
            event_type: a.event_type,
            attempted_at: a.attempted_at,
            delivered: a.status.is_some_and(|s| (200..300).contains(&s)),
            status_code: a.status,
            latency_ms: a.latency_ms,
            response_excerpt: a.excerpt,
            error: a.error,
        })
        .collect();
    Ok(HttpResponse::Ok().json(WebhookAttemptList { data, has_more: page.has_more }))
}
