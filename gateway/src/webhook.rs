//! Webhook signatures in Stripe's `Stripe-Signature` scheme, and the event
//! they carry.
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` where each `v1` is
//! HMAC-SHA256 of `"<t>.<payload>"` under the endpoint's secret (the whole
//! `whsec_...` string). Several `v1` values appear while a secret is rolled;
//! one match is enough. The timestamp must be within a tolerance of now, so a
//! captured delivery cannot be replayed later.

use std::time::Duration;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::model::{Charge, PaymentIntent, Refund};

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";
/// Stripe's libraries' default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

pub const PAYMENT_SUCCEEDED: &str = "payment_intent.succeeded";
/// A confirmation was declined, or the customer failed 3-D Secure
/// (`last_payment_error.code` `payment_intent_authentication_failure`): the
/// payment is back in `requires_payment_method`, nothing charged.
pub const PAYMENT_FAILED: &str = "payment_intent.payment_failed";
/// The payment waits for the customer to authenticate (3-D Secure); nothing
/// is charged yet.
pub const PAYMENT_REQUIRES_ACTION: &str = "payment_intent.requires_action";
/// The payment was canceled (`cancellation_reason` says why, `automatic`
/// for an authorization that expired uncaptured); nothing was charged and
/// nothing will be.
pub const PAYMENT_CANCELED: &str = "payment_intent.canceled";
/// A payment made with manual capture was authorized: it waits in
/// `requires_capture` with `amount_capturable` held on the card until it is
/// captured, canceled or the authorization expires.
pub const PAYMENT_AMOUNT_CAPTURABLE_UPDATED: &str = "payment_intent.amount_capturable_updated";
pub const CHARGE_REFUNDED: &str = "charge.refunded";
/// A refund was made; the object is the Refund (its status may be `pending`).
pub const REFUND_CREATED: &str = "refund.created";
/// A refund changed, for example from `pending` to `succeeded`.
pub const REFUND_UPDATED: &str = "refund.updated";
/// A refund failed after it was accepted (a closed card): its amount is back
/// on the payment and `failure_reason` says why.
pub const REFUND_FAILED: &str = "refund.failed";
/// Any change of a refund, announced on the charge; the object is the Refund.
pub const CHARGE_REFUND_UPDATED: &str = "charge.refund.updated";

/// A provider event, as Stripe shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; a duplicate delivery carries the same id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds. Events arrive out of order; this orders them.
    pub created: i64,
    pub data: EventData,
    #[serde(default)]
    pub livemode: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The object as it was when the event happened.
    pub object: serde_json::Value,
}

/// The object of an event, by its `object` field.
#[derive(Debug, Clone, PartialEq)]
pub enum EventObject {
    PaymentIntent(PaymentIntent),
    Charge(Charge),
    Refund(Refund),
    Other(serde_json::Value),
}

impl Event {
    pub fn object(&self) -> Result<EventObject, serde_json::Error> {
        let object = &self.data.object;
        Ok(match object.get("object").and_then(|o| o.as_str()) {
            Some("payment_intent") => EventObject::PaymentIntent(serde_json::from_value(object.clone())?),
            Some("charge") => EventObject::Charge(serde_json::from_value(object.clone())?),
            Some("refund") => EventObject::Refund(serde_json::from_value(object.clone())?),
            _ => EventObject::Other(object.clone()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature in the Stripe-Signature header")]
    NoSignature,
    #[error("no signature matches the payload")]
    Mismatch,
    #[error("signature timestamp {timestamp} is outside the tolerance of {tolerance_secs} s around {now}")]
    Stale { timestamp: i64, now: i64, tolerance_secs: u64 },
    #[error("signed payload is not an event: {0}")]
    Payload(#[from] serde_json::Error),
}

/// The `Stripe-Signature` header value for `payload` signed at `timestamp`.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mac = hmac::sign(&key(secret), &signed_payload(payload, timestamp));
    format!("t={timestamp},v1={}", hex::encode(mac.as_ref()))
}

/// Checks the signature and the timestamp (against `now`, unix seconds), then
/// parses the event. Nothing in the payload is trusted before this returns.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secret: &str,
    tolerance: Duration,
    now: i64,
) -> Result<Event, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match name {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            // A value that is not hex cannot match; others may.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {} // v0 and future schemes
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let key = key(secret);
    let message = signed_payload(payload, timestamp);
    // ring compares in constant time.
    if !signatures.iter().any(|sig| hmac::verify(&key, &message, sig).is_ok()) {
        return Err(SignatureError::Mismatch);
    }
    let tolerance_secs = tolerance.as_secs();
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale { timestamp, now, tolerance_secs });
    }
    Ok(serde_json::from_slice(payload)?)
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn signed_payload(payload: &[u8], timestamp: i64) -> Vec<u8> {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(payload);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;

    fn payload() -> Vec<u8> {
        serde_json::json!({
            "id": "evt_1", "object": "event", "type": PAYMENT_SUCCEEDED, "created": NOW,
            "data": {"object": {"id": "pi_1", "object": "payment_intent", "amount": 500, "currency": "eur",
                                 "status": "succeeded", "created": NOW, "metadata": {"order_id": "o-1"}}}
        })
        .to_string()
        .into_bytes()
    }

    fn check(payload: &[u8], header: Option<&str>) -> Result<Event, SignatureError> {
        verify(payload, header, SECRET, DEFAULT_TOLERANCE, NOW)
    }

    #[test]
    fn a_good_signature_verifies_and_parses() {
        let body = payload();
        let event = check(&body, Some(&sign(&body, SECRET, NOW - 10))).unwrap();
        assert_eq!((event.id.as_str(), event.kind.as_str()), ("evt_1", PAYMENT_SUCCEEDED));
        match event.object().unwrap() {
            EventObject::PaymentIntent(pi) => assert_eq!((pi.id.as_str(), pi.amount), ("pi_1", 500)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matches_a_signature_computed_independently() {
        // HMAC-SHA256("k", "1.x"), from `printf '1.x' | openssl dgst -sha256 -hmac k`.
        assert_eq!(sign(b"x", "k", 1), "t=1,v1=976cb87e4f568d1c0f03f32859e90af8597cf00b978ba37c229c97d3a15b8449");
    }

    #[test]
    fn one_matching_signature_among_several_is_enough() {
        let body = payload();
        let good = sign(&body, SECRET, NOW);
        let old = sign(&body, "whsec_previous", NOW);
        let v1_good = good.split_once(",v1=").unwrap().1;
        let v1_old = old.split_once(",v1=").unwrap().1;
        let header = format!("t={NOW},v1={v1_old},v1={v1_good},v0=deadbeef");
        assert!(check(&body, Some(&header)).is_ok());
    }

    #[test]
    fn bad_signatures_fail() {
        let body = payload();
        let header = sign(&body, SECRET, NOW);
        // Another secret.
        assert!(matches!(check(&body, Some(&sign(&body, "whsec_other", NOW))), Err(SignatureError::Mismatch)));
        // A payload changed after signing.
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(matches!(check(&tampered, Some(&header)), Err(SignatureError::Mismatch)));
        // The timestamp changed after signing.
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert!(matches!(check(&body, Some(&moved)), Err(SignatureError::Mismatch)));
    }

    #[test]
    fn stale_and_future_timestamps_fail() {
        let body = payload();
        let stale = sign(&body, SECRET, NOW - 301);
        assert!(matches!(check(&body, Some(&stale)), Err(SignatureError::Stale { .. })));
        let future = sign(&body, SECRET, NOW + 301);
        assert!(matches!(check(&body, Some(&future)), Err(SignatureError::Stale { .. })));
        let edge = sign(&body, SECRET, NOW - 300);
        assert!(check(&body, Some(&edge)).is_ok());
    }

    #[test]
    fn missing_and_malformed_headers_fail() {
        let body = payload();
        assert!(matches!(check(&body, None), Err(SignatureError::MissingHeader)));
        for header in ["", "garbage", "v1=abcd", "t=notanumber,v1=abcd", "t=1,v1"] {
            assert!(matches!(check(&body, Some(header)), Err(SignatureError::Malformed)), "{header}");
        }
        assert!(matches!(check(&body, Some(&format!("t={NOW}"))), Err(SignatureError::NoSignature)));
        assert!(matches!(check(&body, Some(&format!("t={NOW},v0=abcd"))), Err(SignatureError::NoSignature)));
        assert!(matches!(check(&body, Some(&format!("t={NOW},v1=zz"))), Err(SignatureError::NoSignature)));
    }

    #[test]
    fn a_signed_payload_that_is_not_an_event_fails() {
        let body = b"{\"not\":\"an event\"}";
        assert!(matches!(check(body, Some(&sign(body, SECRET, NOW))), Err(SignatureError::Payload(_))));
    }
}
