//! `/_fake`: what tests and the fault campaign read and switch. No key:
//! reachable from loopback peers only.

use std::collections::BTreeMap;

use actix_web::web::{self, Data, Json, Query};
use actix_web::HttpResponse;
use serde::Deserialize;
use serde_json::json;

use super::{authentication, refund_fate};
use crate::app::{App, Stats};
use crate::faults::ArmRequest;
use crate::objects::Payment;
use crate::settings::RandomFaults;
use crate::state::{delivery_summary, Op};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/payments", web::get().to(payments))
        .route("/stats", web::get().to(stats))
        .route("/faults", web::get().to(faults))
        .route("/faults", web::post().to(arm))
        .route("/faults", web::delete().to(reset))
        .route("/faults/random", web::put().to(set_random))
        .route("/latency", web::get().to(latency))
        .route("/latency", web::put().to(set_latency))
        .route("/webhook-endpoints", web::get().to(endpoints))
        .route("/webhook-endpoints", web::put().to(set_endpoints))
        .route("/webhooks", web::get().to(webhooks))
        .route("/refunds/{id}/fail", web::post().to(refund_fate::fail))
        .route("/refunds/{id}/succeed", web::post().to(refund_fate::succeed))
        .route("/payment_intents/{id}/authenticate", web::post().to(authentication::authenticate))
        .route("/3ds/{id}", web::get().to(authentication::page));
}

#[derive(Deserialize)]
struct PaymentsQuery {
    /// Comma-separated metadata keys, e.g. `tenant_id,order_id,attempt`.
    group_by: Option<String>,
}

/// Every payment, or payments grouped by metadata keys with their count: a
/// test asserts at most one per (tenant, order, attempt).
async fn payments(query: Query<PaymentsQuery>, app: Data<App>) -> HttpResponse {
    let state = app.state();
    let durable = app.durable();
    let payments: Vec<&Payment> = state.visible_payments(durable).collect();
    let Some(group_by) = query.group_by.as_deref() else {
        let data: Vec<_> = payments.iter().map(|p| summary(p)).collect();
        return HttpResponse::Ok().json(json!({"total": payments.len(), "data": data}));
    };
    let keys: Vec<&str> = group_by.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
    let mut groups: BTreeMap<Vec<Option<&String>>, Vec<&Payment>> = BTreeMap::new();
    for payment in &payments {
        let group = keys.iter().map(|k| payment.metadata.get(*k)).collect();
        groups.entry(group).or_default().push(payment);
    }
    let max_per_group = groups.values().map(Vec::len).max().unwrap_or(0);
    let groups: Vec<_> = groups
        .into_iter()
        .map(|(values, members)| {
            let metadata: BTreeMap<_, _> = keys.iter().zip(values).map(|(k, v)| (*k, v)).collect();
            json!({
                "metadata": metadata,
                "count": members.len(),
                "payments": members.iter().map(|p| summary(p)).collect::<Vec<_>>(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"total": payments.len(), "max_per_group": max_per_group, "groups": groups}))
}

fn summary(payment: &Payment) -> serde_json::Value {
    json!({
        "id": payment.id,
        "status": payment.status,
        "amount": payment.amount,
        "amount_received": payment.received(),
        "amount_refunded": payment.amount_refunded,
        "capture_method": payment.capture_method,
        "cancellation_reason": payment.cancellation_reason,
        "currency": payment.currency,
        "created": payment.created,
        "metadata": payment.metadata,
    })
}

async fn stats(app: Data<App>) -> HttpResponse {
    let (payments, refunds, pending, delivered) = {
        let state = app.state();
        let durable = app.durable();
        let delivered = state.deliveries.values().filter(|d| d.delivered_ms.is_some()).count();
        (
            state.visible_payments(durable).count(),
            state.visible_refunds(durable).count(),
            state.pending_deliveries(),
            delivered,
        )
    };
    let s = &app.stats;
    HttpResponse::Ok().json(json!({
        "requests": {"total": Stats::get(&s.requests), "by_route": s.by_route()},
        "replays": Stats::get(&s.replays),
        "in_flight_conflicts": Stats::get(&s.in_flight_conflicts),
        "idempotency_mismatches": Stats::get(&s.idempotency_mismatches),
        "faults_applied": app.faults().applied(),
        "payments": payments,
        "refunds": refunds,
        "webhooks": {
            "pending": pending,
            "delivered": delivered,
            "attempts": Stats::get(&s.webhook_attempts),
            "failed_attempts": Stats::get(&s.webhook_failures),
        },
    }))
}

async fn faults(app: Data<App>) -> HttpResponse {
    let faults = app.faults();
    HttpResponse::Ok().json(json!({"armed": faults.armed(), "random": faults.random(), "applied": faults.applied()}))
}

async fn arm(request: Json<ArmRequest>, app: Data<App>) -> HttpResponse {
    if request.count == 0 {
        return HttpResponse::BadRequest().json(json!({"error": "count must be at least 1"}));
    }
    let id = app.faults().arm(request.into_inner());
    HttpResponse::Created().json(json!({ "id": id }))
}

/// Disarms every fault and sets every random rate to zero.
async fn reset(app: Data<App>) -> HttpResponse {
    let disarmed = app.faults().reset();
    HttpResponse::Ok().json(json!({ "disarmed": disarmed }))
}

async fn set_random(random: Json<RandomFaults>, app: Data<App>) -> HttpResponse {
    if let Err(e) = random.validate() {
        return HttpResponse::BadRequest().json(json!({ "error": e.to_string() }));
    }
    app.faults().set_random(random.into_inner());
    HttpResponse::NoContent().finish()
}

#[derive(Deserialize)]
struct Endpoints {
    urls: Vec<String>,
}

async fn endpoints(app: Data<App>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"urls": app.state().endpoints}))
}

/// Replaces the webhook endpoints (kept across restarts). Events already made
/// keep the endpoints they were made for.
async fn set_endpoints(body: Json<Endpoints>, app: Data<App>) -> HttpResponse {
    if let Some(bad) = body.urls.iter().find(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return HttpResponse::BadRequest().json(json!({"error": format!("`{bad}` is not an http(s) URL")}));
    }
    let seq = app.state().commit(vec![Op::Endpoints { urls: body.into_inner().urls }]);
    app.wait_durable(seq).await;
    HttpResponse::NoContent().finish()
}

async fn webhooks(app: Data<App>) -> HttpResponse {
    let state = app.state();
    let data: Vec<_> = state.deliveries.values().map(delivery_summary).collect();
    HttpResponse::Ok().json(json!({ "data": data }))
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    ms: u64,
}

/// What every answer under `/v1` is held, in milliseconds.
async fn latency(app: Data<App>) -> HttpResponse {
    HttpResponse::Ok().json(Latency { ms: app.latency().as_millis() as u64 })
}

async fn set_latency(latency: Json<Latency>, app: Data<App>) -> HttpResponse {
    app.set_latency(latency.ms);
    HttpResponse::NoContent().finish()
}
