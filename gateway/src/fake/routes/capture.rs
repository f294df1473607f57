//! `POST /v1/payment_intents/{id}/capture`: an authorization (a payment made
//! with `capture_method=manual`, in `requires_capture`) is captured, all of it
//! or `amount_to_capture` of it, the rest released, and the payment
//! `succeeded`. A payment in any other status (captured already, canceled,
//! expired, waiting for 3-D Secure) is refused with Stripe's 400
//! `payment_intent_unexpected_state`, which names the payment. Either is the
//! result of a request that executed, so it is stored for the key like any
//! other (see `write`); faults treat the capture as the charge. More than is
//! capturable is a bad request, refused before anything executes, as a
//! refund above what is left is.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use gateway::PaymentStatus;

use crate::expiry::expire_if_due;
use crate::objects::name_of;
use crate::routes::cancel::unexpected_state;
use crate::routes::write::{Context, Executed, NewEvent, PathParams, Write};
use crate::routes::Failure;
use crate::state::{Op, State};

pub struct Capture;

pub struct CaptureParams {
    id: String,
    /// `None`: all of `amount_capturable`.
    amount: Option<i64>,
}

impl Write for Capture {
    const PATH: &'static str = "/v1/payment_intents/{id}/capture";
    const PERMISSION: &'static str = "rak_payment_intent_write";
    type Params = CaptureParams;

    fn parse(form: &[(String, String)], path: &PathParams) -> Result<CaptureParams, Failure> {
        let id = path.get("id").unwrap_or_default().to_owned();
        let mut amount = None;
        for (name, value) in form {
            match name.as_str() {
                "amount_to_capture" => {
                    let parsed = value.parse::<i64>().ok().filter(|a| *a >= 1).ok_or_else(|| {
                        Failure::invalid(
                            Some("parameter_invalid_integer"),
                            "Invalid integer: amount_to_capture must be a positive whole number of minor units.",
                            Some("amount_to_capture"),
                        )
                    })?;
                    amount = Some(parsed);
                }
                n => {
                    let message = format!("Received unknown parameter: {n}");
                    return Err(Failure::invalid(Some("parameter_unknown"), message, Some(n)));
                }
            }
        }
        Ok(CaptureParams { id, amount })
    }

    fn check(state: &State, params: &CaptureParams) -> Result<BTreeMap<String, String>, Failure> {
        let Some(payment) = state.newest_payment(&params.id) else {
            return Err(Failure {
                status: StatusCode::NOT_FOUND,
                ..Failure::no_such("payment_intent", &params.id, "intent")
            });
        };
        // Only an authorization has an amount to capture; any other status
        // is refused for the status itself (in `execute`).
        let capturable = payment.intent().amount_capturable;
        if let Some(amount) =
            params.amount.filter(|a| payment.status == PaymentStatus::RequiresCapture && *a > capturable)
        {
            let message = format!(
                "The payment could not be captured because the requested capture amount ({amount} {currency}) is \
                 greater than the authorized amount ({capturable} {currency}).",
                currency = payment.currency
            );
            return Err(Failure::invalid(Some("amount_too_large"), message, Some("amount_to_capture")));
        }
        Ok(payment.metadata.clone())
    }

    fn execute(state: &State, params: CaptureParams, context: Context<'_>) -> Executed {
        // The newest version: a cancel a moment ago must be seen.
        let mut payment = state.newest_payment(&params.id).expect("checked").clone();
        let expired = expire_if_due(&mut payment, context.now_ms);
        match payment.status {
            PaymentStatus::RequiresCapture => {}
            PaymentStatus::Succeeded => {
                let message = "This PaymentIntent could not be captured because it has already been captured.";
                return unexpected_state(&payment, message.to_owned(), expired);
            }
            status => {
                let message = format!(
                    "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent \
                     with one of the following statuses may be captured: requires_capture.",
                    name_of(&status)
                );
                return unexpected_state(&payment, message, expired);
            }
        }
        payment.status = PaymentStatus::Succeeded;
        // The whole amount is recorded as `None`, as an automatic payment's.
        payment.amount_captured = params.amount.filter(|amount| *amount < payment.amount);
        payment.changed_ms = context.now_ms;
        let metadata = payment.metadata.clone();
        Executed {
            status: StatusCode::OK,
            body: payment.json(),
            events: vec![NewEvent { kind: gateway::webhook::PAYMENT_SUCCEEDED, object: payment.json(), metadata }],
            ops: vec![Op::Payment(Box::new(payment))],
        }
    }
}
