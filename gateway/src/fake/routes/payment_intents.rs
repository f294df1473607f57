//! `/v1/payment_intents`: created and confirmed in one call (left in
//! `requires_action` by a card that wants 3-D Secure, see `authentication`;
//! only authorized, in `requires_capture`, with `capture_method=manual`),
//! retrieved, listed by creation time, searched by metadata. Cancelled in
//! `cancel`, captured in `capture`.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use gateway::{ApiError, PaymentStatus};
use serde_json::json;

use crate::app::{now_ms, App};
use crate::objects::{card, client_secret, new_id, CaptureMethod, Card, Payment};
use crate::query;
use crate::routes::authentication;
use crate::routes::list::{self, Page};
use crate::routes::write::{Context, Executed, NewEvent, PathParams, Write};
use crate::routes::{list_route, ok, read_request, Failure};
use crate::state::{Op, State};

/// Stripe's metadata limits.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

pub struct Create;

pub struct CreateParams {
    amount: i64,
    currency: String,
    payment_method: String,
    capture_method: CaptureMethod,
    metadata: BTreeMap<String, String>,
}

impl Write for Create {
    const PATH: &'static str = "/v1/payment_intents";
    const PERMISSION: &'static str = "rak_payment_intent_write";
    type Params = CreateParams;

