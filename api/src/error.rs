//! The one place where failures become HTTP: RFC 9457 problem documents
//! (`application/problem+json`) with a stable machine-readable `code`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use ledger::money::AmountError;
use ledger::{Decline, DeclineKind};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every `code` a problem document can carry. Clients switch on these; they
/// never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    MalformedJson,
    InvalidBody,
    InvalidField,
    InvalidParameter,
    ConflictingCursors,
    UnsupportedMediaType,
    PayloadTooLarge,
    MissingIdempotencyKey,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    RequestInProgress,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    AccountNotFound,
    TransferNotFound,
    ChargeNotFound,
    ReservationNotFound,
    EventNotFound,
    SkuNotFound,
    RefundNotFound,
    WebhookEndpointNotFound,
    WebhookAttemptNotFound,
    /// Not an entry of the account (a cursor of its entries).
    EntryNotFound,
    /// A webhook endpoint's URL that is not an `http` or `https` URL.
    InvalidUrl,
    /// A webhook endpoint's URL that names (or resolves to) a private,
    /// loopback or link-local address.
    PrivateDestination,
    /// An event type no endpoint can subscribe to.
    UnknownEventType,
    InvalidAmount,
    AmountNotPositive,
    AmountTooPrecise,
    AmountTooLarge,
    UnknownCurrency,
    CurrencyMismatch,
    SameAccount,
    FeeExceedsAmount,
    InsufficientFunds,
    OutOfStock,
    RefundExceedsCharge,
    CardDeclined,
    RefundFailed,
    InvalidPaymentSource,
    InvalidAuthorization,
    ChargeNotPaid,
    ChargeNotAuthorized,
    AuthorizationExpired,
    CaptureExceedsAuthorization,
    /// An instant of history not settled yet: in the future, too recent, or
    /// with a transaction that may have begun before it still open.
    AsOfTooRecent,
    /// A period whose `from` is not before its `to`.
    InvalidPeriod,
    /// A statement with more entries than one JSON document holds: ask for CSV.
    StatementTooLarge,
    ProviderUnavailable,
    ProviderError,
    ProviderRejected,
    InvalidSignature,
    NaturalKeyConflict,
    OrderAlreadyCharged,
    ReservationNotHeld,
    Contention,
    RateLimited,
    TooManyFailedAuthentications,
    ServiceUnavailable,
    Internal,
}

impl ProblemCode {
    /// The code as clients see it (`insufficient_funds`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    #[schema(example = "/problems/insufficient_funds")]
    pub type_: String,
    #[schema(example = "Insufficient funds")]
    pub title: String,
    /// The HTTP status code of this response.
    #[schema(minimum = 400, maximum = 599, example = 402)]
    pub status: u16,
    /// What went wrong in this case, for people; clients switch on `code`.
    #[schema(example = "account 0190f3a8-6d1c-7c8e-9b1a-2f3e4d5c6b7a has insufficient funds")]
    pub detail: String,
    pub code: ProblemCode,
    /// With `order_already_charged`: the order's existing charge, which a
    /// client fetches instead of charging again. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub charge_id: Option<uuid::Uuid>,
}

#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ProblemCode,
    pub detail: String,
    /// Seconds a client should wait before retrying, when retrying can help.
    pub retry_after: Option<u32>,
    /// The existing charge a refusal names (`order_already_charged`).
    pub charge_id: Option<uuid::Uuid>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), retry_after: None, charge_id: None }
    }
    pub fn bad_request(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn invalid_field(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ProblemCode::InvalidField, detail)
    }
    /// A request the document calls valid, refused by a rule no schema can
    /// state: across fields (`same_account`, both cursors), against the
    /// ledger's state (`currency_mismatch`, `capture_exceeds_authorization`,
    /// an Idempotency-Key's first request) or the world's (a URL's host).
    /// Always 409, so that 400 and 422 keep one meaning: the request breaks
    /// the document. The code says which rule.
    pub fn rule(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    /// The tenant's rate limit is reached (`limits`): nothing was read or
    /// written, and a token is back in `retry_after` seconds.
    pub fn rate_limited(retry_after: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::RateLimited,
            "this tenant is over its rate limit; nothing was done, retry after `Retry-After` seconds",
        )
        .retry_after(retry_after)
    }
    /// Too many wrong API keys from this client address (`limits::FailedAuths`):
    /// its keys are not looked up for `retry_after` seconds.
    pub fn too_many_failed_authentications(retry_after: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ProblemCode::TooManyFailedAuthentications,
            "too many requests from this address had an API key that is not valid; its keys are not looked up \
             for `Retry-After` seconds",
        )
        .retry_after(retry_after)
    }
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!(
                "/problems/{}",
                serde_json::to_value(self.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            ),
            title: self.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            charge_id: self.charge_id,
        }
    }
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.problem()).expect("a problem serializes")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        // for the metrics, which count problems by code
        res.extensions_mut().insert(self.code);
        res.body(self.body())
    }
}

