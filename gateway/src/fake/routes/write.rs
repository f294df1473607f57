//! The path every write (payment, refund, cancellation, capture) takes, with Stripe's idempotency:
//! the first result for a key is stored once the endpoint starts executing,
//! 500s included, and replayed with `Idempotent-Replayed: true`; the same key
//! with other parameters is a 400 `idempotency_error`; the same key while the
//! first request runs is a 409; a request that fails validation stores
//! nothing. The result, the objects and the webhooks it causes are one
//! journal batch, on disk before anyone is answered.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use crate::app::{now_ms, App, Stats};
pub use crate::events::NewEvent;
use crate::events::{deliveries, Cause};
use crate::faults::{Faults, RequestFault};
use crate::objects::{error_json, new_id};
use crate::routes::{authorize, decode_form, respond, Access, Failure};
use crate::state::{IdempotencyRecord, KeyCheck, Op, State};

/// A request's path parameters (`{id}`).
pub type PathParams = actix_web::dev::Path<actix_web::dev::Url>;

/// Stripe's limit on an `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// One write endpoint.
pub trait Write {
    /// The route, `{name}` for path parameters: what stats count requests by.
    const PATH: &'static str;
    /// What a restricted key would need to make this write, named in its 403.
    const PERMISSION: &'static str;
    type Params;
    /// Checks the parameters alone: the form and the path's (`{id}`).
    fn parse(form: &[(String, String)], path: &PathParams) -> Result<Self::Params, Failure>;
    /// Checks them against the newest state; returns the metadata faults
    /// match on.
    fn check(state: &State, params: &Self::Params) -> Result<BTreeMap<String, String>, Failure>;
    /// The answer and the changes, for parameters that passed `check`.
    fn execute(state: &State, params: Self::Params, context: Context<'_>) -> Executed;
}

/// What an executing write may use besides the state and its parameters.
pub struct Context<'a> {
    pub now_ms: i64,
    /// This process's base URL, for links in an answer.
    pub url: &'a str,
    /// How long an authorization made now is held (`--authorization-expiry-secs`).
    pub authorization_expiry_ms: i64,
    /// For faults that shape the result itself (a refund left pending), not
    /// the answer's delivery.
    pub faults: &'a mut Faults,
}

impl Context<'_> {
    pub fn now_secs(&self) -> i64 {
        self.now_ms / 1000
    }
}

pub struct Executed {
    pub status: StatusCode,
    pub body: Value,
    pub ops: Vec<Op>,
    pub events: Vec<NewEvent>,
}

