//! `POST /v1/payment_intents/{id}/cancel`: a payment that was not charged is
//! canceled (an authorization waiting for its capture is released); one past
//! it (`succeeded`, or `canceled` already) is refused with Stripe's 400
//! `payment_intent_unexpected_state`, which names the payment. Either is the
//! result of a request that executed, so it is stored for the key like any
//! other (see `write`); faults treat the cancel as the charge.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use gateway::PaymentStatus;

use crate::expiry::{expire_if_due, Expired};
use crate::objects::{error_json, name_of, Payment};
use crate::routes::write::{Context, Executed, NewEvent, PathParams, Write};
use crate::routes::Failure;
use crate::state::{Op, State};

/// The reasons a caller may give.
const REASONS: [&str; 4] = ["duplicate", "fraudulent", "requested_by_customer", "abandoned"];

/// What Stripe cancels: everything not charged and not canceled.
const CANCELABLE: [PaymentStatus; 5] = [
    PaymentStatus::RequiresPaymentMethod,
    PaymentStatus::RequiresCapture,
    PaymentStatus::RequiresConfirmation,
    PaymentStatus::RequiresAction,
    PaymentStatus::Processing,
];

pub struct Cancel;

pub struct CancelParams {
    id: String,
    reason: Option<String>,
}

impl Write for Cancel {
    const PATH: &'static str = "/v1/payment_intents/{id}/cancel";
    const PERMISSION: &'static str = "rak_payment_intent_write";
    type Params = CancelParams;

    fn parse(form: &[(String, String)], path: &PathParams) -> Result<CancelParams, Failure> {
        let id = path.get("id").unwrap_or_default().to_owned();
        let mut reason = None;
        for (name, value) in form {
            match name.as_str() {
                "cancellation_reason" => {
                    if !REASONS.contains(&value.as_str()) {
                        let message = format!(
                            "Invalid cancellation_reason: must be one of {}; got `{value}`.",
                            REASONS.join(", ")
                        );
                        return Err(Failure::invalid(
                            Some("parameter_invalid_string"),
                            message,
                            Some("cancellation_reason"),
                        ));
                    }
                    reason = Some(value.clone());
                }
                n => {
                    let message = format!("Received unknown parameter: {n}");
                    return Err(Failure::invalid(Some("parameter_unknown"), message, Some(n)));
                }
            }
        }
        Ok(CancelParams { id, reason })
    }

    fn check(state: &State, params: &CancelParams) -> Result<BTreeMap<String, String>, Failure> {
        match state.newest_payment(&params.id) {
            Some(payment) => Ok(payment.metadata.clone()),
            None => Err(Failure {
                status: StatusCode::NOT_FOUND,
                ..Failure::no_such("payment_intent", &params.id, "intent")
            }),
        }
    }

    fn execute(state: &State, params: CancelParams, context: Context<'_>) -> Executed {
        // The newest version: a customer who authenticated a moment ago has
        // been charged, and the cancel must see it.
        let mut payment = state.newest_payment(&params.id).expect("checked").clone();
        let expired = expire_if_due(&mut payment, context.now_ms);
        if !CANCELABLE.contains(&payment.status) {
            let message = format!(
                "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one \
                 of the following statuses may be canceled: requires_payment_method, requires_capture, \
                 requires_confirmation, requires_action, processing.",
                name_of(&payment.status)
            );
            return unexpected_state(&payment, message, expired);
        }
        payment.cancel(params.reason, context.now_ms);
        let metadata = payment.metadata.clone();
        Executed {
            status: StatusCode::OK,
            body: payment.json(),
            events: vec![NewEvent { kind: gateway::webhook::PAYMENT_CANCELED, object: payment.json(), metadata }],
            ops: vec![Op::Payment(Box::new(payment))],
        }
    }
}

/// Stripe's refusal of a write that the payment's status does not allow: 400
/// `payment_intent_unexpected_state`, naming the payment as it now is. It
/// carries the expiry the write found due, if any (see `expiry`).
pub fn unexpected_state(payment: &Payment, message: String, expired: Expired) -> Executed {
    let mut body = error_json("invalid_request_error", Some("payment_intent_unexpected_state"), message, None);
    body["error"]["payment_intent"] = payment.json();
    let Expired { ops, events } = expired;
    Executed { status: StatusCode::BAD_REQUEST, body, ops, events }
}
