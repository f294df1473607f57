//! The API's Prometheus metrics, served at `GET /metrics` on a listener of
//! its own, `METRICS_ADDR` (off by default), never on the API's port: the
//! counts are per route and per decline code across every tenant, which no
//! tenant should read, so only what can reach that address (Prometheus on
//! a private network) does. Names start with `ledger_`:
//!
//! - `ledger_http_requests_total{route,method,status}` and
//!   `ledger_http_request_duration_seconds{route,method}`: every request,
//!   by route template (`/v1/charges/{id}`, not the path; `unmatched` for
//!   a path the API does not serve, so that nobody can grow the series);
//! - `ledger_idempotent_replays_total{route}`: stored answers replayed for
//!   a retried Idempotency-Key; `ledger_natural_key_replays_total{route}`:
//!   resources returned as they were under their natural key;
//! - `ledger_declines_total{code}`: business declines when they happen
//!   (not their replays); `ledger_http_problems_total{code,status}`: every
//!   problem document the API made up, by its code;
//! - `ledger_provider_rejections_total{effect}`: requests the payment
//!   provider refused as misconfigured (counted in `service::effects`);
//! - `ledger_charge_batch_size`, `ledger_charge_batch_phase_seconds{phase}`
//!   and `ledger_charge_batches_failed_total`: group commit of new charges
//!   (`idempotency::charge_batch`);
//! - `ledger_db_pool_*{pool="api"}` gauges (sampled at each scrape) and
//!   `ledger_db_pool_timeouts_total` (callers that gave up waiting).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{get, web, Error, HttpResponse};

use crate::error::ProblemCode;
use crate::idempotency::{NATURAL_KEY_REPLAYED, REPLAYED};
use crate::state::AppState;

/// The methods the API serves under their own name; any other is `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics::histogram!("ledger_http_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    if let Ok(r) = &res {
        let flag = |name: &str| r.headers().get(name).is_some_and(|v| v.as_bytes() == b"true");
        if flag(REPLAYED) {
            metrics::counter!("ledger_idempotent_replays_total", "route" => route.clone()).increment(1);
        }
        if flag(NATURAL_KEY_REPLAYED) {
            metrics::counter!("ledger_natural_key_replays_total", "route" => route.clone()).increment(1);
        }
        if let Some(code) = r.response().extensions().get::<ProblemCode>() {
            metrics::counter!(
                "ledger_http_problems_total",
                "code" => code.name(),
                "status" => status.as_str().to_owned()
            )
            .increment(1);
        }
    }
    metrics::counter!(
        "ledger_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    res
}

/// The process's metrics in Prometheus's text format (on `METRICS_ADDR`).
#[get("/metrics")]
pub async fn scrape(state: web::Data<AppState>) -> HttpResponse {
    service::telemetry::record_pool("api", &state.pool);
    HttpResponse::Ok().content_type(service::telemetry::CONTENT_TYPE).body(service::telemetry::render())
}
