//! What a call to the provider ended in, split by what the caller may do next.
//!
//! - [`PaymentOutcome::Succeeded`] / [`PaymentOutcome::Declined`]: definitive;
//!   record them. Only after a decline may the caller move to a new attempt
//!   (and so a new key).
//! - [`Unknown`]: the provider may or may not have acted. Keep the record in
//!   flight and resend with the *same* key, or look the payment up.
//! - [`GatewayError`]: our bug or our configuration. Resending the same
//!   request will not help; nothing should be recorded as paid or declined.

use std::fmt;

use crate::model::{PaymentIntent, Refund};

/// The answer to a payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The money was taken (status `succeeded`).
    Succeeded(PaymentIntent),
    /// The card was declined (402 `card_error`); no money moved.
    Declined(Decline),
    /// The provider accepted the payment but it has not settled. Nothing is
    /// charged yet. `processing`: the outcome comes by webhook or by
    /// [`crate::Client::retrieve_payment`]. `requires_action`: the card wants
    /// 3-D Secure; the customer authenticates in the browser with
    /// `client_secret` as `next_action` says, and the payment then succeeds
    /// (`payment_intent.succeeded`) or goes back to `requires_payment_method`
    /// (`payment_intent.payment_failed`, `last_payment_error.code`
    /// `payment_intent_authentication_failure`); one nobody authenticates
    /// stays as it is until [`crate::Client::cancel_payment`]. With manual
    /// capture, a customer who passes goes on to `requires_capture`
    /// (`payment_intent.amount_capturable_updated`) instead.
    Pending(PaymentIntent),
    /// Manual capture only ([`crate::CaptureMethod::Manual`]): the card
    /// authorized the amount (`requires_capture`, `amount_capturable`) and
    /// holds it, but nothing is taken until [`crate::Client::capture_payment`].
    /// [`crate::Client::cancel_payment`] releases it; one left alone expires
    /// (Stripe: 7 days) and is canceled by the provider.
    RequiresCapture(PaymentIntent),
    /// The provider may or may not have charged: retry with the same key.
    Unknown(Unknown),
}

/// The answer to a refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The provider created the refund; its `status` says whether it has
    /// settled (card refunds usually have at once).
    Created(Refund),
    /// The provider may or may not have refunded: retry with the same key.
    Unknown(Unknown),
}

/// The answer to a cancellation (`POST /v1/payment_intents/{id}/cancel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The payment is `canceled`: nothing was charged and nothing will be.
    /// Also the answer when it was canceled already (by an earlier cancel
    /// under another key, or by the provider), which Stripe refuses with a
    /// 400 carrying the payment.
    Canceled(PaymentIntent),
    /// The provider refused: the payment is past cancelling (400
    /// `payment_intent_unexpected_state`). Stripe names the payment in the
    /// error; its `status` says why, usually `succeeded`: the customer
    /// authenticated first and the money was taken, so record the success.
    NotCancelable(PaymentIntent),
    /// The provider may or may not have canceled: retry with the same key.
    Unknown(Unknown),
}

/// The answer to a capture (`POST /v1/payment_intents/{id}/capture`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// The payment is `succeeded`: `amount_received` was taken, the rest of
    /// the authorization released.
    Captured(PaymentIntent),
    /// The provider refused: the payment is not in `requires_capture` (400
    /// `payment_intent_unexpected_state`, which names the payment). Its
    /// `status` says why: `succeeded` when it was captured already (by an
    /// earlier capture under another key: `amount_received` is what that one
    /// took), `canceled` when it was canceled or its authorization expired
    /// (`cancellation_reason` `automatic`), `requires_action` while the
    /// customer has not authenticated.
    NotCapturable(PaymentIntent),
    /// The provider may or may not have captured: retry with the same key.
    Unknown(Unknown),
}

/// A card decline (HTTP 402, `type: card_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    /// For example `card_declined`.
    pub code: String,
    /// For example `generic_decline`, `insufficient_funds`.
    pub decline_code: Option<String>,
    pub message: String,
    /// The payment the decline left behind (status `requires_payment_method`).
    pub payment_intent_id: Option<String>,
    pub request_id: Option<String>,
}

/// An outcome that is not known: the request may have been carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider outcome unknown ({reason}): {detail}")]
pub struct Unknown {
    pub reason: UnknownReason,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    pub detail: String,
    /// The provider's `Request-Id`, when an answer arrived.
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnknownReason {
    /// No complete answer within the configured timeout.
    Timeout,
    /// Connection refused, reset or closed before an answer. (A refused
    /// connection sent nothing, but telling it apart from a reset after the
    /// request left is not reliable, so it is treated alike.)
    Connection,
    /// An answer started but its body was cut off or unreadable.
    IncompleteResponse,
    /// A 5xx. A stored 5xx is replayed for the same key: it is still not a
    /// decline.
    ServerError,
    /// 409: a request with the same key is still being carried out.
    InFlight,
    /// 429: the provider is shedding load.
    RateLimited,
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection failed",
            Self::IncompleteResponse => "incomplete response",
            Self::ServerError => "server error",
            Self::InFlight => "same key in flight",
            Self::RateLimited => "rate limited",
        })
    }
}

/// A request the provider refused for a reason that resending will not fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// 400 `idempotency_error`: the key was already used with other
    /// parameters. The key derivation or the stored request is wrong.
    #[error("idempotency key reused with other parameters: {message}")]
    IdempotencyMismatch { message: String, request_id: Option<String> },
    /// 401: the secret key is wrong or revoked.
    #[error("provider refused the API key: {message}")]
    Unauthorized { message: String, request_id: Option<String> },
    /// Any other 4xx (invalid parameters, unknown payment method, a refund above
    /// what is left, 404 on a write): a bug or bad input, not an outage.
    #[error("provider rejected the request ({status} {kind}/{}): {message}", code.as_deref().unwrap_or("-"))]
    Rejected {
        status: u16,
        kind: String,
        code: Option<String>,
        param: Option<String>,
        message: String,
        request_id: Option<String>,
    },
    /// A read (retrieve, search, list) could not complete; reads change
    /// nothing, so it is safe to try again later.
    #[error("provider unavailable for a read: {0}")]
    Unavailable(Unknown),
    /// The answer arrived but did not have the expected shape.
    #[error("unexpected answer from the provider ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
}

impl GatewayError {
    /// Whether the provider refused the request as such, not the card: a key
    /// that is wrong or may not do this (401, 403), a URL or object that is
    /// not there (404), or any other `invalid_request_error`. A person has to
    /// fix the configuration or the request; neither a resend nor a new
    /// attempt will do, and nothing may be recorded as declined. An
    /// `idempotency_error` is not one of them (see
    /// [`GatewayError::IdempotencyMismatch`]), nor is a `card_error`.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Unauthorized { .. } => true,
            Self::Rejected { status, kind, .. } => matches!(status, 401 | 403 | 404) || kind == "invalid_request_error",
            Self::IdempotencyMismatch { .. } | Self::Unavailable(_) | Self::Unexpected { .. } => false,
        }
    }
}

/// The client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("GATEWAY_URL `{0}` is not an http(s) URL")]
    Url(String),
    #[error("GATEWAY_SECRET_KEY is empty")]
    MissingSecretKey,
    #[error("could not build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}