impl From<AmountError> for ApiError {
    fn from(e: AmountError) -> Self {
        // the amount's pattern allows any decimal string of its shape: a zero,
        // a scale beyond the currency's or a sum over the ledger's limit is a
        // rule beyond it
        let (status, code) = match e {
            AmountError::UnknownCurrency(_) => (StatusCode::UNPROCESSABLE_ENTITY, ProblemCode::UnknownCurrency),
            AmountError::Malformed(_) => (StatusCode::UNPROCESSABLE_ENTITY, ProblemCode::InvalidAmount),
            AmountError::NotPositive => (StatusCode::CONFLICT, ProblemCode::AmountNotPositive),
            AmountError::TooPrecise { .. } => (StatusCode::CONFLICT, ProblemCode::AmountTooPrecise),
            AmountError::TooLarge => (StatusCode::CONFLICT, ProblemCode::AmountTooLarge),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The status and problem code of each kind of business decline: the one
/// place that says it (a decline is stored for its Idempotency-Key and
/// replayed; see `idempotency`).
pub fn decline_status(kind: DeclineKind) -> (StatusCode, ProblemCode) {
    match kind {
        DeclineKind::InsufficientFunds => (StatusCode::PAYMENT_REQUIRED, ProblemCode::InsufficientFunds),
        DeclineKind::OutOfStock => (StatusCode::CONFLICT, ProblemCode::OutOfStock),
        DeclineKind::RefundExceedsCharge => (StatusCode::CONFLICT, ProblemCode::RefundExceedsCharge),
        DeclineKind::CardDeclined => (StatusCode::PAYMENT_REQUIRED, ProblemCode::CardDeclined),
        DeclineKind::RefundFailed => (StatusCode::PAYMENT_REQUIRED, ProblemCode::RefundFailed),
        DeclineKind::AuthorizationExpired => (StatusCode::CONFLICT, ProblemCode::AuthorizationExpired),
    }
}

impl From<&Decline> for ApiError {
    fn from(d: &Decline) -> Self {
        let (status, code) = decline_status(d.kind());
        ApiError::new(status, code, d.to_string())
    }
}

impl From<ledger::Error> for ApiError {
    fn from(e: ledger::Error) -> Self {
        use ledger::Error as E;
        let (status, code) = match &e {
            E::Amount(a) => return a.clone().into(),
            E::AccountNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::AccountNotFound),
            E::ChargeNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::ChargeNotFound),
            E::TransferNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::TransferNotFound),
            E::ReservationNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::ReservationNotFound),
            E::EventNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::EventNotFound),
            E::SkuNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::SkuNotFound),
            E::RefundNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::RefundNotFound),
            E::WebhookEndpointNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::WebhookEndpointNotFound),
            E::WebhookAttemptNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::WebhookAttemptNotFound),
            E::EntryNotFound(_) => (StatusCode::NOT_FOUND, ProblemCode::EntryNotFound),
            E::CurrencyMismatch { .. } => (StatusCode::CONFLICT, ProblemCode::CurrencyMismatch),
            E::SameAccount => (StatusCode::CONFLICT, ProblemCode::SameAccount),
            E::FeeTooLarge => (StatusCode::CONFLICT, ProblemCode::FeeExceedsAmount),
            E::NaturalKeyConflict(_) => (StatusCode::CONFLICT, ProblemCode::NaturalKeyConflict),
            E::OrderAlreadyCharged { charge_id, .. } => {
                let mut refused = ApiError::new(StatusCode::CONFLICT, ProblemCode::OrderAlreadyCharged, e.to_string());
                refused.charge_id = Some(*charge_id);
                return refused;
            }
            E::ReservationNotHeld { .. } => (StatusCode::CONFLICT, ProblemCode::ReservationNotHeld),
            E::ChargeNotPaid { .. } => (StatusCode::CONFLICT, ProblemCode::ChargeNotPaid),
            E::ChargeNotAuthorized { .. } => (StatusCode::CONFLICT, ProblemCode::ChargeNotAuthorized),
            E::AuthorizationExpired { .. } => (StatusCode::CONFLICT, ProblemCode::AuthorizationExpired),
            E::CaptureExceedsAuthorization { .. } => (StatusCode::CONFLICT, ProblemCode::CaptureExceedsAuthorization),
            E::AsOfTooRecent { .. } => (StatusCode::CONFLICT, ProblemCode::AsOfTooRecent),
            E::InvalidPeriod { .. } => (StatusCode::CONFLICT, ProblemCode::InvalidPeriod),
            E::StatementTooLarge { .. } => (StatusCode::CONFLICT, ProblemCode::StatementTooLarge),
            E::Contended(_) => return contention(),
            E::KeyChanged => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    ProblemCode::RequestInProgress,
                    "the key changed under this request; retry",
                )
                .retry_after(1)
            }
            E::Database(db) => return database(db),
            E::Pool(detail) => {
                tracing::warn!(%detail, "no database connection");
                return unavailable();
            }
            E::UnknownValue { .. }
            | E::DebitNotLocked(_)
            | E::InvalidTenantName
            | E::TenantNotFound(_)
            | E::InvalidRateLimit
            | E::PoolBuild(_)
            | E::Diesel(_)
            | E::DieselConnection(_)
            | E::Migration(_) => {
                tracing::error!(error = %e, "unexpected failure");
                return internal();
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        database(&e)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ledger::Error::from(e).into()
    }
}

