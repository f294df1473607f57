//! Correlation: every request gets an id, echoed in `X-Request-Id` on its
//! response, carried by the request's log lines (the root span's
//! `request_id`) and stored on each event it writes (`ledger::request_id`),
//! from where the relay sends it to the workers, who log it on every line
//! about the message.
//!
//! A client's own `X-Request-Id` is kept when it is 1 to 64 of letters,
//! digits and `._-` (safe in a log line, a header and an AMQP property);
//! anything else, or none, gets a new UUID. Never an error: an id is
//! for following a request, not a reason to refuse one.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

pub const HEADER: &str = "X-Request-Id";

/// The pattern a client's id must match to be kept (also in the OpenAPI document).
pub const PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

/// This request's id, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether a client's id is kept as it is.
pub fn well_formed(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The id of a request: its own when well formed, else a new UUID.
pub fn of(req: &ServiceRequest) -> String {
    req.headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Gives the request its id, runs it inside the id's scope (so that events
/// it writes carry it) and echoes the id on the response, whatever it is.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = of(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    // (Handlers' errors arrive here as responses already; an `Err` is the
    // framework's own, before a response exists.)
    let mut res = ledger::request_id::scope(id.clone(), next.call(req)).await?;
    // well formed or a UUID: always a valid header value
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(res)
}

/// The root span of each request's log lines: method, route template and
/// this module's `request_id` (instead of the logger's own id, which
/// nothing outside the process would know).
pub struct RootSpan;

impl RootSpanBuilder for RootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        // at ERROR level, so that it is on every line whatever RUST_LOG lets through
        tracing::error_span!(
            "request",
            method = %request.method(),
            route = %request.match_pattern().unwrap_or_default(),
            request_id = %id,
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(res) => res.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
    }
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn ids_kept_and_replaced() {
        assert!(well_formed("a"));
        assert!(well_formed("req-2026.11_29"));
        assert!(well_formed(&"x".repeat(64)));
        assert!(!well_formed(""));
        assert!(!well_formed(&"x".repeat(65)));
        assert!(!well_formed("has space"));
        assert!(!well_formed("new\nline"));
        assert!(!well_formed("é"));
    }
}
