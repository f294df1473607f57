//! The HTTP surface: Stripe's routes under `/v1`; inspection, fault controls
//! and what happens on the card's and the customer's side (a refund that
//! fails, 3-D Secure) under `/_fake` (loopback peers only).

mod admin;
mod authentication;
mod cancel;
mod capture;
mod charges;
mod list;
mod payment_intents;
mod refund_fate;
mod refunds;
mod write;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::app::App;
use crate::objects::{error_json, new_id};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(latency))
            .route("/payment_intents", web::post().to(write::handle::<payment_intents::Create>))
            .route("/payment_intents", web::get().to(payment_intents::list))
            .route("/payment_intents/search", web::get().to(payment_intents::search))
            .route("/payment_intents/{id}", web::get().to(payment_intents::retrieve))
            .route("/payment_intents/{id}/cancel", web::post().to(write::handle::<cancel::Cancel>))
            .route("/payment_intents/{id}/capture", web::post().to(write::handle::<capture::Capture>))
            .route("/charges/{id}", web::get().to(charges::retrieve))
            .route("/refunds", web::post().to(write::handle::<refunds::Create>))
            .route("/refunds", web::get().to(refunds::list))
            .route("/refunds/{id}", web::get().to(refunds::retrieve)),
    )
    .service(
        web::scope("/_fake")
            .guard(guard::fn_guard(|ctx| ctx.head().peer_addr.is_some_and(|peer| peer.ip().is_loopback())))
            .configure(admin::configure),
    )
    .default_service(web::to(not_found));
}

/// Holds each answer for the configured latency once its request was
/// handled (`App::latency`): the provider's round trip, without a thread.
async fn latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let hold = req.app_data::<web::Data<App>>().map(|app| app.latency()).unwrap_or_default();
    let res = next.call(req).await?;
    if !hold.is_zero() {
        actix_web::rt::time::sleep(hold).await;
    }
    Ok(res)
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let message = format!("Unrecognized request URL ({} {}).", req.method(), req.path());
    respond(
        StatusCode::NOT_FOUND,
        &error_json("invalid_request_error", None, message, None).to_string(),
        &new_id("req"),
    )
}

/// A JSON answer with Stripe's `Request-Id`.
pub fn respond(status: StatusCode, body: &str, request_id: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(("Request-Id", request_id))
        .body(body.to_owned())
}

/// An error answer from a status and an error body.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub body: Value,
}

impl Failure {
    pub fn invalid(code: Option<&str>, message: impl Into<String>, param: Option<&str>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, body: error_json("invalid_request_error", code, message, param) }
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(Some("parameter_missing"), format!("Missing required param: {param}."), Some(param))
    }

    pub fn no_such(object: &str, id: &str, param: &str) -> Self {
        Self::invalid(Some("resource_missing"), format!("No such {object}: '{id}'"), Some(param))
    }

    /// A restricted key without the permission, as Stripe words it (no
    /// `code`).
    pub fn forbidden(key: &str, permission: &str, account: &str) -> Self {
        let message = format!(
            "The provided key '{}' does not have the required permissions for this endpoint on account \
             'acct_{account}'. Having the '{permission}' permission would allow this request to continue.",
            masked(key)
        );
        Self { status: StatusCode::FORBIDDEN, body: error_json("invalid_request_error", None, message, None) }
    }

    pub fn respond(&self, request_id: &str) -> HttpResponse {
        respond(self.status, &self.body.to_string(), request_id)
    }
}

/// What the key a request bears may do.
pub enum Access {
    Full,
    /// The restricted key, which may read but not write.
    ReadOnly(String),
}

