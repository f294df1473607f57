//! 3-D Secure, as the customer's browser goes through it at Stripe. A payment
//! confirmed with a card that wants authentication waits in `requires_action`
//! with a `next_action` that points at a page of this fake
//! (`/_fake/3ds/{id}`); `POST /_fake/payment_intents/{id}/authenticate` is
//! what the customer does there. Success charges the card (with manual
//! capture, authorizes it: `requires_capture`); failure leaves the payment
//! wanting another payment method. Each is one journal batch with its
//! webhook, on disk before the answer, like a write of the API.

use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use gateway::webhook::{PAYMENT_AMOUNT_CAPTURABLE_UPDATED, PAYMENT_FAILED, PAYMENT_SUCCEEDED};
use gateway::{ApiError, PaymentStatus};
use serde_json::{json, Value};

use crate::app::{now_ms, App};
use crate::events::{deliveries, Cause, NewEvent};
use crate::objects::{name_of, CaptureMethod};
use crate::routes::body_field;
use crate::state::Op;

/// Stripe's `last_payment_error` when the customer fails authentication. Its
/// type is `invalid_request_error`, not `card_error`: the card was never
/// asked, so it is no decline.
const FAILURE_KIND: &str = "invalid_request_error";
const FAILURE_CODE: &str = "payment_intent_authentication_failure";
const FAILURE_MESSAGE: &str = "The provided PaymentMethod has failed authentication. You can provide \
                               payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent \
                               again.";

/// Stripe's `next_action` for a card payment confirmed without a
/// `return_url`: Stripe.js takes the customer through the challenge.
pub fn next_action(url: &str, payment_id: &str) -> Value {
    json!({
        "type": "use_stripe_sdk",
        "use_stripe_sdk": {
            "type": "three_d_secure_redirect",
            "stripe_js": format!("{url}/_fake/3ds/{payment_id}"),
        },
    })
}

enum Result3ds {
    Succeed,
    Fail,
}

/// `{"result": "succeed"}` or `{"result": "fail"}` (JSON or form): the
/// customer passed or failed the challenge of a `requires_action` payment.
pub async fn authenticate(req: HttpRequest, id: Path<String>, body: Bytes, app: Data<App>) -> HttpResponse {
    let result = match body_field(&req, &body, "result") {
        Ok(result) => match result.as_deref() {
            Some("succeed") => Result3ds::Succeed,
            Some("fail") => Result3ds::Fail,
            _ => return bad_request("result must be `succeed` or `fail`".to_owned()),
        },
        Err(message) => return bad_request(message),
    };
    let now = now_ms();
    let (seq, answer) = {
        let mut state = app.state();
        // Built on the newest version, as an API write is (see `State`).
        let Some(payment) = state.newest_payment(&id) else {
            return HttpResponse::NotFound().json(json!({ "error": format!("no payment {id}") }));
        };
        if payment.status != PaymentStatus::RequiresAction {
            let status = name_of(&payment.status);
            return bad_request(format!("payment {id} is {status}; only one in requires_action can be authenticated"));
        }
        let mut payment = payment.clone();
        payment.next_action = None;
        payment.changed_ms = now;
        let kind = match result {
            Result3ds::Succeed if payment.capture_method == CaptureMethod::Manual => {
                payment.authorize(now, app.authorization_expiry_ms());
                PAYMENT_AMOUNT_CAPTURABLE_UPDATED
            }
            Result3ds::Succeed => {
                payment.status = PaymentStatus::Succeeded;
                payment.has_charge = true;
                PAYMENT_SUCCEEDED
            }
            Result3ds::Fail => {
                payment.status = PaymentStatus::RequiresPaymentMethod;
                payment.last_payment_error = Some(ApiError {
                    kind: FAILURE_KIND.into(),
                    code: Some(FAILURE_CODE.into()),
                    decline_code: None,
                    message: FAILURE_MESSAGE.into(),
                    param: None,
                    payment_intent: None,
                });
                PAYMENT_FAILED
            }
        };
        let object = payment.json();
        let event = NewEvent { kind, object: object.clone(), metadata: payment.metadata.clone() };
        let mut ops = vec![Op::Payment(Box::new(payment))];
        ops.extend(deliveries(&mut state, &app, event, Cause::default(), now));
        (state.commit(ops), object)
    };
    app.wait_durable(seq).await;
    app.wake.notify_one();
    HttpResponse::Ok().json(answer)
}

/// What `next_action.use_stripe_sdk.stripe_js` points at: the challenge, as
/// two buttons that post the result to the route above.
pub async fn page(id: Path<String>, app: Data<App>) -> HttpResponse {
    let state = app.state();
    let Some(payment) = state.payment(&id, app.durable()) else {
        return HttpResponse::NotFound().json(json!({ "error": format!("no payment {id}") }));
    };
    // The id and the currency are the payment's own (alphanumerics and `_`):
    // nothing from the request reaches the page.
    let (id, status) = (&payment.id, name_of(&payment.status));
    let body = format!(
        "<!doctype html>\n<title>3-D Secure (fake provider)</title>\n<p>Payment {id}: {amount} {currency} (minor \
         units), {status}.</p>\n<form method=\"post\" action=\"/_fake/payment_intents/{id}/authenticate\">\n<button \
         name=\"result\" value=\"succeed\">Complete authentication</button>\n<button name=\"result\" \
         value=\"fail\">Fail authentication</button>\n</form>\n",
        amount = payment.amount,
        currency = payment.currency,
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body)
}

fn bad_request(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}