/// The payment provider could not be reached or gave no answer: nothing
/// is recorded, and a retry with the same Idempotency-Key sends the same
/// provider key, which the provider deduplicates.
pub fn provider_unavailable(detail: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%detail, "payment provider unavailable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ProblemCode::ProviderUnavailable,
        "the payment provider did not answer; retry with the same Idempotency-Key",
    )
    .retry_after(1)
}

/// The payment provider refused a request it should not have: the cause is
/// logged, nothing is recorded.
pub fn provider_error(detail: impl std::fmt::Display) -> ApiError {
    tracing::error!(%detail, "payment provider refused a request");
    ApiError::new(StatusCode::BAD_GATEWAY, ProblemCode::ProviderError, "the payment provider refused the request")
}

/// The payment provider refused the request itself, not the card (a key
/// without the permission, a wrong URL, an amount it does not take): not a
/// decline, not stored, nothing recorded that a retry would find. The
/// provider's message says what to fix.
pub fn provider_rejected(detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ProblemCode::ProviderRejected,
        format!("the payment provider refused the request (a configuration error, not a decline): {detail}"),
    )
}

fn contention() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ProblemCode::Contention,
        "a concurrent request holds the same rows; retry with the same Idempotency-Key",
    )
    .retry_after(1)
}

/// A statement PostgreSQL cancelled (`statement_timeout`): nothing was
/// written, and a retry may find the database faster.
fn too_slow() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ProblemCode::ServiceUnavailable,
        "the database did not answer in time; nothing was written, retry",
    )
    .retry_after(1)
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ProblemCode::ServiceUnavailable,
        "the database is unavailable; retry",
    )
    .retry_after(1)
}

/// Database failures: lock waits and races are the client's to retry (409),
/// a lost connection or a statement over its time is ours (503), anything
/// else is a bug (an opaque 500 with the cause in the log only).
fn database(e: &tokio_postgres::Error) -> ApiError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c)
            if *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION =>
        {
            contention()
        }
        Some(c) if *c == SqlState::QUERY_CANCELED => too_slow(),
        Some(c) if *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT => unavailable(),
        // The server going away or not there yet (shutting down, crashed,
        // starting, in recovery, out of connection slots, a connection
        // exception), the connection closed, or never made: the pool could
        // not connect (refused while the server is down or restarting, reset).
        _ if ledger::error::unavailable(e) => unavailable(),
        _ => {
            let db = e.as_db_error();
            tracing::error!(
                error = %e,
                code = ?e.code().map(|c| c.code()),
                message = ?db.map(|d| d.message()),
                detail = ?db.and_then(|d| d.detail()),
                "database error"
            );
            internal()
        }
    }
}

/// A failed claim of an Idempotency-Key: a lock wait past the timeout there
/// means the first request with this key is still running past our wait.
pub(crate) fn claim_failed(e: ledger::Error) -> ApiError {
    let e = ApiError::from(e);
    if e.code == ProblemCode::Contention {
        return ApiError::new(
            StatusCode::CONFLICT,
            ProblemCode::RequestInProgress,
            "a request with this Idempotency-Key is still in progress; retry shortly",
        )
        .retry_after(1);
    }
    e
}

/// An unexpected failure: an opaque 500, the cause in the log only.
fn internal() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ProblemCode::Internal, "internal error")
}
