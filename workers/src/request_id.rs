//! Following a request into the workers: the relay sends the id of the
//! request that wrote an event (the outbox row's `request_id`) as the
//! message's AMQP `correlation_id`, and a W3C `traceparent` header whose
//! trace id is derived from it, so that a tracing system joins the message
//! to the request; each consumer handles a message inside a span carrying
//! that id, so every log line about the message shows it.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The W3C trace context header (https://www.w3.org/TR/trace-context/).
pub const TRACEPARENT: &str = "traceparent";

/// The trace id of a request: the request id's own 128 bits when it is a
/// UUID (what the API makes up), else the first 128 bits of its SHA-256.
pub fn trace_id(request_id: &str) -> String {
    match Uuid::parse_str(request_id) {
        Ok(u) if !u.is_nil() => u.simple().to_string(),
        _ => hex::encode(&Sha256::digest(request_id.as_bytes())[..16]),
    }
}

/// `00-<trace id>-<parent id>-01`: the trace of `request_id` (or of the
/// message itself when no request wrote it), the message as its parent
/// span (the last 64 bits of its id, the random ones of a UUIDv7), sampled.
pub fn traceparent(request_id: Option<&str>, message_id: &str) -> String {
    let trace = trace_id(request_id.unwrap_or(message_id));
    let parent = match Uuid::parse_str(message_id) {
        Ok(u) if u.as_bytes()[8..] != [0; 8] => hex::encode(&u.as_bytes()[8..]),
        _ => hex::encode(&Sha256::digest(message_id.as_bytes())[..8]),
    };
    format!("00-{trace}-{parent}-01")
}

/// The properties that carry the request id and trace of an event's message.
pub fn stamp(props: BasicProperties, request_id: Option<&str>, message_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from(TRACEPARENT), AMQPValue::LongString(traceparent(request_id, message_id).into()));
    let props = props.with_headers(headers);
    match request_id {
        Some(id) => props.with_correlation_id(id.into()),
        None => props,
    }
}

/// The request id a delivery carries, if any.
pub fn of(delivery: &Delivery) -> Option<String> {
    delivery.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned())
}

/// The span a consumer handles a delivery in: every line logged while
/// handling it carries the message's id and its request's id.
pub fn span(consumer: &str, delivery: &Delivery) -> tracing::Span {
    let message_id = delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let request_id = of(delivery).unwrap_or_default();
    // at ERROR level, so that it is on every line whatever RUST_LOG lets through
    tracing::error_span!("message", consumer, message_id = %message_id, request_id = %request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_well_formed() {
        let rid = "0190f3a8-6d1c-7c8e-9b1a-2f3e4d5c6b7a";
        let mid = "0190f3a8-6d1c-7c8e-8b1a-112233445566";
        let tp = traceparent(Some(rid), mid);
        assert_eq!(tp, "00-0190f3a86d1c7c8e9b1a2f3e4d5c6b7a-8b1a112233445566-01");
        let other = traceparent(Some("checkout-7"), mid);
        let parts: Vec<&str> = other.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].len(), 32);
        assert!(parts[1].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(trace_id("checkout-7"), parts[1]);
        // no request: the message is its own trace
        assert_eq!(traceparent(None, mid), format!("00-{}-8b1a112233445566-01", trace_id(mid)));
    }
}
