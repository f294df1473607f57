use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger::inventory::{Reservation, Sku};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Reply};
use crate::routes::{identifier, quantity, sku, IdempotencyKeyHeader};
use crate::startup::AppState;

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
    params(("sku" = String, Path, description = "SKU: 1 to 100 of letters, digits and `._:-`, starting with a letter or digit", pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", example = "mug-blue"), IdempotencyKeyHeader),
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
    req: HttpRequest,
    path: web::Path<String>,
    body: JsonBody<CreateRestock>,
) -> Result<HttpResponse, ApiError> {
    let sku = sku(&path)?;
    let quantity = quantity(body.value.quantity)?;
    idempotency::run(&state, caller.0, &req, &body.canonical, async |tx| {
        let stock = ledger::inventory::restock(tx, caller.0, sku, quantity).await?;
        Ok(Reply::json(StatusCode::CREATED, &stock))
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
    Ok(HttpResponse::Ok().json(ledger::inventory::get_sku(&**client, caller.0, sku).await?))
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
}

/// Hold stock for an order.
#[utoipa::path(
    operation_id = "create_reservation",
    tag = "reservations",
    params(IdempotencyKeyHeader),
    request_body = CreateReservation,
    responses(
        (status = 201, description = "Held", body = Reservation, headers(("Location" = String, description = "The new reservation's path"))),
        (status = 200, description = "This order already holds this SKU in this quantity: the reservation is returned, no second hold", body = Reservation, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 404, description = "`sku_not_found`: the SKU was never restocked", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`out_of_stock`: not enough available (stored and replayed); `natural_key_conflict`: this order holds this SKU in another quantity", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `order_id`, `sku` or `quantity` (1 to 1,000,000) is not valid", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/reservations")]
pub async fn reserve(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: JsonBody<CreateReservation>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let order_id = identifier("order_id", &b.order_id)?;
    let sku = sku(&b.sku)?;
    let quantity = quantity(b.quantity)?;
    idempotency::run(&state, caller.0, &req, &body.canonical, async |tx| {
        let created = ledger::inventory::reserve(tx, caller.0, order_id, sku, quantity).await?;
        let location = format!("/v1/reservations/{}", created.resource.id);
        Ok(Reply::created(&created, location))
    })
    .await
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
    Ok(HttpResponse::Ok().json(ledger::inventory::get_reservation(&**client, caller.0, *id).await?))
}

/// Release a held reservation, giving its stock back.
///
/// Releasing an already released reservation returns it unchanged. No body.
#[utoipa::path(
    operation_id = "release_reservation",
    tag = "reservations",
    params(("id" = Uuid, Path, description = "Reservation id"), IdempotencyKeyHeader),
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
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    idempotency::run(&state, caller.0, &req, b"", async |tx| {
        let reservation = ledger::inventory::release(tx, caller.0, id).await?;
        Ok(Reply::json(StatusCode::OK, &reservation))
    })
    .await
}