pub async fn handle<W: Write>(req: HttpRequest, body: Bytes, app: Data<App>) -> HttpResponse {
    app.stats.request(&format!("POST {}", W::PATH));
    let request_id = new_id("req");
    let fail = |failure: Failure| failure.respond(&request_id);
    match authorize(&req, &app) {
        Ok(Access::Full) => {}
        // Refused before anything is looked at: nothing is stored for the key.
        Ok(Access::ReadOnly(key)) => return fail(Failure::forbidden(&key, W::PERMISSION, &app.scope)),
        Err(failure) => return fail(failure),
    }
    let form = match decode_form(&body) {
        Ok(form) => form,
        Err(failure) => return fail(failure),
    };
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Some(key.to_owned()),
        Some(_) => {
            let message = format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters.");
            return fail(Failure::invalid(None, message, None));
        }
    };
    // The path as requested, ids included: the same key on another
    // payment's cancel is another request.
    let fingerprint = fingerprint(req.path(), &form);
    let now = now_ms();

    let (seq, fault, status, answer) = {
        let mut state = app.state();
        let durable = app.durable();
        if let Some(key) = &key {
            match state.check_key(&app.scope, key, &fingerprint, now, app.idempotency_ttl_ms(), durable) {
                KeyCheck::Fresh => {}
                KeyCheck::Replay(record) => {
                    Stats::add(&app.stats.replays);
                    return replay(record, &request_id);
                }
                KeyCheck::InFlight => {
                    Stats::add(&app.stats.in_flight_conflicts);
                    return in_flight(key, &request_id);
                }
                KeyCheck::Mismatch => {
                    Stats::add(&app.stats.idempotency_mismatches);
                    return mismatch(key, &request_id);
                }
            }
        }
        let params = match W::parse(&form, req.match_info()) {
            Ok(params) => params,
            Err(failure) => return fail(failure),
        };
        let metadata = match W::check(&state, &params) {
            Ok(metadata) => metadata,
            Err(failure) => return fail(failure),
        };
        let fault = app.faults().for_request(&metadata);
        let (status, body, mut ops) = if fault == Some(RequestFault::ErrorBeforeCharge) {
            let body = error_json(
                "api_error",
                None,
                "An unknown error occurred while processing your request (fake provider: error_before_charge).",
                None,
            );
            (StatusCode::INTERNAL_SERVER_ERROR, body, Vec::new())
        } else {
            // The faults' lock is let go before the events take it again:
            // its guard is a temporary of this one statement.
            let executed = W::execute(
                &state,
                params,
                Context {
                    now_ms: now,
                    url: &app.url,
                    authorization_expiry_ms: app.authorization_expiry_ms(),
                    faults: &mut app.faults(),
                },
            );
            let mut ops = executed.ops;
            let cause = Cause { request_id: Some(&request_id), idempotency_key: key.as_deref() };
            for event in executed.events {
                ops.extend(deliveries(&mut state, &app, event, cause, now));
            }
            (executed.status, executed.body, ops)
        };
        let answer = body.to_string();
        if let Some(key) = &key {
            ops.push(Op::Idempotency(IdempotencyRecord {
                scope: app.scope.clone(),
                key: key.clone(),
                fingerprint,
                created_ms: now,
                request_id: request_id.clone(),
                status: status.as_u16(),
                body: answer.clone(),
            }));
        }
        let seq = state.commit(ops);
        if let (Some(RequestFault::Slow(delay)), Some(key)) = (fault, &key) {
            state.hold_key(&app.scope, key, Instant::now() + delay);
        }
        (seq, fault, status, answer)
    };

    app.wait_durable(seq).await;
    app.wake.notify_one();
    match fault {
        Some(RequestFault::Drop) => {
            if net_abort(&req) {
                return HttpResponse::InternalServerError().finish();
            }
        }
        Some(RequestFault::Cut) => return crate::net::cut(status, answer),
        Some(RequestFault::Hang(delay)) => {
            actix_web::rt::time::sleep(delay).await;
            if net_abort(&req) {
                return HttpResponse::InternalServerError().finish();
            }
        }
        Some(RequestFault::Slow(delay)) => actix_web::rt::time::sleep(delay).await,
        Some(RequestFault::ErrorBeforeCharge) | None => {}
    }
    let mut response = HttpResponse::build(status);
    response.content_type("application/json").insert_header(("Request-Id", request_id));
    if let Some(key) = key {
        response.insert_header(("Idempotency-Key", key));
    }
    response.body(answer)
}

fn net_abort(req: &HttpRequest) -> bool {
    let aborted = crate::net::abort(req);
    if !aborted {
        tracing::warn!("cannot close the connection for a drop fault; answering instead");
    }
    aborted
}

/// Method, path and parameters, order-insensitive, as one digest.
fn fingerprint(path: &str, form: &[(String, String)]) -> String {
    let mut pairs = form.to_vec();
    pairs.sort();
    let canonical = serde_json::to_vec(&("POST", path, pairs)).expect("pairs serialize");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &canonical))
}

fn replay(record: &IdempotencyRecord, request_id: &str) -> HttpResponse {
    let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .insert_header(("Request-Id", request_id))
        .insert_header(("Idempotency-Key", record.key.as_str()))
        .insert_header(("Idempotent-Replayed", "true"))
        .insert_header(("Original-Request", record.request_id.as_str()))
        .body(record.body.clone())
}

fn in_flight(key: &str, request_id: &str) -> HttpResponse {
    let message = format!(
        "There is currently another in-progress request using this Idempotent Key (that probably means you \
         submitted twice, and the other request is still going through): {key}. Please try again later."
    );
    let body = error_json("invalid_request_error", Some("idempotency_key_in_use"), message, None);
    respond(StatusCode::CONFLICT, &body.to_string(), request_id)
}

fn mismatch(key: &str, request_id: &str) -> HttpResponse {
    let message = format!(
        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try \
         using a key other than '{key}' if you meant to execute a different request."
    );
    let body = error_json("idempotency_error", None, message, None);
    respond(StatusCode::BAD_REQUEST, &body.to_string(), request_id)
}
