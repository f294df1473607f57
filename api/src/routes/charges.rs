use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use ledger::charges::{Charge, NewCharge, PlatformFee, Refund};
use ledger::money::parse_amount;
use ledger::Currency;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Reply};
use crate::routes::{identifier, IdempotencyKeyHeader};
use crate::startup::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCharge {
    /// Your order. One charge per (order_id, attempt), ever.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: String,
    /// Starts at 1; a new attempt after a decline takes the next number.
    #[schema(minimum = 1, example = 1)]
    pub attempt: i32,
    pub buyer_account_id: Uuid,
    pub seller_account_id: Uuid,
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "25.00")]
    pub amount: String,
    #[schema(value_type = Currency, example = "USD")]
    pub currency: String,
    pub platform_fee: Option<CreatePlatformFee>,
    /// Where to send the order confirmation email (at most once per order).
    #[schema(example = "buyer@example.com")]
    pub receipt_email: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlatformFee {
    pub account_id: Uuid,
    /// At most the charged amount.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "2.50")]
    pub amount: String,
}

/// Charge a buyer for an order attempt.
///
/// One balanced ledger transaction: the buyer is debited `amount`, the seller
/// credited `amount - platform_fee.amount`, the platform credited the fee.
#[utoipa::path(
    operation_id = "create_charge",
    tag = "charges",
    params(IdempotencyKeyHeader),
    request_body = CreateCharge,
    responses(
        (status = 201, description = "Charged", body = Charge, headers(("Location" = String, description = "The new charge's path"))),
        (status = 200, description = "This order attempt was already charged with the same terms: the charge is returned, no second effect", body = Charge, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 402, description = "`insufficient_funds`: the buyer cannot pay (stored and replayed; charge again with the next attempt)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: the buyer, seller or platform account does not exist for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`natural_key_conflict`: this order attempt was charged with other terms", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`, `amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is not a positive decimal string within the currency's minor unit and 1,000,000,000; `unknown_currency`; `currency_mismatch`; `same_account`: buyer and seller are one account; `fee_exceeds_amount`; `invalid_field`: `order_id` or `attempt`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: JsonBody<CreateCharge>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let currency: Currency = b.currency.parse()?;
    if b.attempt < 1 {
        return Err(ApiError::invalid_field("`attempt` starts at 1"));
    }
    let platform_fee = match &b.platform_fee {
        Some(f) => Some(PlatformFee { account_id: f.account_id, amount: parse_amount(&f.amount, currency)? }),
        None => None,
    };
    let new = NewCharge {
        order_id: identifier("order_id", &b.order_id)?,
        attempt: b.attempt,
        buyer: b.buyer_account_id,
        seller: b.seller_account_id,
        amount: parse_amount(&b.amount, currency)?,
        currency,
        platform_fee,
        receipt_email: match &b.receipt_email {
            Some(e) => Some(email(e)?),
            None => None,
        },
    };
    idempotency::run(&state, caller.0, &req, &body.canonical, async |tx| {
        let created = ledger::charges::create(tx, caller.0, &new).await?;
        let location = format!("/v1/charges/{}", created.resource.id);
        Ok(Reply::created(&created, location))
    })
    .await
}

/// A plausible address: one `@`, no spaces or controls, at most 254 characters.
fn email(value: &str) -> Result<&str, ApiError> {
    let ok = value.len() <= 254
        && value.bytes().all(|b| b.is_ascii_graphic())
        && matches!(value.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid_field("`receipt_email` is not an email address"))
    }
}

/// Get a charge.
#[utoipa::path(
    operation_id = "get_charge",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id")),
    responses(
        (status = 200, description = "The charge", body = Charge),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/charges/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(ledger::charges::get(&**client, caller.0, *id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChargesQuery {
    /// The order whose charges to list.
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChargeList {
    /// Every attempt's charge, oldest attempt first.
    pub data: Vec<Charge>,
}

/// Look up the charges of an order.
#[utoipa::path(
    operation_id = "list_charges",
    tag = "charges",
    params(ChargesQuery),
    responses(
        (status = 200, description = "The order's charges (empty when none)", body = ChargeList),
        (status = 400, description = "`invalid_parameter`: `order_id` missing", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `order_id` is not 1 to 255 printable ASCII characters without surrounding spaces", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/charges")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ChargesQuery>,
) -> Result<HttpResponse, ApiError> {
    let order_id = identifier("order_id", &query.order_id)?;
    let client = state.pool.get().await?;
    let data = ledger::charges::by_order(&**client, caller.0, order_id).await?;
    Ok(HttpResponse::Ok().json(ChargeList { data }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// What to refund; all that remains of the charge when absent.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "10.00")]
    pub amount: Option<String>,
}

/// Refund part or all of a charge.
///
/// The buyer is credited; the seller and the platform give back their shares
/// in the charge's proportion (a full refund returns the fee exactly). The
/// refunds of a charge never sum above it, also under concurrent requests.
#[utoipa::path(
    operation_id = "create_refund",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id"), IdempotencyKeyHeader),
    request_body = CreateRefund,
    responses(
        (status = 201, description = "Refunded", body = Refund),
        (status = 402, description = "`insufficient_funds`: the seller or platform cannot give back its share (stored and replayed)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`refund_exceeds_charge`: more than what remains of the charge (stored and replayed); `invalid_amount`, `amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is not a positive decimal string within the currency's minor unit and 1,000,000,000", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges/{id}/refunds")]
pub async fn refund(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<CreateRefund>,
) -> Result<HttpResponse, ApiError> {
    let charge_id = *id;
    let amount = body.value.amount.as_deref();
    idempotency::run(&state, caller.0, &req, &body.canonical, async |tx| {
        let refund = ledger::charges::refund(tx, caller.0, charge_id, amount).await?;
        Ok(Reply::json(StatusCode::CREATED, &refund))
    })
    .await
}
