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
