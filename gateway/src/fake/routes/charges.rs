//! `GET /v1/charges/{id}`: the charge a payment's confirmation made, as
//! Stripe shows it: for an authorization, `captured: false` and when it must
//! be captured by (`payment_method_details.card.capture_before`).

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};

use crate::app::App;
use crate::objects::new_id;
use crate::routes::{ok, read_request, Failure};

pub async fn retrieve(req: HttpRequest, id: Path<String>, app: Data<App>) -> HttpResponse {
    if let Err(failure) = read_request(&req, &app, "GET /v1/charges/{id}") {
        return failure.respond(&new_id("req"));
    }
    let state = app.state();
    // A payment waiting for 3-D Secure has not made its charge yet.
    match state.payment_by_charge(&id, app.durable()).filter(|payment| payment.has_charge) {
        Some(payment) => ok(&payment.charge_json()),
        None => {
            Failure { status: StatusCode::NOT_FOUND, ..Failure::no_such("charge", &id, "id") }.respond(&new_id("req"))
        }
    }
}
