//! The provider's objects, as much of Stripe's shape as the service reads.
//! Unknown fields are ignored and unknown statuses map to `Other`, so a newer
//! API version at the provider does not break parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A payment: Stripe's PaymentIntent. Amounts are in minor units of `currency`
/// (lowercase ISO 4217).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_received: i64,
    pub currency: String,
    pub status: PaymentStatus,
    /// Unix seconds.
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    /// The charge made by the last confirmation, the one a refund draws on.
    #[serde(default)]
    pub latest_charge: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<ApiError>,
    #[serde(default)]
    pub livemode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
    #[serde(other)]
    Other,
}

/// A refund of (part of) a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub charge: Option<String>,
    pub status: RefundStatus,
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
    #[serde(other)]
    Other,
}

/// The charge behind a payment; `charge.refunded` events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub refunded: bool,
    pub status: String,
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One page of a list or search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
    /// Search results only: the token of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
}

/// The `error` object of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Card errors: the payment the decline left behind (status
    /// `requires_payment_method`). Boxed: it nests an `ApiError` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Box<PaymentIntent>>,
}

/// The envelope of an error response.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub(crate) struct ErrorBody {
    pub error: ApiError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_and_fields_are_tolerated() {
        let pi: PaymentIntent = serde_json::from_value(serde_json::json!({
            "id": "pi_1", "object": "payment_intent", "amount": 1250, "currency": "eur",
            "status": "something_new", "created": 1_700_000_000, "client_secret": "x",
            "metadata": {"order_id": "o-1"}
        }))
        .unwrap();
        assert_eq!(pi.status, PaymentStatus::Other);
        assert_eq!(pi.metadata["order_id"], "o-1");
        assert_eq!(pi.latest_charge, None);
    }
}
