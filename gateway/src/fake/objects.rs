//! The provider's objects as the fake keeps them, and their JSON in Stripe's
//! shape.

use std::collections::BTreeMap;

use gateway::{ApiError, Charge, PaymentIntent, PaymentStatus, Refund};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A PaymentIntent and the one charge its confirmation made (or will make,
/// once the customer authenticates).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub charge_id: String,
    /// Whether the confirmation reached the card and made `charge_id`
    /// (succeeded, or failed for a decline). Not while 3-D Secure waits, nor
    /// when it failed or was abandoned: Stripe's `latest_charge` is null
    /// then. Journals written before 3-D Secure charged every payment.
    #[serde(default = "charged_before_3ds")]
    pub has_charge: bool,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub payment_method: String,
    pub amount_refunded: i64,
    pub last_payment_error: Option<ApiError>,
    /// `<id>_secret_<random>`; journals written before it was kept have none
    /// and show one derived from the charge id, as they did then.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// What the customer must do (3-D Secure), while `requires_action`.
    #[serde(default)]
    pub next_action: Option<Value>,
    #[serde(default)]
    pub cancellation_reason: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub canceled_at: Option<i64>,
    /// Captured at once, or authorized and captured later. Journals written
    /// before manual capture hold automatic payments only.
    #[serde(default)]
    pub capture_method: CaptureMethod,
    /// Until when (unix ms) the card holds an authorization made with manual
    /// capture: set when the card authorized, never for automatic capture.
    /// Past it, one still uncaptured is canceled (`automatic`).
    #[serde(default)]
    pub capture_before_ms: Option<i64>,
    /// What the capture took, when it took less than the amount; `None`
    /// when it took the whole amount (or nothing was captured).
    #[serde(default)]
    pub amount_captured: Option<i64>,
    /// When it was last written (unix ms): the search index sees it only a
    /// lag later.
    #[serde(default)]
    pub changed_ms: i64,
    /// The journal batch that last wrote it: readers see it once durable.
    #[serde(skip)]
    pub seq: u64,
}

impl Payment {
    /// The card authorized this payment, made with manual capture: it holds
    /// the amount until `capture_before_ms`, and nothing is taken until a
    /// capture.
    pub fn authorize(&mut self, now_ms: i64, expiry_ms: i64) {
        self.status = PaymentStatus::RequiresCapture;
        self.has_charge = true;
        self.capture_before_ms = Some(now_ms.saturating_add(expiry_ms));
    }

    pub fn intent(&self) -> PaymentIntent {
        PaymentIntent {
            id: self.id.clone(),
            amount: self.amount,
            amount_received: self.received(),
            amount_capturable: if self.status == PaymentStatus::RequiresCapture { self.amount } else { 0 },
            currency: self.currency.clone(),
            status: self.status,
            created: self.created,
            metadata: self.metadata.clone(),
            payment_method: Some(self.payment_method.clone()),
            latest_charge: self.has_charge.then(|| self.charge_id.clone()),
            last_payment_error: self.last_payment_error.clone(),
            client_secret: Some(match &self.client_secret {
                Some(secret) => secret.clone(),
                None => format!("{}_secret_{}", self.id, &self.charge_id[3..]),
            }),
            next_action: self.next_action.clone(),
            cancellation_reason: self.cancellation_reason.clone(),
            livemode: false,
        }
    }

    pub fn json(&self) -> Value {
        let mut value = with_object("payment_intent", &self.intent());
        let extra = json!({
            "canceled_at": self.canceled_at,
            "capture_method": self.capture_method,
            "confirmation_method": "automatic",
            "payment_method_types": ["card"],
            "description": null,
        });
        merge(&mut value, extra);
        value
    }

