//! Transfers: money from one account to another of the same tenant and currency.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use ledger::money::parse_amount;
use ledger::transfers::NewTransfer;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::state::AppState;
use crate::wire::Currency;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Transfer {
    pub id: Uuid,
    pub source_account_id: Uuid,
    pub destination_account_id: Uuid,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "100.00")]
    pub amount: Decimal,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    pub description: Option<String>,
    /// The ledger transaction that moved the money.
    pub transaction_id: Uuid,
    pub created_at: DateTime<Utc>,
}

impl From<ledger::transfers::Transfer> for Transfer {
    fn from(t: ledger::transfers::Transfer) -> Self {
        Transfer {
            id: t.id,
            source_account_id: t.source_account_id,
            destination_account_id: t.destination_account_id,
            amount: t.amount,
            currency: t.currency,
            description: t.description,
            transaction_id: t.transaction_id,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    pub source_account_id: Uuid,
    pub destination_account_id: Uuid,
    /// A positive decimal string with at most the currency's minor digits.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "100.00")]
    pub amount: String,
    #[schema(value_type = Currency, example = "USD")]
    pub currency: String,
    #[schema(example = "wallet top-up")]
    pub description: Option<String>,
}

/// Move money between two accounts of the same currency.
#[utoipa::path(
    operation_id = "create_transfer",
    tag = "transfers",
    params(IdempotencyKey),
    request_body = CreateTransfer,
    responses(
        (status = 201, description = "Moved", body = Transfer, headers(("Location" = String, description = "The new transfer's path"))),
        (status = 402, description = "`insufficient_funds`: the source would go below zero (stored and replayed)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: an account does not exist for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is zero, finer than the currency's minor unit, or over 1,000,000,000; `currency_mismatch`: an account holds another currency; `same_account`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: the amount is not a decimal string of the documented shape; `unknown_currency`; `invalid_field`: `description` over 500 characters", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/transfers")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateTransfer>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let currency: ledger::Currency = b.currency.parse()?;
    let description = match &b.description {
        Some(d) if d.chars().count() > 500 => {
            return Err(ApiError::invalid_field("`description` has at most 500 characters"))
        }
        d => d.as_deref(),
    };
    let new = NewTransfer {
        source: b.source_account_id,
        destination: b.destination_account_id,
        amount: parse_amount(&b.amount, currency)?,
        currency,
        description,
    };
    let created = Applied::CreatedAt(|t: &Transfer| format!("/v1/transfers/{}", t.id));
    idempotency::run(&state, caller.0, &key, &body.canonical, created, async |tx| {
        Ok(ledger::transfers::create(tx, caller.0, &new).await?.map(Transfer::from))
    })
    .await
}

/// Get a transfer.
#[utoipa::path(
    operation_id = "get_transfer",
    tag = "transfers",
    params(("id" = Uuid, Path, description = "Transfer id")),
    responses(
        (status = 200, description = "The transfer", body = Transfer),
        (status = 404, description = "`transfer_not_found`: no such transfer for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/transfers/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(Transfer::from(ledger::transfers::get(&**client, caller.0, *id).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransfersQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of a transfer of this list: the page holds the transfers just
    /// older than it (the next page after a page: its last transfer's id).
    pub starting_after: Option<Uuid>,
    /// The id of a transfer of this list: the page holds the transfers just
    /// newer than it (the page before a page: its first transfer's id).
    pub ending_before: Option<Uuid>,
    /// Only transfers from or to this account.
    pub account_id: Option<Uuid>,
    /// Only transfers created at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    pub created_gte: Option<DateTime<Utc>>,
    /// Only transfers created before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    pub created_lt: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferList {
    /// The page, newest first.
    pub data: Vec<Transfer>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older transfers (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

/// List transfers, newest first, a page at a time: all of them, or an
/// account's (sent and received).
#[utoipa::path(
    operation_id = "list_transfers",
    tag = "transfers",
    params(TransfersQuery),
    responses(
        (status = 200, description = "A page of transfers (empty when none)", body = TransferList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`transfer_not_found`: `starting_after` or `ending_before` is not one of this tenant's transfers", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/transfers")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<TransfersQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let filter = ledger::transfers::TransferFilter {
        account_id: q.account_id,
        created_gte: q.created_gte,
        created_lt: q.created_lt,
    };
    let client = state.pool.get().await?;
    let page = ledger::transfers::list(&**client, caller.0, &filter, cursor, limit).await?;
    Ok(HttpResponse::Ok()
        .json(TransferList { data: page.data.into_iter().map(Transfer::from).collect(), has_more: page.has_more }))
}