    fn parse(form: &[(String, String)], _: &PathParams) -> Result<CreateParams, Failure> {
        let (mut amount, mut currency, mut payment_method, mut confirm) = (None, None, None, false);
        let mut capture_method = CaptureMethod::Automatic;
        let mut metadata = BTreeMap::new();
        for (name, value) in form {
            match name.as_str() {
                "amount" => amount = Some(value),
                "currency" => currency = Some(value),
                "payment_method" => payment_method = Some(value.clone()),
                "confirm" => confirm = value == "true",
                "capture_method" => {
                    capture_method = CaptureMethod::parse(value).ok_or_else(|| {
                        let message = format!(
                            "Invalid capture_method: must be one of automatic, automatic_async or manual; got \
                             `{value}`."
                        );
                        Failure::invalid(Some("parameter_invalid_string"), message, Some("capture_method"))
                    })?;
                }
                "description" | "statement_descriptor" | "receipt_email" => {}
                n if n == "payment_method_types[]" || is_indexed(n, "payment_method_types") => {
                    if value != "card" {
                        let message = format!("The payment method type \"{value}\" is invalid.");
                        return Err(Failure::invalid(Some("parameter_invalid_string"), message, Some(n)));
                    }
                }
                n => match metadata_key(n) {
                    Some(key) => {
                        metadata.insert(key.to_owned(), value.clone());
                    }
                    None => {
                        let message = format!("Received unknown parameter: {n}");
                        return Err(Failure::invalid(Some("parameter_unknown"), message, Some(n)));
                    }
                },
            }
        }
        let amount = amount.ok_or_else(|| Failure::missing("amount"))?;
        let amount = amount.parse::<i64>().ok().filter(|a| *a >= 1).ok_or_else(|| {
            Failure::invalid(
                Some("parameter_invalid_integer"),
                "Invalid integer: amount must be a positive whole number of minor units.",
                Some("amount"),
            )
        })?;
        let currency = currency.ok_or_else(|| Failure::missing("currency"))?;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(Failure::invalid(None, format!("Invalid currency: {currency}."), Some("currency")));
        }
        if !confirm {
            return Err(Failure::invalid(
                None,
                "This fake provider creates PaymentIntents confirmed in the same call: send confirm=true.",
                Some("confirm"),
            ));
        }
        let payment_method = payment_method.ok_or_else(|| Failure::missing("payment_method"))?;
        check_metadata(&metadata)?;
        Ok(CreateParams { amount, currency: currency.to_ascii_lowercase(), payment_method, capture_method, metadata })
    }

    fn check(_: &State, params: &CreateParams) -> Result<BTreeMap<String, String>, Failure> {
        if card(&params.payment_method).is_none() {
            return Err(Failure::no_such("PaymentMethod", &params.payment_method, "payment_method"));
        }
        Ok(params.metadata.clone())
    }

    fn execute(_: &State, params: CreateParams, context: Context<'_>) -> Executed {
        let id = new_id("pi");
        let mut payment = Payment {
            client_secret: Some(client_secret(&id)),
            id,
            charge_id: new_id("ch"),
            has_charge: true,
            amount: params.amount,
            currency: params.currency,
            status: PaymentStatus::Succeeded,
            created: context.now_secs(),
            metadata: params.metadata,
            payment_method: params.payment_method,
            amount_refunded: 0,
            last_payment_error: None,
            next_action: None,
            cancellation_reason: None,
            canceled_at: None,
            capture_method: params.capture_method,
            capture_before_ms: None,
            amount_captured: None,
            changed_ms: context.now_ms,
            seq: 0,
        };
        let metadata = payment.metadata.clone();
        match card(&payment.payment_method).expect("checked") {
            Card::Succeeds if params.capture_method == CaptureMethod::Manual => {
                payment.authorize(context.now_ms, context.authorization_expiry_ms);
                Executed {
                    status: StatusCode::OK,
                    body: payment.json(),
                    events: vec![NewEvent {
                        kind: gateway::webhook::PAYMENT_AMOUNT_CAPTURABLE_UPDATED,
                        object: payment.json(),
                        metadata,
                    }],
                    ops: vec![Op::Payment(Box::new(payment))],
                }
            }
            Card::Succeeds => Executed {
                status: StatusCode::OK,
                body: payment.json(),
                events: vec![NewEvent { kind: gateway::webhook::PAYMENT_SUCCEEDED, object: payment.json(), metadata }],
                ops: vec![Op::Payment(Box::new(payment))],
            },
            Card::Declines { decline_code, message } => {
                payment.status = PaymentStatus::RequiresPaymentMethod;
                payment.last_payment_error = Some(ApiError {
                    kind: "card_error".into(),
                    code: Some("card_declined".into()),
                    decline_code: Some(decline_code.into()),
                    message: message.into(),
                    param: None,
                    payment_intent: None,
                });
                let body = json!({"error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": decline_code,
                    "message": message,
                    "charge": payment.charge_id,
                    "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                    "payment_intent": payment.json(),
                    "payment_method": {"id": payment.payment_method, "object": "payment_method", "type": "card"},
                }});
                Executed {
                    status: StatusCode::PAYMENT_REQUIRED,
                    body,
                    events: vec![NewEvent { kind: gateway::webhook::PAYMENT_FAILED, object: payment.json(), metadata }],
                    ops: vec![Op::Payment(Box::new(payment))],
                }
            }
            Card::RequiresAuthentication => {
                // Nothing reaches the card until the customer authenticates:
                // a 200 like any other, stored for the key as it is.
                payment.status = PaymentStatus::RequiresAction;
                payment.has_charge = false;
                payment.next_action = Some(authentication::next_action(context.url, &payment.id));
                Executed {
                    status: StatusCode::OK,
                    body: payment.json(),
                    events: vec![NewEvent {
                        kind: gateway::webhook::PAYMENT_REQUIRES_ACTION,
                        object: payment.json(),
                        metadata,
                    }],
                    ops: vec![Op::Payment(Box::new(payment))],
                }
            }
        }
    }
}

/// `name` is `prefix[<n>]`.
fn is_indexed(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// `metadata[key]` → `key`.
pub fn metadata_key(name: &str) -> Option<&str> {
    name.strip_prefix("metadata[").and_then(|rest| rest.strip_suffix(']')).filter(|k| !k.is_empty())
}

pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), Failure> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(Failure::invalid(None, "Metadata can have at most 50 keys.", Some("metadata")));
    }
    for (key, value) in metadata {
        if key.chars().count() > MAX_METADATA_KEY_LEN || value.chars().count() > MAX_METADATA_VALUE_LEN {
            let message = format!("Metadata key `{key}` or its value is too long (keys 40, values 500 characters).");
            return Err(Failure::invalid(None, message, Some(&format!("metadata[{key}]"))));
        }
    }
    Ok(())
}