    /// The charge as Stripe shows it. An authorization is a charge that
    /// succeeded but is not `captured`. What is released counts as refunded
    /// on it: Stripe refunds the `amount_capturable` of a canceled
    /// authorization and marks an expired one refunded; the rest a partial
    /// capture did not take is released alike.
    pub fn charge_json(&self) -> Value {
        let paid = self.status == PaymentStatus::Succeeded || self.capture_before_ms.is_some();
        let released = match self.status {
            PaymentStatus::Succeeded | PaymentStatus::Canceled if paid => self.amount - self.received(),
            _ => 0,
        };
        let amount_refunded = released + self.amount_refunded;
        let charge = Charge {
            id: self.charge_id.clone(),
            amount: self.amount,
            amount_refunded,
            currency: self.currency.clone(),
            payment_intent: Some(self.id.clone()),
            refunded: paid && amount_refunded == self.amount,
            status: if paid { "succeeded" } else { "failed" }.into(),
            created: self.created,
            metadata: self.metadata.clone(),
        };
        let mut value = with_object("charge", &charge);
        let capture_before = self.capture_before_ms.map(|ms| ms / 1000);
        merge(
            &mut value,
            json!({
                "captured": self.status == PaymentStatus::Succeeded,
                "amount_captured": self.received(),
                "paid": paid,
                "payment_method": self.payment_method,
                "payment_method_details": {"type": "card", "card": {"capture_before": capture_before}},
                "livemode": false,
            }),
        );
        value
    }

    /// What was taken: the amount, or what a manual capture took.
    pub fn received(&self) -> i64 {
        match self.status {
            PaymentStatus::Succeeded => self.amount_captured.unwrap_or(self.amount),
            _ => 0,
        }
    }

    /// What may still be refunded.
    pub fn remaining(&self) -> i64 {
        self.received() - self.amount_refunded
    }

    /// An authorization whose time ran out before anyone captured it.
    pub fn authorization_expired(&self, now_ms: i64) -> bool {
        self.status == PaymentStatus::RequiresCapture && self.capture_before_ms.is_some_and(|until| now_ms >= until)
    }

    /// Canceled: nothing taken, an authorization released.
    pub fn cancel(&mut self, reason: Option<String>, now_ms: i64) {
        self.status = PaymentStatus::Canceled;
        self.cancellation_reason = reason;
        self.canceled_at = Some(now_ms / 1000);
        self.next_action = None;
        self.changed_ms = now_ms;
    }
}

/// Stripe's `capture_method` of a payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    #[default]
    Automatic,
    /// Stripe's newer default for cards: captured at once like `automatic`;
    /// only the timing of the funds differs, which the fake does not model.
    AutomaticAsync,
    Manual,
}

impl CaptureMethod {
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_value(json!(value)).ok()
    }
}

/// A refund as kept, with the seq of the batch that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRecord {
    #[serde(flatten)]
    pub refund: Refund,
    #[serde(skip)]
    pub seq: u64,
}

pub fn refund_json(refund: &Refund) -> Value {
    with_object("refund", refund)
}

impl RefundRecord {
    pub fn json(&self) -> Value {
        refund_json(&self.refund)
    }
}

fn charged_before_3ds() -> bool {
    true
}

/// A test payment method and what confirming with it does.
pub enum Card {
    Succeeds,
    Declines {
        decline_code: &'static str,
        message: &'static str,
    },
    /// 3-D Secure: `requires_action` until the customer authenticates
    /// (`/_fake/payment_intents/{id}/authenticate`).
    RequiresAuthentication,
}

/// Stripe's test payment method tokens this fake knows.
pub fn card(payment_method: &str) -> Option<Card> {
    Some(match payment_method {
        "pm_card_visa" | "pm_card_mastercard" => Card::Succeeds,
        // Stripe's cards that authenticate on every payment.
        "pm_card_threeDSecure2Required" | "pm_card_authenticationRequired" => Card::RequiresAuthentication,
        "pm_card_chargeDeclined" => {
            Card::Declines { decline_code: "generic_decline", message: "Your card was declined." }
        }
        "pm_card_chargeDeclinedInsufficientFunds" => {
            Card::Declines { decline_code: "insufficient_funds", message: "Your card has insufficient funds." }
        }
        _ => return None,
    })
}

pub fn new_id(prefix: &str) -> String {
    // Stripe ids are a prefix and 24 alphanumerics.
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

/// A status (or any unit variant) as the API spells it: `requires_action`.
pub fn name_of(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A payment's client secret, as Stripe shapes it: `<id>_secret_<random>`.
pub fn client_secret(payment_id: &str) -> String {
    format!("{payment_id}_secret_{}", uuid::Uuid::new_v4().simple())
}

/// An error body: `{"error": {...}}`.
pub fn error_json(kind: &str, code: Option<&str>, message: impl Into<String>, param: Option<&str>) -> Value {
    let mut error = json!({"type": kind, "message": message.into()});
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-")));
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    json!({ "error": error })
}

fn with_object(object: &str, value: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(value).expect("objects serialize");
    value["object"] = json!(object);
    value
}

fn merge(value: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (value, extra) {
        target.extend(extra);
    }
}