/// The secret key, as Stripe takes it: `Authorization: Bearer <key>`.
pub fn authorize(req: &HttpRequest, app: &App) -> Result<Access, Failure> {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(Failure {
            status: StatusCode::UNAUTHORIZED,
            body: error_json(
                "invalid_request_error",
                None,
                "You did not provide an API key. Provide it in the Authorization header (Authorization: Bearer \
                 YOUR_SECRET_KEY).",
                None,
            ),
        });
    };
    match header.strip_prefix("Bearer ") {
        Some(key) if key == app.settings.secret_key => Ok(Access::Full),
        Some(key) if !app.settings.restricted_key.is_empty() && key == app.settings.restricted_key => {
            Ok(Access::ReadOnly(key.to_owned()))
        }
        presented => {
            let shown: String =
                presented.unwrap_or("").chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            Err(Failure {
                status: StatusCode::UNAUTHORIZED,
                body: error_json(
                    "invalid_request_error",
                    Some("api_key_invalid"),
                    format!("Invalid API Key provided: ****{shown}"),
                    None,
                ),
            })
        }
    }
}

/// A key as Stripe shows it in an error: its prefix (`rk_test_`), stars, and
/// its last 6 characters when it is long enough to keep the rest secret.
fn masked(key: &str) -> String {
    let prefix: String = key.split_inclusive('_').take(2).collect();
    let prefix = if prefix.ends_with('_') { prefix } else { String::new() };
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    let shown = if rest.len() > 12 { 6 } else { 0 };
    let hidden = "*".repeat(rest.len() - shown);
    format!("{prefix}{hidden}{}", rest[rest.len() - shown..].iter().collect::<String>())
}

/// `application/x-www-form-urlencoded` pairs, in order.
pub fn decode_form(bytes: &[u8]) -> Result<Vec<(String, String)>, Failure> {
    serde_urlencoded::from_bytes(bytes)
        .map_err(|e| Failure::invalid(None, format!("Invalid form-encoded request body: {e}"), None))
}

/// One field of an admin request's body, a JSON object (when the
/// content type says JSON) or a form; `None` when the body is empty or does
/// not have it.
pub fn body_field(req: &HttpRequest, body: &[u8], name: &str) -> Result<Option<String>, String> {
    let is_json = req.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    let value = if body.is_empty() {
        None
    } else if is_json {
        let Value::Object(mut object) = serde_json::from_slice(body).map_err(|e| format!("not a JSON body: {e}"))?
        else {
            return Err("not a JSON object".to_owned());
        };
        match object.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(value)) => Some(value),
            Some(other) => return Err(format!("{name} must be a string, not {other}")),
        }
    } else {
        let form = decode_form(body).map_err(|f| f.body["error"]["message"].to_string())?;
        form.into_iter().find(|(field, _)| field == name).map(|(_, value)| value)
    };
    match value {
        Some(value) if value.is_empty() => Err(format!("{name} is empty")),
        value => Ok(value),
    }
}

/// Guards every read route: counts it, checks the key, decodes the query.
pub fn read_request(req: &HttpRequest, app: &App, route: &str) -> Result<Vec<(String, String)>, Failure> {
    app.stats.request(route);
    // Reads are what a restricted key may do.
    authorize(req, app)?;
    decode_form(req.query_string().as_bytes())
}

/// One page of a list, from the state, the durable sequence and the query.
pub type ListPage = fn(&crate::state::State, u64, &[(String, String)]) -> Result<Value, Failure>;

/// A list route: the request read and counted as `route`, then one page
/// of the newest durable objects from `page`.
pub fn list_route(req: &HttpRequest, app: &App, route: &str, page: ListPage) -> HttpResponse {
    let query = match read_request(req, app, route) {
        Ok(query) => query,
        Err(failure) => return failure.respond(&new_id("req")),
    };
    match page(&app.state(), app.durable(), &query) {
        Ok(body) => ok(&body),
        Err(failure) => failure.respond(&new_id("req")),
    }
}

pub fn ok(body: &Value) -> HttpResponse {
    respond(StatusCode::OK, &body.to_string(), &new_id("req"))
}

#[cfg(test)]
mod tests {
    use super::masked;

    #[test]
    fn keys_are_masked_as_stripe_shows_them() {
        assert_eq!(masked("rk_test_51PJabcdefghijqs8Kgd"), "rk_test_**************qs8Kgd");
        assert_eq!(masked("rk_test_short"), "rk_test_*****");
        assert_eq!(masked("nounderscore"), "************");
        assert_eq!(masked(""), "");
    }
}
