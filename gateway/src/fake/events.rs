//! Webhook events as they are made: one delivery per endpoint (two for a
//! `webhook_twice` fault), journaled in the batch of the change that caused
//! them, and shaped by the webhook faults that match the event.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::app::App;
use crate::state::{Delivery, Op, State};

/// A webhook event a change causes.
pub struct NewEvent {
    pub kind: &'static str,
    pub object: Value,
    /// What webhook faults match on.
    pub metadata: BTreeMap<String, String>,
}

/// The API request that caused an event; none for what happens later on the
/// provider's side (a refund that fails), as Stripe sends `request.id: null`.
#[derive(Clone, Copy, Default)]
pub struct Cause<'a> {
    pub request_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// The deliveries of one event to every endpoint, shaped by webhook faults.
pub fn deliveries(state: &mut State, app: &App, event: NewEvent, cause: Cause<'_>, now_ms: i64) -> Vec<Op> {
    if state.endpoints.is_empty() {
        return Vec::new();
    }
    let faults = app.faults().for_event(&event.metadata);
    let event_id = crate::objects::new_id("evt");
    let payload = json!({
        "id": event_id,
        "object": "event",
        "api_version": gateway::API_VERSION,
        "created": now_ms / 1000,
        "type": event.kind,
        "data": {"object": event.object},
        "livemode": false,
        "pending_webhooks": state.endpoints.len(),
        "request": {"id": cause.request_id, "idempotency_key": cause.idempotency_key},
    })
    .to_string();
    let due_ms = now_ms + faults.late.map_or(0, |d| d.as_millis() as i64);
    let held_until_ms = faults.out_of_order.then(|| due_ms + app.settings.webhook_hold_max_ms as i64);
    let copies = if faults.twice { 2 } else { 1 };
    let mut ops = Vec::new();
    for endpoint in state.endpoints.clone() {
        for _ in 0..copies {
            ops.push(Op::Delivery(Delivery {
                id: state.next_delivery_id(),
                event_id: event_id.clone(),
                event_type: event.kind.to_owned(),
                endpoint: endpoint.clone(),
                payload: payload.clone(),
                due_ms,
                held_until_ms,
                delivered_ms: None,
                attempts: 0,
                in_progress: false,
                seq: 0,
            }));
        }
    }
    ops
}
