//! A client for a card payment provider speaking the shape of Stripe's API,
//! and (behind the default `fake-provider` feature) a fake provider binary
//! with Stripe's semantics for tests and local runs.
//!
//! The client never retries on its own: every call returns an outcome the
//! caller can act on safely. [`PaymentOutcome::Unknown`] means the provider may
//! or may not have charged; the caller keeps its record in flight and retries
//! with the same idempotency key (see [`provider_key`]).

mod client;
mod config;
mod keys;
#[cfg(feature = "launch")]
pub mod launch;
mod model;
mod outcome;
pub mod webhook;

pub use client::{CaptureMethod, Client, ListPayments, PaymentRequest, RefundRequest, API_VERSION};
pub use config::{
    Config, DEFAULT_TIMEOUT, DEFAULT_URL, ENV_SECRET_KEY, ENV_TIMEOUT_MS, ENV_URL, ENV_WEBHOOK_SECRET, MAX_KEY_LEN,
};
pub use keys::{cancel_key, capture_key, provider_key, refund_key, void_key};
pub use model::{ApiError, Charge, List, PaymentIntent, PaymentStatus, Refund, RefundStatus};
pub use outcome::{
    BuildError, CancelOutcome, CaptureOutcome, Decline, GatewayError, PaymentOutcome, RefundOutcome, Unknown,
    UnknownReason,
};
pub use webhook::{Event, EventObject, SignatureError};
