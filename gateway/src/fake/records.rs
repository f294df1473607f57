//! What the journal holds: one record per change, the objects written whole.

use serde::{Deserialize, Serialize};

use crate::objects::{Payment, RefundRecord};

/// One change, as journaled. Objects are written whole ("put"); a payment
/// boxed, being several times the size of the other records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Payment(Box<Payment>),
    Refund(RefundRecord),
    Idempotency(IdempotencyRecord),
    Delivery(Delivery),
    Delivered { id: u64, at_ms: i64 },
    Endpoints { urls: Vec<String> },
}

/// The first result of a request made with an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The account the key belongs to (a hash of the secret key).
    pub scope: String,
    pub key: String,
    /// Method, path and parameters of the first request.
    pub fingerprint: String,
    pub created_ms: i64,
    pub request_id: String,
    pub status: u16,
    /// The exact bytes answered, replayed as they are.
    pub body: String,
}

/// One webhook event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub event_id: String,
    pub event_type: String,
    pub endpoint: String,
    /// The event's JSON, the payload signed and sent on every attempt.
    pub payload: String,
    /// Not before this (unix ms).
    pub due_ms: i64,
    /// Out of order: held until a later delivery to the same endpoint has
    /// gone through, or until this (unix ms).
    pub held_until_ms: Option<i64>,
    pub delivered_ms: Option<i64>,
    #[serde(skip)]
    pub attempts: u32,
    #[serde(skip)]
    pub in_progress: bool,
    #[serde(skip)]
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn a_payment_journaled_before_3ds_and_cancels_reads_as_it_was() {
        let line = json!({"op": "payment", "id": "pi_1", "charge_id": "ch_abc", "amount": 100, "currency": "eur",
            "status": "succeeded", "created": 1, "metadata": {}, "payment_method": "pm_card_visa",
            "amount_refunded": 0, "last_payment_error": null, "changed_ms": 1000});
        let Op::Payment(payment) = serde_json::from_value(line).unwrap() else { panic!("a payment") };
        let intent = payment.intent();
        assert_eq!(intent.latest_charge.as_deref(), Some("ch_abc"), "charged, as every payment then was");
        assert_eq!(intent.client_secret.as_deref(), Some("pi_1_secret_abc"), "the secret it was shown with");
        assert_eq!((intent.next_action, intent.cancellation_reason), (None, None));
        assert_eq!(payment.json()["canceled_at"], Value::Null);
        // Captured at once, as every payment then was.
        assert_eq!((intent.amount_received, intent.amount_capturable), (100, 0));
        assert_eq!(payment.json()["capture_method"], "automatic");
        let charge = payment.charge_json();
        assert_eq!((&charge["captured"], &charge["amount_captured"]), (&Value::Bool(true), &Value::from(100)));
    }
}
