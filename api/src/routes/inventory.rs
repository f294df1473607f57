//! Stock per SKU, and reservations that hold it for an order.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use ledger::idempotency::Answer;
use ledger::reservation_batch::NewReservation;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::routes::{identifier, quantity, sku};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sku {
    #[schema(example = "mug-blue")]
    pub sku: String,
    /// Restocked minus committed (sold and paid).
    pub on_hand: i64,
    /// Held by reservations of orders not yet paid.
    pub reserved: i64,
    /// What a new reservation can still take: on hand minus reserved.
    pub available: i64,
    pub updated_at: DateTime<Utc>,
}

impl From<ledger::inventory::Sku> for Sku {
    fn from(s: ledger::inventory::Sku) -> Self {
        Sku { sku: s.sku, on_hand: s.on_hand, reserved: s.reserved, available: s.available, updated_at: s.updated_at }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reservation {
    pub id: Uuid,
    #[schema(example = "order-1001")]
    pub order_id: String,
    #[schema(example = "mug-blue")]
    pub sku: String,
    #[schema(example = 1)]
    pub quantity: i64,
    pub status: ReservationStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when it holds unpaid (`null` for a reservation made before
    /// reservations expired: it holds until released).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Stock is set aside for the order.
    Held,
    /// The hold was given back before payment.
    Released,
    /// The order was paid and the stock left the shelf.
    Committed,
}

impl ReservationStatus {
    fn into_ledger(self) -> ledger::inventory::ReservationStatus {
        use ledger::inventory::ReservationStatus as S;
        match self {
            ReservationStatus::Held => S::Held,
            ReservationStatus::Released => S::Released,
            ReservationStatus::Committed => S::Committed,
        }
    }
}

impl From<ledger::inventory::Reservation> for Reservation {
    fn from(r: ledger::inventory::Reservation) -> Self {
        use ledger::inventory::ReservationStatus as S;
        Reservation {
            id: r.id,
            order_id: r.order_id,
            sku: r.sku,
            quantity: r.quantity,
            status: match r.status {
                S::Held => ReservationStatus::Held,
                S::Released => ReservationStatus::Released,
                S::Committed => ReservationStatus::Committed,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
            expires_at: r.expires_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRestock {
    /// Units received, 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1000000, example = 10)]
    pub quantity: i64,
}

/// Add stock to a SKU (creating the SKU on its first restock).
#[utoipa::path(
    operation_id = "restock_sku",
    tag = "inventory",
    params(("sku" = String, Path, description = "SKU: 1 to 100 of letters, digits and `._:-`, starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", example = "mug-blue"), IdempotencyKey),
    request_body = CreateRestock,
    responses(
        (status = 201, description = "Restocked; the SKU's stock after it", body = Sku),
        (status = 422, description = "`invalid_field`: not a valid SKU, or `quantity` not from 1 to 1,000,000", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/skus/{sku}/restocks")]
pub async fn restock(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    path: web::Path<String>,
    body: JsonBody<CreateRestock>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku(&path)?;
    let quantity = quantity(body.value.quantity)?;
    idempotency::run(&state, caller.0, &key, &body.canonical, Applied::Created, async |tx| {
        Ok(ledger::inventory::restock(tx, caller.0, sku, quantity).await?.map(Sku::from))
    })
    .await
}

/// Get a SKU's stock: on hand, reserved, available.
#[utoipa::path(
    operation_id = "get_sku",
    tag = "inventory",
    params(("sku" = String, Path, description = "SKU: 1 to 100 of letters, digits and `._:-`, starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", example = "mug-blue")),
    responses(
        (status = 200, description = "The SKU's stock", body = Sku),
        (status = 404, description = "`sku_not_found`: never restocked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: not a valid SKU", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/skus/{sku}")]
pub async fn get_sku(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku(&path)?;
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(Sku::from(ledger::inventory::get_sku(&**client, caller.0, sku).await?)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservation {
    /// One reservation per (order_id, sku), ever.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: String,
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", example = "mug-blue")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000000, example = 1)]
    pub quantity: i64,
    /// How long the stock is held unpaid, in seconds (60 to 2,592,000;
    /// default 604,800, 7 days, as an authorization). Past it the expirer
    /// releases it, unless a charge of the order paid it or may still (an
    /// authorization voids on its own deadline and releases its order's
    /// stock then). Not a term of the reservation: a retry under another
    /// key finds the same one, whatever its deadline.
    #[schema(minimum = 60, maximum = 2592000, example = 604800)]
    pub expires_in: Option<i64>,
}

/// Hold stock for an order.
#[utoipa::path(
    operation_id = "create_reservation",
    tag = "reservations",
    params(IdempotencyKey),
    request_body = CreateReservation,
    responses(
        (status = 201, description = "Held", body = Reservation, headers(("Location" = String, description = "The new reservation's path"))),
        (status = 200, description = "This order already holds this SKU in this quantity: the reservation is returned, no second hold", body = Reservation, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 404, description = "`sku_not_found`: the SKU was never restocked", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`out_of_stock`: not enough available (stored and replayed); `natural_key_conflict`: this order holds this SKU in another quantity", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `order_id`, `sku`, `quantity` (1 to 1,000,000) or `expires_in` is not valid", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/reservations")]
pub async fn reserve(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateReservation>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let order_id = identifier("order_id", &b.order_id)?;
    let sku = sku(&b.sku)?;
    let quantity = quantity(b.quantity)?;
    let window = match b.expires_in {
        None => crate::routes::charges::DEFAULT_AUTHORIZATION_WINDOW,
        Some(secs) if crate::routes::charges::AUTHORIZATION_WINDOW_SECS.contains(&secs) => {
            std::time::Duration::from_secs(secs as u64)
        }
        Some(_) => return Err(ApiError::invalid_field("`expires_in` is 60 to 2592000 seconds")),
    };
    let expires_at = ledger::holds::deadline(chrono::Utc::now(), window);
    let new = NewReservation { order_id: order_id.to_owned(), sku: sku.to_owned(), quantity, expires_at };
    idempotency::run_batched(
        &state,
        state.reservations.as_ref(),
        caller.0,
        &key,
        &body.canonical,
        created(),
        new,
        async |tx, r| {
            let made = ledger::inventory::reserve(tx, caller.0, &r.order_id, &r.sku, r.quantity, r.expires_at).await?;
            Ok(made.map(Reservation::from))
        },
    )
    .await
}

/// What a new reservation answers: 201 with its path.
fn created() -> Applied<Reservation> {
    Applied::CreatedAt(|r: &Reservation| format!("/v1/reservations/{}", r.id))
}

/// The answer a batch stores for a new reservation's outcome: the one
/// [`reserve`] stores for it alone. Given to the batcher at start (it
/// knows no route).
pub(crate) fn batched_answer(outcome: ledger::Outcome<ledger::inventory::Reservation>) -> Answer {
    idempotency::answer(outcome.map(Reservation::from), &created())
}

/// Get a reservation.
#[utoipa::path(
    operation_id = "get_reservation",
    tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id")),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 404, description = "`reservation_not_found`: no such reservation for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/reservations/{id}")]
pub async fn get_reservation(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let reservation = ledger::inventory::get_reservation(&**client, caller.0, *id).await?;
    Ok(HttpResponse::Ok().json(Reservation::from(reservation)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReservationsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of a reservation of this list: the page holds the
    /// reservations just older than it (the next page after a page: its
    /// last reservation's id).
    pub starting_after: Option<Uuid>,
    /// The id of a reservation of this list: the page holds the
    /// reservations just newer than it (the page before a page: its first
    /// reservation's id).
    pub ending_before: Option<Uuid>,
    /// Only this order's reservations.
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: Option<String>,
    /// Only reservations of this SKU.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", example = "mug-blue")]
    pub sku: Option<String>,
    /// Only reservations in this status.
    pub status: Option<ReservationStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReservationList {
    /// The page, newest first.
    pub data: Vec<Reservation>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older reservations (`starting_after` or neither), or newer
    /// ones (`ending_before`).
    pub has_more: bool,
}

/// List reservations, newest first, a page at a time: all of them, an
/// order's, a SKU's, or those in a status.
#[utoipa::path(
    operation_id = "list_reservations",
    tag = "reservations",
    params(ReservationsQuery),
    responses(
        (status = 200, description = "A page of reservations (empty when none)", body = ReservationList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`reservation_not_found`: `starting_after` or `ending_before` is not one of this tenant's reservations", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `order_id` is not 1 to 255 printable ASCII characters without surrounding spaces, or `sku` not a valid SKU", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/reservations")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ReservationsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let filter = ledger::inventory::ReservationFilter {
        order_id: q.order_id.as_deref().map(|o| identifier("order_id", o)).transpose()?,
        sku: q.sku.as_deref().map(sku).transpose()?,
        status: q.status.map(ReservationStatus::into_ledger),
    };
    let client = state.pool.get().await?;
    let page = ledger::inventory::list(&**client, caller.0, &filter, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(ReservationList {
        data: page.data.into_iter().map(Reservation::from).collect(),
        has_more: page.has_more,
    }))
}

/// Release a held reservation, giving its stock back.
///
/// Releasing an already released reservation returns it unchanged. No body.
#[utoipa::path(
    operation_id = "release_reservation",
    tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id"), IdempotencyKey),
    responses(
        (status = 200, description = "Released, or already released: the reservation", body = Reservation),
        (status = 404, description = "`reservation_not_found`: no such reservation for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`reservation_not_held`: it was committed (paid)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/reservations/{id}/release")]
pub async fn release(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    idempotency::run(&state, caller.0, &key, b"", Applied::Ok, async |tx| {
        Ok(ledger::inventory::release(tx, caller.0, id).await?.map(Reservation::from))
    })
    .await
}
