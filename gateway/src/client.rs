//! The HTTP client: form-encoded requests in Stripe's shape, bearer auth, an
//! `Idempotency-Key` on every POST, and answers sorted into outcomes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::model::{ApiError, ErrorBody, List, PaymentIntent, PaymentStatus, Refund};
use crate::outcome::{
    BuildError, CancelOutcome, CaptureOutcome, Decline, GatewayError, PaymentOutcome, RefundOutcome, Unknown,
    UnknownReason,
};
use crate::webhook::{self, Event, SignatureError};

/// The API version whose object shapes this crate reads, pinned so that a
/// real provider account's default version does not change them under us.
pub const API_VERSION: &str = "2024-06-20";

/// Largest page the provider serves.
const PAGE_LIMIT: u32 = 100;

/// A payment to create and confirm in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Minor units of `currency` (cents for EUR and USD, yen for JPY).
    pub amount: i64,
    /// ISO 4217; sent lowercase.
    pub currency: String,
    /// A payment method id or test token such as `pm_card_visa`.
    pub payment_method: String,
    /// What the payment is looked up by later (tenant, order, attempt): the
    /// provider keeps at most 50 keys of 40 characters, values of 500.
    pub metadata: BTreeMap<String, String>,
}

/// When the money of a payment is taken (Stripe's `capture_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CaptureMethod {
    /// At once: the confirmation charges the card.
    #[default]
    Automatic,
    /// Later: the confirmation only authorizes the amount, which the card
    /// holds (`requires_capture`) until [`Client::capture_payment`] takes all
    /// or part of it, [`Client::cancel_payment`] releases it, or the
    /// authorization expires (Stripe: 7 days for a customer-initiated card
    /// payment).
    Manual,
}

/// A refund of a payment; `amount: None` refunds what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    pub payment_intent: String,
    pub amount: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

/// One page of payments, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPayments {
    /// Unix seconds, inclusive.
    pub created_gte: Option<i64>,
    /// Unix seconds, exclusive.
    pub created_lt: Option<i64>,
    /// 1 to 100 (the provider's default is 10).
    pub limit: Option<u32>,
    /// The id of the last payment of the previous page.
    pub starting_after: Option<String>,
}

/// A client for one provider account. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    bearer: Arc<str>,
    webhook_secret: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A complete HTTP answer.
struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    body: Vec<u8>,
}

