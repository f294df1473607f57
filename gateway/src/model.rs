//! The provider's objects, as much of Stripe's shape as the service reads.
//! Unknown fields are ignored and unknown statuses map to `Other`, so a newer
//! API version at the provider does not break parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A payment: Stripe's PaymentIntent. Amounts are in minor units of `currency`
/// (lowercase ISO 4217).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    /// What was taken: the amount, or what a manual capture took (the rest
    /// was released). 0 until then.
    #[serde(default)]
    pub amount_received: i64,
    /// What a capture may still take: the amount while `requires_capture`
    /// (an authorization made with manual capture), 0 otherwise.
    #[serde(default)]
    pub amount_capturable: i64,
    pub currency: String,
    pub status: PaymentStatus,
    /// Unix seconds.
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "expandable")]
    pub payment_method: Option<String>,
    /// The charge made by the last confirmation, the one a refund draws on.
    #[serde(default, deserialize_with = "expandable")]
    pub latest_charge: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<ApiError>,
    /// What the customer's browser needs to authenticate (3-D Secure) a
    /// payment in `requires_action`: handed to Stripe.js, never shown.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// What the customer must do before a `requires_action` payment can go
    /// on, as Stripe sends it: `{"type": "use_stripe_sdk", "use_stripe_sdk":
    /// {...}}` or `{"type": "redirect_to_url", "redirect_to_url": {"url",
    /// "return_url"}}`. Kept whole: its shape varies by type and version.
    #[serde(default)]
    pub next_action: Option<serde_json::Value>,
    /// Why a `canceled` payment was canceled (`abandoned`, `duplicate`,
    /// `requested_by_customer`, `fraudulent`, or Stripe's own such as
    /// `automatic`); `None` when the cancel named no reason.
    #[serde(default)]
    pub cancellation_reason: Option<String>,
    #[serde(default)]
    pub livemode: bool,
}