pub async fn retrieve(req: HttpRequest, id: Path<String>, app: Data<App>) -> HttpResponse {
    if let Err(failure) = read_request(&req, &app, "GET /v1/payment_intents/{id}") {
        return failure.respond(&new_id("req"));
    }
    let state = app.state();
    match state.payment(&id, app.durable()) {
        Some(payment) => ok(&payment.json()),
        None => Failure { status: StatusCode::NOT_FOUND, ..Failure::no_such("payment_intent", &id, "intent") }
            .respond(&new_id("req")),
    }
}

/// `GET /v1/payment_intents?created[gte]=..&created[lt]=..&limit=..&starting_after=..`
pub async fn list(req: HttpRequest, app: Data<App>) -> HttpResponse {
    list_route(&req, &app, "GET /v1/payment_intents", list_page)
}

fn list_page(state: &State, durable: u64, query: &[(String, String)]) -> Result<serde_json::Value, Failure> {
    let (page, _) = Page::parse(query, &[])?;
    page.check_cursor("payment_intent", |id| state.payment(id, durable).is_some())?;
    Ok(page.answer("/v1/payment_intents", state.payments_newest_first(durable), |_| true))
}

/// `GET /v1/payment_intents/search?query=metadata['k']:'v'&limit=..&page=..`
pub async fn search(req: HttpRequest, app: Data<App>) -> HttpResponse {
    let query = match read_request(&req, &app, "GET /v1/payment_intents/search") {
        Ok(query) => query,
        Err(failure) => return failure.respond(&new_id("req")),
    };
    // Stripe's search index lags writes: what was written within the lag is
    // not found yet. The list endpoint has no such lag.
    let lag = app.settings.search_lag_ms as i64;
    let indexed_up_to = (lag > 0).then(|| now_ms() - lag);
    match search_page(&app.state(), app.durable(), &query, indexed_up_to) {
        Ok(body) => ok(&body),
        Err(failure) => failure.respond(&new_id("req")),
    }
}

/// `indexed_up_to` (unix ms): payments written later are not in the index yet.
fn search_page(
    state: &State,
    durable: u64,
    params: &[(String, String)],
    indexed_up_to: Option<i64>,
) -> Result<serde_json::Value, Failure> {
    let (mut text, mut limit, mut offset) = (None, 10usize, 0usize);
    for (name, value) in params {
        match name.as_str() {
            "query" => text = Some(value.as_str()),
            "limit" => limit = list::limit(value)?,
            // Page tokens are opaque to clients; here an offset.
            "page" => {
                offset = value.parse().map_err(|_| Failure::invalid(None, "Invalid page token.", Some("page")))?
            }
            n => {
                let message = format!("Received unknown parameter: {n}");
                return Err(Failure::invalid(Some("parameter_unknown"), message, Some(n)));
            }
        }
    }
    let text = text.ok_or_else(|| Failure::missing("query"))?;
    let clauses =
        query::parse(text).map_err(|e| Failure::invalid(None, format!("Invalid query: {e}"), Some("query")))?;
    let mut data: Vec<_> = state
        .payments_newest_first(durable)
        .filter(|p| indexed_up_to.is_none_or(|up_to| p.changed_ms <= up_to))
        .filter(|p| query::matches(&clauses, p))
        .skip(offset)
        .take(limit + 1)
        .map(Payment::json)
        .collect();
    let has_more = data.len() > limit;
    data.truncate(limit);
    let next_page = has_more.then(|| (offset + limit).to_string());
    Ok(json!({
        "object": "search_result", "url": "/v1/payment_intents/search",
        "has_more": has_more, "next_page": next_page, "data": data,
    }))
}
