//! Accounts: create, read with balance, and the account's entries.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use ledger::accounts::NewAccount;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::routes::identifier;
use crate::state::AppState;
use crate::wire::Currency;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: Uuid,
    /// The caller's own name for the account, unique per tenant.
    #[schema(example = "buyer-42")]
    pub reference: String,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    /// Whether the balance may go below zero (an external-funds account may).
    pub allow_negative: bool,
    /// The sum of the account's entries: what it can spend now. Money held
    /// by its open authorizations has already left it, so this is its
    /// available balance.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "100.00")]
    pub balance: Decimal,
    /// Held by its open authorizations (`"capture": false` charges not yet
    /// captured, voided or expired).
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub pending: Decimal,
    /// What it has, held money included: `available + pending`.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "125.00")]
    pub posted: Decimal,
    /// What it can spend: the same as `balance`.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "100.00")]
    pub available: Decimal,
    pub created_at: DateTime<Utc>,
}

impl From<ledger::accounts::Account> for Account {
    fn from(a: ledger::accounts::Account) -> Self {
        Account {
            id: a.id,
            reference: a.reference,
            currency: a.currency,
            allow_negative: a.allow_negative,
            balance: a.balance,
            pending: a.pending,
            posted: a.balance + a.pending,
            available: a.balance,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// Entry id; also the pagination cursor.
    #[schema(example = "1042")]
    pub id: String,
    pub transaction_id: Uuid,
    /// What the transaction was: transfer, charge, refund, or the reversal
    /// of a card refund the provider failed.
    pub kind: EntryKind,
    /// Signed: positive credits the account, negative debits it.
    #[schema(value_type = String, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "-12.50")]
    pub amount: Decimal,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    pub created_at: DateTime<Utc>,
    /// The account's available balance right after this entry, in the
    /// account's order (`created_at`, then `id`: the order of this list and
    /// of statements). `null` for an entry of the last second or two, while
    /// a transaction that began before it could still add an entry before
    /// it; final once set.
    #[schema(value_type = Option<String>, pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "87.50")]
    pub balance_after: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Transfer,
    Charge,
    Refund,
    /// A card refund the provider failed, undone: the refund's entries
    /// reversed.
    RefundReversal,
    /// An authorization's hold: the buyer's amount to the tenant's holds account.
    Authorization,
    /// Held money given back: what a capture did not take, or a void's.
    Release,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntryList {
    /// The page, newest first in the account's order.
    pub data: Vec<Entry>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older entries (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

impl From<ledger::pagination::Page<ledger::accounts::Entry>> for EntryList {
    fn from(page: ledger::pagination::Page<ledger::accounts::Entry>) -> Self {
        use ledger::accounts::EntryKind as K;
        EntryList {
            data: page
                .data
                .into_iter()
                .map(|e| Entry {
                    id: e.id.to_string(),
                    transaction_id: e.transaction_id,
                    kind: match e.kind {
                        K::Transfer => EntryKind::Transfer,
                        K::Charge => EntryKind::Charge,
                        K::Refund => EntryKind::Refund,
                        K::RefundReversal => EntryKind::RefundReversal,
                        K::Authorization => EntryKind::Authorization,
                        K::Release => EntryKind::Release,
                    },
                    amount: e.amount,
                    balance_after: e.balance_after,
                    currency: e.currency,
                    created_at: e.created_at,
                })
                .collect(),
            has_more: page.has_more,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Your own name for the account, unique among your accounts: creating
    /// the same reference again returns the existing account.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "buyer-42")]
    pub reference: String,
    /// ISO 4217 code.
    #[schema(value_type = Currency, example = "USD")]
    pub currency: String,
    /// Whether the balance may go below zero. Default false. An account that
    /// stands for money outside the ledger (card funding) allows it.
    #[serde(default)]
    pub allow_negative: bool,
}

/// Create an account.
#[utoipa::path(
    operation_id = "create_account",
    tag = "accounts",
    params(IdempotencyKey),
    request_body = CreateAccount,
    responses(
        (status = 201, description = "Created", body = Account, headers(("Location" = String, description = "The new account's path"))),
        (status = 200, description = "An account with this reference and these settings already existed: it is returned, nothing is written", body = Account, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 409, description = "`natural_key_conflict`: an account with this reference exists with another currency or `allow_negative`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `reference` is not 1 to 255 printable ASCII characters without surrounding spaces; `unknown_currency`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/accounts")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateAccount>,
) -> Result<HttpResponse, ApiError> {
    let new = NewAccount {
        reference: identifier("reference", &body.value.reference)?,
        currency: body.value.currency.parse()?,
        allow_negative: body.value.allow_negative,
    };
    let created = Applied::CreatedAt(|a: &Account| format!("/v1/accounts/{}", a.id));
    idempotency::run(&state, caller.0, &key, &body.canonical, created, async |tx| {
        Ok(ledger::accounts::create(tx, caller.0, &new).await?.map(Account::from))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of an account of this list: the page holds the accounts just
    /// older than it (the next page after a page: its last account's id).
    pub starting_after: Option<Uuid>,
    /// The id of an account of this list: the page holds the accounts just
    /// newer than it (the page before a page: its first account's id).
    pub ending_before: Option<Uuid>,
    /// Only accounts whose reference starts with this.
    #[param(min_length = 1, max_length = 255, pattern = r"^[ -~]{1,255}$", example = "buyer-")]
    pub reference_prefix: Option<String>,
    /// Only accounts in this currency.
    #[param(value_type = Option<Currency>)]
    pub currency: Option<String>,
    /// Only accounts created at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    pub created_gte: Option<DateTime<Utc>>,
    /// Only accounts created before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    pub created_lt: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountList {
    /// The page, newest first.
    pub data: Vec<Account>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older accounts (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

/// List accounts, newest first, a page at a time.
#[utoipa::path(
    operation_id = "list_accounts",
    tag = "accounts",
    params(AccountsQuery),
    responses(
        (status = 200, description = "A page of accounts (empty when none)", body = AccountList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: `starting_after` or `ending_before` is not one of this tenant's accounts", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_currency`; `invalid_field`: `reference_prefix` is not 1 to 255 printable ASCII characters", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AccountsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let currency = q.currency.as_deref().map(str::parse).transpose()?;
    let reference_prefix = match &q.reference_prefix {
        Some(p) if p.is_empty() || p.len() > 255 || !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) => {
            return Err(ApiError::invalid_field("`reference_prefix` must be 1 to 255 printable ASCII characters"))
        }
        p => p.as_deref(),
    };
    let filter = ledger::accounts::AccountFilter {
        reference_prefix,
        currency,
        created_gte: q.created_gte,
        created_lt: q.created_lt,
    };
    let client = state.pool.get().await?;
    let page = ledger::accounts::list(&**client, caller.0, &filter, cursor, limit).await?;
    Ok(HttpResponse::Ok()
        .json(AccountList { data: page.data.into_iter().map(Account::from).collect(), has_more: page.has_more }))
}

/// Get an account and its balance.
#[utoipa::path(
    operation_id = "get_account",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 404, description = "`account_not_found`: no such account for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let account = ledger::accounts::get(&**client, caller.0, *id).await?;
    Ok(HttpResponse::Ok().json(Account::from(account)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of an entry of this account: the page holds the entries just
    /// older than it in the account's order (the next page after a page:
    /// its last entry's id).
    #[param(pattern = r"^[1-9][0-9]{0,17}$", example = "1042")]
    pub starting_after: Option<String>,
    /// The id of an entry of this account: the page holds the entries just
    /// newer than it (the page before a page: its first entry's id).
    #[param(pattern = r"^[1-9][0-9]{0,17}$", example = "1042")]
    pub ending_before: Option<String>,
}

/// List an account's entries, newest first in the account's order (by `created_at`, then `id`), a page at a time, each with the balance after it.
#[utoipa::path(
    operation_id = "list_account_entries",
    tag = "accounts",
    params(("id" = Uuid, Path, description = "Account id"), EntriesQuery),
    responses(
        (status = 200, description = "A page of entries", body = EntryList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a cursor not an entry id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: no such account for this tenant; `entry_not_found`: a cursor is not an entry of this account; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/accounts/{id}/entries")]
pub async fn entries(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<EntriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let entry = |c: &Option<String>| -> Result<Option<i64>, ApiError> {
        c.as_deref()
            .map(|c| {
                c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    ApiError::bad_request(
                        crate::error::ProblemCode::InvalidParameter,
                        "a cursor is an entry id this API gave out",
                    )
                })
            })
            .transpose()
    };
    let (cursor, limit) = super::page(query.limit, entry(&query.starting_after)?, entry(&query.ending_before)?)?;
    let client = state.pool.get().await?;
    let page = ledger::checkpoints::entries(&**client, caller.0, *id, limit, cursor).await?;
    Ok(HttpResponse::Ok().json(EntryList::from(page)))
}