impl PaymentIntent {
    /// The `type` of `next_action`, such as `use_stripe_sdk` or
    /// `redirect_to_url`.
    pub fn next_action_type(&self) -> Option<&str> {
        self.next_action.as_ref()?.get("type")?.as_str()
    }
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
    #[serde(default, deserialize_with = "expandable")]
    pub payment_intent: Option<String>,
    #[serde(default, deserialize_with = "expandable")]
    pub charge: Option<String>,
    pub status: RefundStatus,
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Why a refund failed after it was accepted (status `failed`), for
    /// example `lost_or_stolen_card` or `expired_or_canceled_card`.
    #[serde(default)]
    pub failure_reason: Option<String>,
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
    #[serde(default, deserialize_with = "expandable")]
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

/// An expandable field (`latest_charge`, a refund's `payment_intent`, ...):
/// Stripe sends the id, or the whole object when the request expanded it
/// (and some fakes always do). Either way the id is what is kept.
fn expandable<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Expandable {
        Id(String),
        Object { id: String },
    }
    Ok(Option::<Expandable>::deserialize(deserializer)?.map(|field| match field {
        Expandable::Id(id) | Expandable::Object { id } => id,
    }))
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
        assert_eq!((pi.next_action, pi.cancellation_reason), (None, None));
    }

    #[test]
    fn a_payment_that_needs_authentication_keeps_its_next_action_and_client_secret() {
        let intent = |next_action: serde_json::Value| {
            serde_json::from_value::<PaymentIntent>(serde_json::json!({
                "id": "pi_1", "object": "payment_intent", "amount": 1250, "currency": "eur",
                "status": "requires_action", "created": 1, "client_secret": "pi_1_secret_abc",
                "latest_charge": null, "next_action": next_action,
            }))
            .unwrap()
        };
        let sdk = intent(serde_json::json!({"type": "use_stripe_sdk", "use_stripe_sdk": {
            "type": "three_d_secure_redirect", "stripe_js": "https://hooks.stripe.com/redirect/authenticate/src_1",
        }}));
        assert_eq!(
            (sdk.status, sdk.client_secret.as_deref()),
            (PaymentStatus::RequiresAction, Some("pi_1_secret_abc"))
        );
        assert_eq!(sdk.next_action_type(), Some("use_stripe_sdk"));
        assert_eq!(sdk.next_action.as_ref().unwrap()["use_stripe_sdk"]["type"], "three_d_secure_redirect");
        let redirect = intent(serde_json::json!({"type": "redirect_to_url", "redirect_to_url": {
            "url": "https://hooks.stripe.com/3d_secure_2/hosted?x=1", "return_url": "https://shop.test/back",
        }}));
        assert_eq!(redirect.next_action_type(), Some("redirect_to_url"));
        assert_eq!(redirect.next_action.unwrap()["redirect_to_url"]["return_url"], "https://shop.test/back");
        assert_eq!(intent(serde_json::Value::Null).next_action_type(), None);

        let canceled: PaymentIntent = serde_json::from_value(serde_json::json!({
            "id": "pi_1", "amount": 1250, "currency": "eur", "status": "canceled", "created": 1,
            "canceled_at": 2, "cancellation_reason": "abandoned", "next_action": null,
        }))
        .unwrap();
        assert_eq!(
            (canceled.status, canceled.cancellation_reason.as_deref()),
            (PaymentStatus::Canceled, Some("abandoned"))
        );
    }

    #[test]
    fn expandable_fields_are_read_as_ids_or_as_objects() {
        let intent = |latest_charge: serde_json::Value, payment_method: serde_json::Value| {
            serde_json::from_value::<PaymentIntent>(serde_json::json!({
                "id": "pi_1", "amount": 100, "currency": "eur", "status": "succeeded", "created": 1,
                "latest_charge": latest_charge, "payment_method": payment_method,
            }))
            .unwrap()
        };
        let plain = intent(serde_json::json!("ch_1"), serde_json::json!("pm_1"));
        assert_eq!((plain.latest_charge.as_deref(), plain.payment_method.as_deref()), (Some("ch_1"), Some("pm_1")));
        let expanded = intent(
            serde_json::json!({"id": "ch_1", "object": "charge", "amount": 100, "refunds": {"data": []}}),
            serde_json::json!({"id": "pm_1", "object": "payment_method", "card": {"brand": "visa"}}),
        );
        assert_eq!(expanded, plain);
        assert_eq!(intent(serde_json::Value::Null, serde_json::Value::Null).latest_charge, None);

        let refund = |payment_intent: serde_json::Value, charge: serde_json::Value| {
            serde_json::from_value::<Refund>(serde_json::json!({
                "id": "re_1", "amount": 40, "currency": "eur", "status": "succeeded", "created": 1,
                "payment_intent": payment_intent, "charge": charge,
            }))
            .unwrap()
        };
        let plain = refund(serde_json::json!("pi_1"), serde_json::json!("ch_1"));
        let expanded = refund(
            serde_json::json!({"id": "pi_1", "object": "payment_intent", "status": "succeeded"}),
            serde_json::json!({"id": "ch_1", "object": "charge"}),
        );
        assert_eq!((plain.payment_intent.as_deref(), plain.charge.as_deref()), (Some("pi_1"), Some("ch_1")));
        assert_eq!(expanded, plain);
        assert_eq!(plain.failure_reason, None);

        let charge: Charge = serde_json::from_value(serde_json::json!({
            "id": "ch_1", "amount": 100, "currency": "eur", "status": "succeeded", "created": 1,
            "payment_intent": {"id": "pi_1", "object": "payment_intent"},
        }))
        .unwrap();
        assert_eq!(charge.payment_intent.as_deref(), Some("pi_1"));
        // An object without an id is not an expandable field's shape.
        let bad = serde_json::from_value::<Charge>(serde_json::json!({
            "id": "ch_1", "amount": 100, "currency": "eur", "status": "succeeded", "created": 1,
            "payment_intent": {"object": "payment_intent"},
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn a_failed_refund_says_why() {
        let refund: Refund = serde_json::from_value(serde_json::json!({
            "id": "re_1", "object": "refund", "amount": 40, "currency": "eur", "status": "failed", "created": 1,
            "failure_reason": "lost_or_stolen_card", "failure_balance_transaction": "txn_1",
        }))
        .unwrap();
        assert_eq!(
            (refund.status, refund.failure_reason.as_deref()),
            (RefundStatus::Failed, Some("lost_or_stolen_card"))
        );
    }
}
