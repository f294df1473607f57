//! `/v1/refunds`: partial or full, never more than what is left of the
//! payment; retrieved, and listed by payment, charge or creation time.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use gateway::{PaymentStatus, Refund, RefundStatus};

use crate::app::App;
use crate::objects::{new_id, refund_json, Payment, RefundRecord};
use crate::routes::list::Page;
use crate::routes::payment_intents::{check_metadata, metadata_key};
use crate::routes::write::{Context, Executed, NewEvent, PathParams, Write};
use crate::routes::{list_route, ok, read_request, Failure};
use crate::state::{Op, State};

pub struct Create;

pub struct CreateParams {
    /// A PaymentIntent id, or (as Stripe also takes) a charge id.
    target: Target,
    amount: Option<i64>,
    metadata: BTreeMap<String, String>,
}

enum Target {
    PaymentIntent(String),
    Charge(String),
}

impl Write for Create {
    const PATH: &'static str = "/v1/refunds";
    const PERMISSION: &'static str = "rak_refund_write";
    type Params = CreateParams;

    fn parse(form: &[(String, String)], _: &PathParams) -> Result<CreateParams, Failure> {
        let (mut payment_intent, mut charge, mut amount) = (None, None, None);
        let mut metadata = BTreeMap::new();
        for (name, value) in form {
            match name.as_str() {
                "payment_intent" => payment_intent = Some(value.clone()),
                "charge" => charge = Some(value.clone()),
                "amount" => {
                    let parsed = value.parse::<i64>().ok().filter(|a| *a >= 1).ok_or_else(|| {
                        Failure::invalid(
                            Some("parameter_invalid_integer"),
                            "Invalid integer: amount must be a positive whole number of minor units.",
                            Some("amount"),
                        )
                    })?;
                    amount = Some(parsed);
                }
                "reason" => {
                    if !["duplicate", "fraudulent", "requested_by_customer"].contains(&value.as_str()) {
                        return Err(Failure::invalid(None, format!("Invalid reason: {value}"), Some("reason")));
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
        check_metadata(&metadata)?;
        let target = match (payment_intent, charge) {
            (Some(pi), None) => Target::PaymentIntent(pi),
            (None, Some(ch)) => Target::Charge(ch),
            (None, None) => return Err(Failure::missing("payment_intent")),
            (Some(_), Some(_)) => {
                return Err(Failure::invalid(None, "Pass either payment_intent or charge, not both.", None));
            }
        };
        Ok(CreateParams { target, amount, metadata })
    }

    fn check(state: &State, params: &CreateParams) -> Result<BTreeMap<String, String>, Failure> {
        let payment = target(state, &params.target)?;
        if payment.status == PaymentStatus::RequiresCapture {
            // Nothing was taken: an authorization is released by a cancel.
            let message = format!(
                "PaymentIntent {} has not been captured, so there is nothing to refund. Cancel the PaymentIntent to \
                 release the authorization.",
                payment.id
            );
            return Err(Failure::invalid(Some("charge_not_refundable"), message, Some("payment_intent")));
        }
        if payment.status != PaymentStatus::Succeeded {
            let message = format!("PaymentIntent {} has no successful charge to refund.", payment.id);
            return Err(Failure::invalid(Some("charge_not_refundable"), message, Some("payment_intent")));
        }
        let remaining = payment.remaining();
        if remaining == 0 {
            let message = format!("Charge {} has already been refunded.", payment.charge_id);
            return Err(Failure::invalid(Some("charge_already_refunded"), message, None));
        }
        if let Some(amount) = params.amount.filter(|a| *a > remaining) {
            let message = format!(
                "Refund amount ({amount} {currency}) is greater than unrefunded amount on charge ({remaining} \
                 {currency})",
                currency = payment.currency
            );
            return Err(Failure::invalid(Some("amount_too_large"), message, Some("amount")));
        }
        Ok(fault_metadata(payment, &params.metadata))
    }

    fn execute(state: &State, params: CreateParams, context: Context<'_>) -> Executed {
        let mut payment = target(state, &params.target).expect("checked").clone();
        let amount = params.amount.unwrap_or(payment.remaining());
        let metadata = fault_metadata(&payment, &params.metadata);
        // A pending refund's amount counts as refunded at once, as at Stripe:
        // it cannot be refunded twice while the card network decides.
        let status =
            if context.faults.refund_pending(&metadata) { RefundStatus::Pending } else { RefundStatus::Succeeded };
        let refund = Refund {
            id: new_id("re"),
            amount,
            currency: payment.currency.clone(),
            payment_intent: Some(payment.id.clone()),
            charge: Some(payment.charge_id.clone()),
            status,
            created: context.now_secs(),
            metadata: params.metadata,
            failure_reason: None,
        };
        payment.amount_refunded += amount;
        payment.changed_ms = context.now_ms;
        Executed {
            status: StatusCode::OK,
            body: refund_json(&refund),
            events: vec![
                NewEvent { kind: gateway::webhook::REFUND_CREATED, object: refund_json(&refund), metadata },
                NewEvent {
                    kind: gateway::webhook::CHARGE_REFUNDED,
                    object: payment.charge_json(),
                    metadata: payment.metadata.clone(),
                },
            ],
            ops: vec![Op::Refund(RefundRecord { refund, seq: 0 }), Op::Payment(Box::new(payment))],
        }
    }
}

/// What faults of a refund match on: the payment's metadata overlaid with
/// the refund's, so a test can target one order's refunds.
pub fn fault_metadata(payment: &Payment, refund: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut metadata = payment.metadata.clone();
    metadata.extend(refund.clone());
    metadata
}

/// The payment to refund, as the last write left it: another refund of it
/// may still be on its way to disk, and its amount counts.
fn target<'a>(state: &'a State, target: &Target) -> Result<&'a Payment, Failure> {
    match target {
        Target::PaymentIntent(id) => {
            state.newest_payment(id).ok_or_else(|| Failure::no_such("payment_intent", id, "payment_intent"))
        }
        Target::Charge(id) => {
            state.newest_payment_by_charge(id).ok_or_else(|| Failure::no_such("charge", id, "charge"))
        }
    }
}

pub async fn retrieve(req: HttpRequest, id: Path<String>, app: Data<App>) -> HttpResponse {
    if let Err(failure) = read_request(&req, &app, "GET /v1/refunds/{id}") {
        return failure.respond(&new_id("req"));
    }
    let state = app.state();
    match state.refund(&id, app.durable()) {
        Some(record) => ok(&refund_json(&record.refund)),
        None => {
            Failure { status: StatusCode::NOT_FOUND, ..Failure::no_such("refund", &id, "id") }.respond(&new_id("req"))
        }
    }
}

/// `GET /v1/refunds?payment_intent=..&charge=..&created[gte]=..&limit=..&starting_after=..`:
/// newest first, read after write (unlike a search).
pub async fn list(req: HttpRequest, app: Data<App>) -> HttpResponse {
    list_route(&req, &app, "GET /v1/refunds", list_page)
}

fn list_page(state: &State, durable: u64, query: &[(String, String)]) -> Result<serde_json::Value, Failure> {
    let (page, filters) = Page::parse(query, &["payment_intent", "charge"])?;
    // A filter must name a payment or a charge that exists.
    let payment_intent = filters.get("payment_intent").copied();
    if let Some(id) = payment_intent.filter(|id| state.payment(id, durable).is_none()) {
        return Err(Failure::no_such("payment_intent", id, "payment_intent"));
    }
    let charge = filters.get("charge").copied();
    if let Some(id) = charge.filter(|id| state.payment_by_charge(id, durable).is_none()) {
        return Err(Failure::no_such("charge", id, "charge"));
    }
    page.check_cursor("refund", |id| state.refund(id, durable).is_some())?;
    let keep = |record: &RefundRecord| {
        payment_intent.is_none_or(|id| record.refund.payment_intent.as_deref() == Some(id))
            && charge.is_none_or(|id| record.refund.charge.as_deref() == Some(id))
    };
    Ok(page.answer("/v1/refunds", state.refunds_newest_first(durable), keep))
}