impl Client {
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let base = config.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(BuildError::Url(config.url.clone()));
        }
        if config.secret_key.is_empty() {
            return Err(BuildError::MissingSecretKey);
        }
        let mut headers = HeaderMap::new();
        headers.insert("Stripe-Version", API_VERSION.parse().expect("a valid header value"));
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            // A redirect is a misconfigured URL, not something to follow with
            // a payment in hand.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledger-gateway/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()?;
        Ok(Self {
            http,
            base: base.into(),
            bearer: format!("Bearer {}", config.secret_key).into(),
            webhook_secret: config.webhook_secret.as_str().into(),
        })
    }

    /// Creates and confirms a payment in one call (`POST /v1/payment_intents`
    /// with `confirm=true`), captured at once. Send the same `idempotency_key`
    /// on every resend of the same attempt.
    pub async fn create_payment(
        &self,
        request: &PaymentRequest,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, GatewayError> {
        self.create_payment_with_capture(request, CaptureMethod::Automatic, idempotency_key).await
    }

    /// [`Client::create_payment`] with a choice of capture. With
    /// [`CaptureMethod::Manual`] a card that accepts answers
    /// [`PaymentOutcome::RequiresCapture`]: authorized, nothing taken until
    /// [`Client::capture_payment`]. The same `idempotency_key` must always
    /// come with the same choice (the provider refuses a key reused with
    /// other parameters).
    pub async fn create_payment_with_capture(
        &self,
        request: &PaymentRequest,
        capture: CaptureMethod,
        idempotency_key: &str,
    ) -> Result<PaymentOutcome, GatewayError> {
        let mut form = vec![
            ("amount".to_owned(), request.amount.to_string()),
            ("currency".to_owned(), request.currency.to_ascii_lowercase()),
            ("payment_method".to_owned(), request.payment_method.clone()),
            ("confirm".to_owned(), "true".to_owned()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
        ];
        // Automatic is the provider's default and is not sent: a resend of an
        // attempt first sent before this choice existed keeps its parameters,
        // so its key still replays instead of being refused as reused.
        if capture == CaptureMethod::Manual {
            form.push(("capture_method".to_owned(), "manual".to_owned()));
        }
        push_metadata(&mut form, &request.metadata);
        match self.post("/v1/payment_intents", &form, idempotency_key).await {
            Ok(answer) => payment_outcome(answer),
            Err(unknown) => Ok(PaymentOutcome::Unknown(unknown)),
        }
    }

    /// Cancels a payment that was not charged (`POST
    /// /v1/payment_intents/{id}/cancel`, `cancellation_reason=abandoned`):
    /// typically one left in `requires_action` by a customer who never
    /// authenticated. Send the same `idempotency_key` on every resend (see
    /// [`crate::cancel_key`]). An id that cannot be a payment's is refused as
    /// the provider refuses an unknown one (404 `resource_missing`), without
    /// a request.
    pub async fn cancel_payment(&self, id: &str, idempotency_key: &str) -> Result<CancelOutcome, GatewayError> {
        self.cancel_payment_because(id, "abandoned", idempotency_key).await
    }

    /// [`Client::cancel_payment`] with another of Stripe's
    /// `cancellation_reason`s (`requested_by_customer`, `abandoned`,
    /// `duplicate`, `fraudulent`): the void of an authorization.
    pub async fn cancel_payment_because(
        &self,
        id: &str,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<CancelOutcome, GatewayError> {
        // Anything that is not an id must not reach the URL path.
        if !is_id(id) {
            return Err(no_such_payment(id));
        }
        let form = [("cancellation_reason".to_owned(), reason.to_owned())];
        match self.post(&format!("/v1/payment_intents/{id}/cancel"), &form, idempotency_key).await {
            Ok(answer) => cancel_outcome(answer),
            Err(unknown) => Ok(CancelOutcome::Unknown(unknown)),
        }
    }

    /// Captures an authorized payment (`POST
    /// /v1/payment_intents/{id}/capture`): `amount: None` takes all of
    /// `amount_capturable`, `Some(n)` takes `n` (at most that) and releases
    /// the rest; a payment is captured once. Send the same `idempotency_key`
    /// with the same `amount` on every resend (see [`crate::capture_key`]).
    /// An id that cannot be a payment's is refused as the provider refuses an
    /// unknown one (404 `resource_missing`), without a request.
    pub async fn capture_payment(
        &self,
        id: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<CaptureOutcome, GatewayError> {
        // Anything that is not an id must not reach the URL path.
        if !is_id(id) {
            return Err(no_such_payment(id));
        }
        let form: Vec<(String, String)> =
            amount.map(|amount| ("amount_to_capture".to_owned(), amount.to_string())).into_iter().collect();
        match self.post(&format!("/v1/payment_intents/{id}/capture"), &form, idempotency_key).await {
            Ok(answer) => capture_outcome(answer),
            Err(unknown) => Ok(CaptureOutcome::Unknown(unknown)),
        }
    }

    /// Refunds all or part of a payment (`POST /v1/refunds`).
    pub async fn create_refund(
        &self,
        request: &RefundRequest,
        idempotency_key: &str,
    ) -> Result<RefundOutcome, GatewayError> {
        let mut form = vec![("payment_intent".to_owned(), request.payment_intent.clone())];
        if let Some(amount) = request.amount {
            form.push(("amount".to_owned(), amount.to_string()));
        }
        push_metadata(&mut form, &request.metadata);
        let answer = match self.post("/v1/refunds", &form, idempotency_key).await {
            Ok(answer) => answer,
            Err(unknown) => return Ok(RefundOutcome::Unknown(unknown)),
        };
        if answer.status.is_success() {
            return Ok(match parse_written::<Refund>(&answer) {
                Ok(refund) => RefundOutcome::Created(refund),
                Err(unknown) => RefundOutcome::Unknown(unknown),
            });
        }
        classify_failure(answer).map(RefundOutcome::Unknown)
    }

    /// A payment by id; `None` when the provider has no such payment.
    pub async fn retrieve_payment(&self, id: &str) -> Result<Option<PaymentIntent>, GatewayError> {
        // Anything that is not an id cannot exist and must not reach the URL
        // path.
        if !is_id(id) {
            return Ok(None);
        }
        let answer = self.get(&format!("/v1/payment_intents/{id}"), &[]).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        read_answer(answer).map(Some)
    }

    /// Every payment whose metadata holds all of `metadata`, newest first.
    /// How a caller checks, past the provider's idempotency window, whether an
    /// attempt was already charged before sending it again. Stripe's search
    /// index may lag writes by up to a minute (the fake's by
    /// `--search-lag-ms`): an empty answer soon after a write proves nothing;
    /// [`Client::list_payments`] and [`Client::retrieve_payment`] do not lag.
    pub async fn search_payments(&self, metadata: &[(&str, &str)]) -> Result<Vec<PaymentIntent>, GatewayError> {
        let query = search_query(metadata);
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut params = vec![("query", query.clone()), ("limit", PAGE_LIMIT.to_string())];
            if let Some(token) = page.take() {
                params.push(("page", token));
            }
            let answer = self.get("/v1/payment_intents/search", &params).await?;
            let list: List<PaymentIntent> = read_answer(answer)?;
            found.extend(list.data);
            match list.next_page {
                Some(token) if list.has_more => page = Some(token),
                _ => return Ok(found),
            }
        }
    }

    /// One page of payments created in a period, newest first.
    pub async fn list_payments(&self, params: &ListPayments) -> Result<List<PaymentIntent>, GatewayError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(gte) = params.created_gte {
            query.push(("created[gte]", gte.to_string()));
        }
        if let Some(lt) = params.created_lt {
            query.push(("created[lt]", lt.to_string()));
        }
        if let Some(limit) = params.limit {
            query.push(("limit", limit.clamp(1, PAGE_LIMIT).to_string()));
        }
        if let Some(after) = &params.starting_after {
            query.push(("starting_after", after.clone()));
        }
        read_answer(self.get("/v1/payment_intents", &query).await?)
    }

    /// Every payment created in `[created_gte, created_lt)` (unix seconds),
    /// following the pages: what a reconciliation compares with the ledger.
    pub async fn list_all_payments(
        &self,
        created_gte: i64,
        created_lt: i64,
    ) -> Result<Vec<PaymentIntent>, GatewayError> {
        let mut all = Vec::new();
        let mut params = ListPayments {
            created_gte: Some(created_gte),
            created_lt: Some(created_lt),
            limit: Some(PAGE_LIMIT),
            starting_after: None,
        };
        loop {
            let page = self.list_payments(&params).await?;
            let last = page.data.last().map(|pi| pi.id.clone());
            all.extend(page.data);
            match last {
                Some(id) if page.has_more => params.starting_after = Some(id),
                _ => return Ok(all),
            }
        }
    }

    /// Every refund of a payment, newest first, following the pages
    /// (`GET /v1/refunds?payment_intent=..`). A list, never the search API: it
    /// sees a refund as soon as its creation was answered. An id that cannot
    /// be a payment's has no refunds; one the provider does not know is a
    /// [`GatewayError::Rejected`] (`resource_missing`).
    pub async fn list_refunds(&self, payment_intent: &str) -> Result<Vec<Refund>, GatewayError> {
        // An empty filter would be no filter: every refund of the account.
        if !is_id(payment_intent) {
            return Ok(Vec::new());
        }
        self.list_all("/v1/refunds", vec![("payment_intent", payment_intent.to_owned())]).await
    }

    /// Every refund created in `[created_gte, created_lt)` (unix seconds),
    /// following the pages: what a reconciliation compares with the ledger.
    pub async fn list_all_refunds(&self, created_gte: i64, created_lt: i64) -> Result<Vec<Refund>, GatewayError> {
        let period = vec![("created[gte]", created_gte.to_string()), ("created[lt]", created_lt.to_string())];
        self.list_all("/v1/refunds", period).await
    }

    /// Every object of a list endpoint under `filter`, `PAGE_LIMIT` at a
    /// time, each page starting after the last object of the one before.
    async fn list_all<T: DeserializeOwned + Listed>(
        &self,
        path: &str,
        filter: Vec<(&str, String)>,
    ) -> Result<Vec<T>, GatewayError> {
        let mut all: Vec<T> = Vec::new();
        loop {
            let mut query = filter.clone();
            query.push(("limit", PAGE_LIMIT.to_string()));
            if let Some(last) = all.last() {
                query.push(("starting_after", last.id().to_owned()));
            }
            let page: List<T> = read_answer(self.get(path, &query).await?)?;
            let more = page.has_more && !page.data.is_empty();
            all.extend(page.data);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Verifies a webhook delivery with this account's webhook secret, the
    /// default tolerance and the current time.
    pub fn verify_webhook(&self, payload: &[u8], signature_header: Option<&str>) -> Result<Event, SignatureError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        webhook::verify(payload, signature_header, &self.webhook_secret, webhook::DEFAULT_TOLERANCE, now)
    }

    async fn post(&self, path: &str, form: &[(String, String)], idempotency_key: &str) -> Result<Answer, Unknown> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, &*self.bearer)
            .header("Idempotency-Key", idempotency_key)
            .form(form);
        exchange(request).await
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Answer, GatewayError> {
        let request = self.http.get(format!("{}{path}", self.base)).header(AUTHORIZATION, &*self.bearer).query(query);
        exchange(request).await.map_err(GatewayError::Unavailable)
    }
}

/// Ids are a prefix such as `pi_` and alphanumerics.
fn is_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the provider answers a write to a payment it does not have (404
/// `resource_missing`), for an id refused before any request.
fn no_such_payment(id: &str) -> GatewayError {
    GatewayError::Rejected {
        status: StatusCode::NOT_FOUND.as_u16(),
        kind: "invalid_request_error".to_owned(),
        code: Some("resource_missing".to_owned()),
        param: Some("intent".to_owned()),
        message: format!("No such payment_intent: '{id}'"),
        request_id: None,
    }
}

/// An object of a list, which the next page starts after.
trait Listed {
    fn id(&self) -> &str;
}

impl Listed for Refund {
    fn id(&self) -> &str {
        &self.id
    }
}

/// Stripe's nested form: `metadata[key]=value`.
fn push_metadata(form: &mut Vec<(String, String)>, metadata: &BTreeMap<String, String>) {
    form.extend(metadata.iter().map(|(k, v)| (format!("metadata[{k}]"), v.clone())));
}

/// `metadata['k']:'v' AND ...` in Stripe's search query language, with quotes
/// and backslashes escaped.
fn search_query(metadata: &[(&str, &str)]) -> String {
    fn quoted(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    metadata.iter().map(|(k, v)| format!("metadata[{}]:{}", quoted(k), quoted(v))).collect::<Vec<_>>().join(" AND ")
}

/// Sends a request and reads the whole answer, or says why that failed. Any
/// failure is an unknown outcome: the request may have been carried out.
async fn exchange(request: RequestBuilder) -> Result<Answer, Unknown> {
    let response = request.send().await.map_err(|e| transport_unknown(&e))?;
    let status = response.status();
    let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    match response.bytes().await {
        Ok(body) => Ok(Answer { status, request_id, body: body.to_vec() }),
        Err(e) => Err(Unknown { status: Some(status.as_u16()), request_id, ..transport_unknown(&e) }),
    }
}

fn transport_unknown(e: &reqwest::Error) -> Unknown {
    let reason = if e.is_timeout() {
        UnknownReason::Timeout
    } else if e.is_body() || e.is_decode() {
        UnknownReason::IncompleteResponse
    } else {
        UnknownReason::Connection
    };
    Unknown { reason, status: None, detail: error_chain(e), request_id: None }
}

/// reqwest's Display hides the cause ("error sending request"); the chain says
/// what happened (reset, closed before the message completed, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What the answer to a payment's creation means.
fn payment_outcome(answer: Answer) -> Result<PaymentOutcome, GatewayError> {
    if answer.status.is_success() {
        return Ok(match parse_written::<PaymentIntent>(&answer) {
            Err(unknown) => PaymentOutcome::Unknown(unknown),
            Ok(intent) if intent.status == PaymentStatus::Succeeded => PaymentOutcome::Succeeded(intent),
            Ok(intent) if intent.status == PaymentStatus::RequiresCapture => PaymentOutcome::RequiresCapture(intent),
            // `requires_action` (3-D Secure) among them: nothing is charged
            // until the customer authenticates.
            Ok(intent) => PaymentOutcome::Pending(intent),
        });
    }
    if answer.status == StatusCode::PAYMENT_REQUIRED {
        if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(&answer.body) {
            if error.kind == "card_error" {
                return Ok(PaymentOutcome::Declined(Decline {
                    code: error.code.unwrap_or_else(|| "card_declined".to_owned()),
                    decline_code: error.decline_code,
                    message: error.message,
                    payment_intent_id: error.payment_intent.map(|pi| pi.id),
                    request_id: answer.request_id,
                }));
            }
        }
    }
    classify_failure(answer).map(PaymentOutcome::Unknown)
}

/// What the answer to a cancellation means. Stripe refuses to cancel a
/// payment that is past it with a 400 `payment_intent_unexpected_state` that
/// carries the payment: that is an answer about the payment, not an error of
/// the request.
fn cancel_outcome(answer: Answer) -> Result<CancelOutcome, GatewayError> {
    let status = answer.status;
    if status.is_success() {
        return match parse_written::<PaymentIntent>(&answer) {
            Err(unknown) => Ok(CancelOutcome::Unknown(unknown)),
            Ok(intent) if intent.status == PaymentStatus::Canceled => Ok(CancelOutcome::Canceled(intent)),
            Ok(intent) => Err(GatewayError::Unexpected {
                status: status.as_u16(),
                detail: format!("a cancel answered with payment {} in status {:?}", intent.id, intent.status),
            }),
        };
    }
    if let Some(intent) = unexpected_state(&answer) {
        return Ok(match intent.status {
            PaymentStatus::Canceled => CancelOutcome::Canceled(intent),
            _ => CancelOutcome::NotCancelable(intent),
        });
    }
    classify_failure(answer).map(CancelOutcome::Unknown)
}

/// What the answer to a capture means. As for a cancellation, Stripe
/// refuses a payment that is not in `requires_capture` with a 400
/// `payment_intent_unexpected_state` that carries it. A payment captured
/// already is not taken as this capture's success: the earlier capture may
/// have taken another amount, and the caller should record what it did.
fn capture_outcome(answer: Answer) -> Result<CaptureOutcome, GatewayError> {
    let status = answer.status;
    if status.is_success() {
        return match parse_written::<PaymentIntent>(&answer) {
            Err(unknown) => Ok(CaptureOutcome::Unknown(unknown)),
            Ok(intent) if intent.status == PaymentStatus::Succeeded => Ok(CaptureOutcome::Captured(intent)),
            Ok(intent) => Err(GatewayError::Unexpected {
                status: status.as_u16(),
                detail: format!("a capture answered with payment {} in status {:?}", intent.id, intent.status),
            }),
        };
    }
    if let Some(intent) = unexpected_state(&answer) {
        return Ok(CaptureOutcome::NotCapturable(intent));
    }
    classify_failure(answer).map(CaptureOutcome::Unknown)
}

/// The payment of Stripe's 400 `payment_intent_unexpected_state`: a write
/// refused for the payment's status, which it names.
fn unexpected_state(answer: &Answer) -> Option<PaymentIntent> {
    if answer.status != StatusCode::BAD_REQUEST {
        return None;
    }
    let ErrorBody { error } = serde_json::from_slice::<ErrorBody>(&answer.body).ok()?;
    match (error.code.as_deref(), error.payment_intent) {
        (Some("payment_intent_unexpected_state"), Some(intent)) => Some(*intent),
        _ => None,
    }
}

/// The body of a 2xx answer to a write. A body that does not parse is treated
/// as cut off: the write may well have happened.
fn parse_written<T: DeserializeOwned>(answer: &Answer) -> Result<T, Unknown> {
    serde_json::from_slice(&answer.body).map_err(|e| Unknown {
        reason: UnknownReason::IncompleteResponse,
        status: Some(answer.status.as_u16()),
        detail: format!("unreadable {} answer: {e}", answer.status),
        request_id: answer.request_id.clone(),
    })
}

/// The body of an answer to a read.
fn read_answer<T: DeserializeOwned>(answer: Answer) -> Result<T, GatewayError> {
    if !answer.status.is_success() {
        return Err(match classify_failure(answer) {
            Ok(unknown) => GatewayError::Unavailable(unknown),
            Err(error) => error,
        });
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| GatewayError::Unexpected { status: answer.status.as_u16(), detail: e.to_string() })
}

/// A non-2xx answer (other than a decline): `Ok` when the outcome is unknown
/// and a resend with the same key is the way forward, `Err` when it is not.
fn classify_failure(answer: Answer) -> Result<Unknown, GatewayError> {
    let status = answer.status;
    let error = serde_json::from_slice::<ErrorBody>(&answer.body).ok().map(|b| b.error);
    let message = error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| body_excerpt(&answer.body));
    let unknown = |reason| Unknown {
        reason,
        status: Some(status.as_u16()),
        detail: message.clone(),
        request_id: answer.request_id.clone(),
    };
    if status.is_server_error() {
        return Ok(unknown(UnknownReason::ServerError));
    }
    match status {
        StatusCode::CONFLICT => return Ok(unknown(UnknownReason::InFlight)),
        StatusCode::TOO_MANY_REQUESTS => return Ok(unknown(UnknownReason::RateLimited)),
        StatusCode::UNAUTHORIZED => {
            return Err(GatewayError::Unauthorized { message, request_id: answer.request_id });
        }
        _ => {}
    }
    match error {
        Some(ApiError { kind, .. }) if kind == "idempotency_error" => {
            Err(GatewayError::IdempotencyMismatch { message, request_id: answer.request_id })
        }
        Some(ApiError { kind, code, param, .. }) if status.is_client_error() => Err(GatewayError::Rejected {
            status: status.as_u16(),
            kind,
            code,
            param,
            message,
            request_id: answer.request_id,
        }),
        _ => Err(GatewayError::Unexpected { status: status.as_u16(), detail: message }),
    }
}

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            request_id: Some("req_1".into()),
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn client_and_its_futures_are_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let client = Client::new(&Config::new("http://127.0.0.1:1", "sk_test", "whsec")).unwrap();
        send_sync(&client);
        let payment = PaymentRequest {
            amount: 1,
            currency: "eur".into(),
            payment_method: "pm_card_visa".into(),
            metadata: BTreeMap::new(),
        };
        send(client.create_payment(&payment, "k"));
        let refund = RefundRequest { payment_intent: "pi_1".into(), amount: None, metadata: BTreeMap::new() };
        send(client.create_refund(&refund, "k"));
        send(client.cancel_payment("pi_1", "k"));
        send(client.create_payment_with_capture(&payment, CaptureMethod::Manual, "k"));
        send(client.capture_payment("pi_1", Some(1), "k"));
        send(client.retrieve_payment("pi_1"));
        send(client.search_payments(&[("order_id", "o")]));
        send(client.list_all_payments(0, 1));
        send(client.list_refunds("pi_1"));
        send(client.list_all_refunds(0, 1));
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        assert!(matches!(Client::new(&Config::new("127.0.0.1:12111", "sk", "")), Err(BuildError::Url(_))));
        assert!(matches!(Client::new(&Config::new("http://x", "", "")), Err(BuildError::MissingSecretKey)));
    }

    #[test]
    fn search_query_quotes_values() {
        assert_eq!(
            search_query(&[("tenant_id", "t1"), ("order_id", "it's\\")]),
            r"metadata['tenant_id']:'t1' AND metadata['order_id']:'it\'s\\'"
        );
    }

    #[test]
    fn failures_are_sorted_by_what_the_caller_may_do() {
        let err = |t: &str| serde_json::json!({"error": {"type": t, "message": "m"}});
        for status in [500, 502, 503] {
            assert_eq!(classify_failure(answer(status, err("api_error"))).unwrap().reason, UnknownReason::ServerError);
        }
        let in_flight = classify_failure(answer(409, err("idempotency_error"))).unwrap();
        assert_eq!((in_flight.reason, in_flight.status), (UnknownReason::InFlight, Some(409)));
        assert_eq!(classify_failure(answer(429, err("rate_limit_error"))).unwrap().reason, UnknownReason::RateLimited);
        assert!(matches!(
            classify_failure(answer(400, err("idempotency_error"))),
            Err(GatewayError::IdempotencyMismatch { .. })
        ));
        assert!(matches!(
            classify_failure(answer(401, err("invalid_request_error"))),
            Err(GatewayError::Unauthorized { .. })
        ));
        assert!(matches!(
            classify_failure(answer(404, err("invalid_request_error"))),
            Err(GatewayError::Rejected { status: 404, .. })
        ));
        // A restricted key: Stripe's 403 has no code.
        let forbidden = serde_json::json!({"error": {"type": "invalid_request_error", "message":
            "The provided key 'rk_test_****abcdef' does not have the required permissions for this endpoint"}});
        match classify_failure(answer(403, forbidden)) {
            Err(GatewayError::Rejected { status: 403, kind, code: None, message, request_id, .. }) => {
                assert_eq!((kind.as_str(), request_id.as_deref()), ("invalid_request_error", Some("req_1")));
                assert!(message.contains("does not have the required permissions"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A 5xx whose body is not the provider's (a proxy page) is unknown too.
        let proxy = Answer { status: StatusCode::BAD_GATEWAY, request_id: None, body: b"<html>".to_vec() };
        assert_eq!(classify_failure(proxy).unwrap().reason, UnknownReason::ServerError);
    }

    #[test]
    fn configuration_errors_are_told_from_declines() {
        let error = |status: u16, kind: &str| {
            let body = serde_json::json!({"error": {"type": kind, "code": "some_code", "message": "m"}});
            classify_failure(answer(status, body)).unwrap_err()
        };
        for (status, kind) in [
            (401, "invalid_request_error"),
            (403, "invalid_request_error"),
            (404, "invalid_request_error"),
            (400, "invalid_request_error"),
            // Whatever the type: a key or a URL is wrong.
            (403, "api_error"),
            (404, "something_new"),
        ] {
            assert!(error(status, kind).is_configuration(), "{status} {kind}");
        }
        for (status, kind) in [(400, "idempotency_error"), (402, "card_error"), (400, "card_error")] {
            assert!(!error(status, kind).is_configuration(), "{status} {kind}");
        }
        let unavailable = GatewayError::Unavailable(classify_failure(answer(503, serde_json::json!({}))).unwrap());
        assert!(!unavailable.is_configuration());
        assert!(!GatewayError::Unexpected { status: 200, detail: "x".into() }.is_configuration());
    }

    fn intent_json(status: &str) -> serde_json::Value {
        serde_json::json!({
            "id": "pi_1", "object": "payment_intent", "amount": 1250, "amount_received": 0, "currency": "eur",
            "status": status, "created": 1, "latest_charge": null,
        })
    }

    #[test]
    fn a_payment_that_needs_authentication_is_pending_with_what_the_browser_needs() {
        let mut body = intent_json("requires_action");
        body["client_secret"] = "pi_1_secret_abc".into();
        body["next_action"] = serde_json::json!({"type": "use_stripe_sdk", "use_stripe_sdk": {
            "type": "three_d_secure_redirect", "stripe_js": "https://hooks.stripe.com/redirect/authenticate/src_1",
        }});
        match payment_outcome(answer(200, body)).unwrap() {
            PaymentOutcome::Pending(intent) => {
                assert_eq!(intent.status, PaymentStatus::RequiresAction);
                assert_eq!(intent.client_secret.as_deref(), Some("pi_1_secret_abc"));
                assert_eq!(intent.next_action_type(), Some("use_stripe_sdk"));
                assert_eq!(intent.latest_charge, None, "nothing charged yet");
            }
            other => panic!("{other:?}"),
        }
        let mut succeeded = intent_json("succeeded");
        succeeded["amount_received"] = 1250.into();
        assert!(matches!(payment_outcome(answer(200, succeeded)).unwrap(), PaymentOutcome::Succeeded(_)));
    }

    #[test]
    fn cancel_answers_are_sorted_by_what_the_caller_may_do() {
        let mut canceled = intent_json("canceled");
        canceled["cancellation_reason"] = "abandoned".into();
        match cancel_outcome(answer(200, canceled.clone())).unwrap() {
            CancelOutcome::Canceled(intent) => assert_eq!(intent.cancellation_reason.as_deref(), Some("abandoned")),
            other => panic!("{other:?}"),
        }
        let refused = |intent: serde_json::Value| {
            let status = intent["status"].as_str().unwrap().to_owned();
            answer(
                400,
                serde_json::json!({"error": {
                    "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                    "message": format!("You cannot cancel this PaymentIntent because it has a status of {status}."),
                    "payment_intent": intent,
                }}),
            )
        };
        // Past cancelling: the payment comes back, so the caller can record it.
        let mut succeeded = intent_json("succeeded");
        succeeded["latest_charge"] = "ch_1".into();
        match cancel_outcome(refused(succeeded)).unwrap() {
            CancelOutcome::NotCancelable(intent) => {
                assert_eq!((intent.status, intent.latest_charge.as_deref()), (PaymentStatus::Succeeded, Some("ch_1")));
            }
            other => panic!("{other:?}"),
        }
        // Canceled already: what was asked for holds.
        assert!(matches!(cancel_outcome(refused(canceled)).unwrap(), CancelOutcome::Canceled(_)));

        let err = |status: u16, t: &str, code: Option<&str>| {
            answer(status, serde_json::json!({"error": {"type": t, "code": code, "message": "m"}}))
        };
        for status in [500, 503] {
            match cancel_outcome(err(status, "api_error", None)).unwrap() {
                CancelOutcome::Unknown(unknown) => assert_eq!(unknown.reason, UnknownReason::ServerError),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            cancel_outcome(err(409, "invalid_request_error", Some("idempotency_key_in_use"))),
            Ok(CancelOutcome::Unknown(Unknown { reason: UnknownReason::InFlight, .. }))
        ));
        let cut = Answer { status: StatusCode::OK, request_id: None, body: br#"{"id":"pi_1","sta"#.to_vec() };
        assert!(matches!(cancel_outcome(cut), Ok(CancelOutcome::Unknown(_))));
        assert!(matches!(
            cancel_outcome(err(400, "idempotency_error", None)),
            Err(GatewayError::IdempotencyMismatch { .. })
        ));
        // The state error without the payment cannot be read as one.
        assert!(matches!(
            cancel_outcome(err(400, "invalid_request_error", Some("payment_intent_unexpected_state"))),
            Err(GatewayError::Rejected { status: 400, .. })
        ));
        assert!(matches!(
            cancel_outcome(err(404, "invalid_request_error", Some("resource_missing"))),
            Err(GatewayError::Rejected { status: 404, .. })
        ));
        // A 200 that is not a canceled payment is not what Stripe answers.
        assert!(matches!(
            cancel_outcome(answer(200, intent_json("succeeded"))),
            Err(GatewayError::Unexpected { status: 200, .. })
        ));
    }

    #[tokio::test]
    async fn a_cancel_of_something_that_is_not_an_id_sends_nothing() {
        // Nothing listens there: a request would be an unknown outcome.
        let client = Client::new(&Config::new("http://127.0.0.1:1", "sk_test", "whsec")).unwrap();
        for id in ["", "../v1/refunds", "pi_1/cancel?x=1"] {
            match client.cancel_payment(id, "k").await {
                Err(error @ GatewayError::Rejected { status: 404, .. }) => assert!(error.is_configuration()),
                other => panic!("{id}: {other:?}"),
            }
            match client.capture_payment(id, None, "k").await {
                Err(error @ GatewayError::Rejected { status: 404, .. }) => assert!(error.is_configuration()),
                other => panic!("{id}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_authorization_requires_capture() {
        let mut authorized = intent_json("requires_capture");
        authorized["amount_capturable"] = 1250.into();
        authorized["latest_charge"] = "ch_1".into();
        match payment_outcome(answer(200, authorized)).unwrap() {
            PaymentOutcome::RequiresCapture(intent) => {
                assert_eq!((intent.amount_capturable, intent.amount_received), (1250, 0));
                assert_eq!(intent.latest_charge.as_deref(), Some("ch_1"), "the authorization's charge");
            }
            other => panic!("{other:?}"),
        }
        // Without the field (an older answer), nothing is capturable.
        assert_eq!(serde_json::from_value::<PaymentIntent>(intent_json("succeeded")).unwrap().amount_capturable, 0);
    }

    #[test]
    fn capture_answers_are_sorted_by_what_the_caller_may_do() {
        let mut captured = intent_json("succeeded");
        captured["amount_received"] = 800.into();
        match capture_outcome(answer(200, captured.clone())).unwrap() {
            CaptureOutcome::Captured(intent) => {
                assert_eq!((intent.amount_received, intent.amount_capturable), (800, 0))
            }
            other => panic!("{other:?}"),
        }
        let refused = |intent: serde_json::Value| {
            answer(
                400,
                serde_json::json!({"error": {
                    "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                    "message": "This PaymentIntent could not be captured because it has already been captured.",
                    "payment_intent": intent,
                }}),
            )
        };
        // Captured already (under another key) or canceled: the payment comes
        // back, with what was taken, for the caller to record.
        for intent in [captured, intent_json("canceled"), intent_json("requires_action")] {
            let status = intent["status"].clone();
            match capture_outcome(refused(intent)).unwrap() {
                CaptureOutcome::NotCapturable(intent) => assert_eq!(serde_json::json!(intent.status), status),
                other => panic!("{other:?}"),
            }
        }

        let err = |status: u16, t: &str, code: Option<&str>| {
            answer(status, serde_json::json!({"error": {"type": t, "code": code, "message": "m"}}))
        };
        assert!(matches!(
            capture_outcome(err(500, "api_error", None)),
            Ok(CaptureOutcome::Unknown(Unknown { reason: UnknownReason::ServerError, .. }))
        ));
        assert!(matches!(
            capture_outcome(err(409, "invalid_request_error", Some("idempotency_key_in_use"))),
            Ok(CaptureOutcome::Unknown(Unknown { reason: UnknownReason::InFlight, .. }))
        ));
        let cut = Answer { status: StatusCode::OK, request_id: None, body: br#"{"id":"pi_1","sta"#.to_vec() };
        assert!(matches!(capture_outcome(cut), Ok(CaptureOutcome::Unknown(_))));
        assert!(matches!(
            capture_outcome(err(400, "idempotency_error", None)),
            Err(GatewayError::IdempotencyMismatch { .. })
        ));
        // More than was authorized: the request is wrong, not the payment.
        match capture_outcome(err(400, "invalid_request_error", Some("amount_too_large"))) {
            Err(error @ GatewayError::Rejected { status: 400, .. }) => assert!(error.is_configuration()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            capture_outcome(err(400, "invalid_request_error", Some("payment_intent_unexpected_state"))),
            Err(GatewayError::Rejected { status: 400, .. })
        ));
        // A 200 that is not a captured payment is not what Stripe answers.
        assert!(matches!(
            capture_outcome(answer(200, intent_json("requires_capture"))),
            Err(GatewayError::Unexpected { status: 200, .. })
        ));
    }

    #[test]
    fn an_unreadable_success_is_unknown() {
        let cut = Answer { status: StatusCode::OK, request_id: None, body: br#"{"id":"pi_1","amo"#.to_vec() };
        let unknown = parse_written::<PaymentIntent>(&cut).unwrap_err();
        assert_eq!(unknown.reason, UnknownReason::IncompleteResponse);
    }
}
