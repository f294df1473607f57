//! The events this service publishes: the contract with their consumers.
//!
//! These types are the wire format of the `outbox` payloads and of the
//! messages on RabbitMQ, kept apart from the rows they are made from so that
//! renaming a column or a field of a domain type cannot silently change what
//! consumers parse. A breaking change is a new type with the next version
//! (`ChargeSucceededV2`), published beside the old one until its consumers
//! have moved. The tests below pin the JSON of every event.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

/// An event payload: its type (the AMQP routing key) and its version.
pub trait Event: Serialize {
    const TYPE: &'static str;
    const VERSION: u32;
}

/// What goes over the wire: the same bytes every time the event is published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub message_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub tenant_id: Uuid,
    pub order_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub data: T,
}

/// `charge.succeeded`: a buyer was charged for an order attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeSucceededV1 {
    pub id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    /// The account debited: the buyer's wallet, or for a card charge the
    /// tenant's provider clearing account in the charge's currency.
    pub buyer_account_id: Uuid,
    pub seller_account_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFeeV1>,
    pub refunded_amount: Decimal,
    pub status: ChargeStatusV1,
    pub receipt_email: Option<String>,
    pub transaction_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// A card charge: the provider token the buyer paid with. Absent for a
    /// wallet charge (an added field: version 1 consumers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
}

impl Event for ChargeSucceededV1 {
    const TYPE: &'static str = "charge.succeeded";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFeeV1 {
    pub account_id: Uuid,
    pub amount: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatusV1 {
    Succeeded,
    PartiallyRefunded,
    Refunded,
}

/// `charge.authorized`: an order attempt's amount is held for it
/// (`"capture": false`): from a wallet, moved to the tenant's holds account
/// by `hold_transaction_id`; on a card, by its issuer (the provider
/// authorized it: `hold_transaction_id` is null). Captured or voided later,
/// once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeAuthorizedV1 {
    pub id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    /// The wallet the amount is held on; for a card, the tenant's provider
    /// clearing account the capture will be taken from (as on
    /// `charge.succeeded`).
    pub buyer_account_id: Uuid,
    pub seller_account_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFeeV1>,
    pub hold_transaction_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl Event for ChargeAuthorizedV1 {
    const TYPE: &'static str = "charge.authorized";
    const VERSION: u32 = 1;
}

/// `charge.captured`: an authorization was captured: `amount` went to the
/// seller and the platform by `transaction_id`, and what was held beyond it
/// (`amount_released`) back to the buyer by `release_transaction_id` (a
/// card's issuer releases it: null). The order is paid, as on
/// `charge.succeeded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeCapturedV1 {
    pub id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    pub buyer_account_id: Uuid,
    pub seller_account_id: Uuid,
    /// What was captured.
    pub amount: Decimal,
    pub amount_authorized: Decimal,
    pub amount_released: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFeeV1>,
    pub transaction_id: Uuid,
    pub release_transaction_id: Option<Uuid>,
    pub capture_reference: String,
    pub receipt_email: Option<String>,
    pub captured_at: DateTime<Utc>,
}

impl Event for ChargeCapturedV1 {
    const TYPE: &'static str = "charge.captured";
    const VERSION: u32 = 1;
}

/// `charge.voided`: an authorization ended without a capture, asked for
/// (`requested`) or past its deadline (`expired`): everything held went
/// back to the buyer by `release_transaction_id` (a card's authorization was
/// cancelled at the provider: null). The order is not paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeVoidedV1 {
    pub id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    pub buyer_account_id: Uuid,
    pub amount_authorized: Decimal,
    pub currency: Currency,
    pub reason: VoidReasonV1,
    pub release_transaction_id: Option<Uuid>,
    pub voided_at: DateTime<Utc>,
}

impl Event for ChargeVoidedV1 {
    const TYPE: &'static str = "charge.voided";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoidReasonV1 {
    Requested,
    Expired,
}

/// `webhook_endpoint.disabled`: an endpoint failed every delivery attempt
/// for as long as the service allows (`failing_since` until `disabled_at`)
/// and gets nothing more until it is enabled again (`PATCH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpointDisabledV1 {
    pub id: Uuid,
    pub url: String,
    pub failing_since: DateTime<Utc>,
    pub disabled_at: DateTime<Utc>,
}

impl Event for WebhookEndpointDisabledV1 {
    const TYPE: &'static str = "webhook_endpoint.disabled";
    const VERSION: u32 = 1;
}

/// `charge.refunded`: part or all of a charge was given back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRefundedV1 {
    pub id: Uuid,
    pub charge_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub transaction_id: Uuid,
    pub created_at: DateTime<Utc>,
}

impl Event for ChargeRefundedV1 {
    const TYPE: &'static str = "charge.refunded";
    const VERSION: u32 = 1;
}

/// `charge.refund_failed`: the payment provider failed a card refund after
/// it was asked (and possibly after `charge.refunded`): its ledger
/// transaction was undone by `reversal_transaction_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRefundFailedV1 {
    /// The refund.
    pub id: Uuid,
    pub charge_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    /// The provider's reason.
    pub failure_code: String,
    pub reversal_transaction_id: Uuid,
    pub created_at: DateTime<Utc>,
}

impl Event for ChargeRefundFailedV1 {
    const TYPE: &'static str = "charge.refund_failed";
    const VERSION: u32 = 1;
}

/// A reservation as the `reservation.*` events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationV1 {
    pub id: Uuid,
    pub order_id: String,
    pub sku: String,
    pub quantity: i64,
    pub status: ReservationStatusV1,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatusV1 {
    Held,
    Released,
    Committed,
}

/// `reservation.held`: stock was set aside for an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationHeldV1(pub ReservationV1);

impl Event for ReservationHeldV1 {
    const TYPE: &'static str = "reservation.held";
    const VERSION: u32 = 1;
}

/// `reservation.released`: a hold was given back before payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationReleasedV1(pub ReservationV1);

impl Event for ReservationReleasedV1 {
    const TYPE: &'static str = "reservation.released";
    const VERSION: u32 = 1;
}

/// `reservation.committed`: a paid order's stock left the shelf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationCommittedV1(pub ReservationV1);

impl Event for ReservationCommittedV1 {
    const TYPE: &'static str = "reservation.committed";
    const VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    //! The JSON of every event, pinned: a change here is a change of the
    //! contract with consumers, and needs a new version.
    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }
    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }
    fn reservation(status: ReservationStatusV1) -> ReservationV1 {
        ReservationV1 {
            id: id(7),
            order_id: "order-1001".into(),
            sku: "mug-blue".into(),
            quantity: 2,
            status,
            created_at: at(),
            updated_at: at(),
        }
    }

    fn pinned<E: Event + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        event: E,
        expected: serde_json::Value,
    ) {
        let envelope = Envelope {
            message_id: id(9),
            event_type: E::TYPE.to_owned(),
            version: E::VERSION,
            tenant_id: id(1),
            order_id: Some("order-1001".to_owned()),
            occurred_at: at(),
            data: &event,
        };
        let value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            value,
            json!({"message_id": "09090909-0909-0909-0909-090909090909", "type": E::TYPE, "version": 1,
                   "tenant_id": "01010101-0101-0101-0101-010101010101", "order_id": "order-1001",
                   "occurred_at": "2026-11-22T10:00:00Z", "data": expected}),
            "{}",
            E::TYPE
        );
        let back: Envelope<E> = serde_json::from_value(value).unwrap();
        assert_eq!(back.data, event, "{} reads back", E::TYPE);
    }

    #[test]
    fn charge_succeeded_v1() {
        let event = ChargeSucceededV1 {
            id: id(2),
            order_id: "order-1001".into(),
            attempt: 1,
            buyer_account_id: id(3),
            seller_account_id: id(4),
            amount: "25.00".parse().unwrap(),
            currency: Currency::USD,
            platform_fee: Some(PlatformFeeV1 { account_id: id(5), amount: "2.50".parse().unwrap() }),
            refunded_amount: "0.00".parse().unwrap(),
            status: ChargeStatusV1::Succeeded,
            receipt_email: Some("buyer@example.com".into()),
            transaction_id: id(6),
            created_at: at(),
            payment_method: None,
        };
        assert_eq!(ChargeSucceededV1::TYPE, "charge.succeeded");
        pinned(
            event,
            json!({"id": "02020202-0202-0202-0202-020202020202", "order_id": "order-1001", "attempt": 1,
                   "buyer_account_id": "03030303-0303-0303-0303-030303030303",
                   "seller_account_id": "04040404-0404-0404-0404-040404040404",
                   "amount": "25.00", "currency": "USD",
                   "platform_fee": {"account_id": "05050505-0505-0505-0505-050505050505", "amount": "2.50"},
                   "refunded_amount": "0.00", "status": "succeeded", "receipt_email": "buyer@example.com",
                   "transaction_id": "06060606-0606-0606-0606-060606060606",
                   "created_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn charge_authorized_v1() {
        let event = ChargeAuthorizedV1 {
            id: id(2),
            order_id: "order-1001".into(),
            attempt: 1,
            buyer_account_id: id(3),
            seller_account_id: id(4),
            amount: "25.00".parse().unwrap(),
            currency: Currency::USD,
            platform_fee: Some(PlatformFeeV1 { account_id: id(5), amount: "2.50".parse().unwrap() }),
            hold_transaction_id: Some(id(6)),
            expires_at: "2026-11-29T10:00:00Z".parse().unwrap(),
            created_at: at(),
        };
        assert_eq!(ChargeAuthorizedV1::TYPE, "charge.authorized");
        pinned(
            event,
            json!({"id": "02020202-0202-0202-0202-020202020202", "order_id": "order-1001", "attempt": 1,
                   "buyer_account_id": "03030303-0303-0303-0303-030303030303",
                   "seller_account_id": "04040404-0404-0404-0404-040404040404",
                   "amount": "25.00", "currency": "USD",
                   "platform_fee": {"account_id": "05050505-0505-0505-0505-050505050505", "amount": "2.50"},
                   "hold_transaction_id": "06060606-0606-0606-0606-060606060606",
                   "expires_at": "2026-11-29T10:00:00Z", "created_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn charge_captured_v1() {
        let event = ChargeCapturedV1 {
            id: id(2),
            order_id: "order-1001".into(),
            attempt: 1,
            buyer_account_id: id(3),
            seller_account_id: id(4),
            amount: "20.00".parse().unwrap(),
            amount_authorized: "25.00".parse().unwrap(),
            amount_released: "5.00".parse().unwrap(),
            currency: Currency::USD,
            platform_fee: None,
            transaction_id: id(6),
            release_transaction_id: Some(id(7)),
            capture_reference: "order-1001:ship:1".into(),
            receipt_email: Some("buyer@example.com".into()),
            captured_at: at(),
        };
        assert_eq!(ChargeCapturedV1::TYPE, "charge.captured");
        pinned(
            event,
            json!({"id": "02020202-0202-0202-0202-020202020202", "order_id": "order-1001", "attempt": 1,
                   "buyer_account_id": "03030303-0303-0303-0303-030303030303",
                   "seller_account_id": "04040404-0404-0404-0404-040404040404",
                   "amount": "20.00", "amount_authorized": "25.00", "amount_released": "5.00", "currency": "USD",
                   "platform_fee": null, "transaction_id": "06060606-0606-0606-0606-060606060606",
                   "release_transaction_id": "07070707-0707-0707-0707-070707070707",
                   "capture_reference": "order-1001:ship:1", "receipt_email": "buyer@example.com",
                   "captured_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn charge_voided_v1() {
        let event = ChargeVoidedV1 {
            id: id(2),
            order_id: "order-1001".into(),
            attempt: 1,
            buyer_account_id: id(3),
            amount_authorized: "25.00".parse().unwrap(),
            currency: Currency::USD,
            reason: VoidReasonV1::Expired,
            release_transaction_id: Some(id(7)),
            voided_at: at(),
        };
        assert_eq!(ChargeVoidedV1::TYPE, "charge.voided");
        pinned(
            event,
            json!({"id": "02020202-0202-0202-0202-020202020202", "order_id": "order-1001", "attempt": 1,
                   "buyer_account_id": "03030303-0303-0303-0303-030303030303", "amount_authorized": "25.00",
                   "currency": "USD", "reason": "expired",
                   "release_transaction_id": "07070707-0707-0707-0707-070707070707",
                   "voided_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn charge_refunded_v1() {
        let event = ChargeRefundedV1 {
            id: id(8),
            charge_id: id(2),
            amount: "10.00".parse().unwrap(),
            currency: Currency::USD,
            transaction_id: id(6),
            created_at: at(),
        };
        assert_eq!(ChargeRefundedV1::TYPE, "charge.refunded");
        pinned(
            event,
            json!({"id": "08080808-0808-0808-0808-080808080808", "charge_id": "02020202-0202-0202-0202-020202020202",
                   "amount": "10.00", "currency": "USD", "transaction_id": "06060606-0606-0606-0606-060606060606",
                   "created_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn charge_refund_failed_v1() {
        let event = ChargeRefundFailedV1 {
            id: id(8),
            charge_id: id(2),
            amount: "10.00".parse().unwrap(),
            currency: Currency::USD,
            failure_code: "lost_or_stolen_card".to_owned(),
            reversal_transaction_id: id(7),
            created_at: at(),
        };
        assert_eq!(ChargeRefundFailedV1::TYPE, "charge.refund_failed");
        pinned(
            event,
            json!({"id": "08080808-0808-0808-0808-080808080808", "charge_id": "02020202-0202-0202-0202-020202020202",
                   "amount": "10.00", "currency": "USD", "failure_code": "lost_or_stolen_card",
                   "reversal_transaction_id": "07070707-0707-0707-0707-070707070707",
                   "created_at": "2026-11-22T10:00:00Z"}),
        );
    }

    #[test]
    fn webhook_endpoint_disabled_v1() {
        let event = WebhookEndpointDisabledV1 {
            id: id(2),
            url: "https://shop.example.com/hooks".into(),
            failing_since: "2026-11-19T10:00:00Z".parse().unwrap(),
            disabled_at: at(),
        };
        assert_eq!(WebhookEndpointDisabledV1::TYPE, "webhook_endpoint.disabled");
        let envelope = Envelope {
            message_id: id(9),
            event_type: WebhookEndpointDisabledV1::TYPE.to_owned(),
            version: 1,
            tenant_id: id(1),
            order_id: None,
            occurred_at: at(),
            data: &event,
        };
        assert_eq!(
            serde_json::to_value(&envelope).unwrap()["data"],
            json!({"id": "02020202-0202-0202-0202-020202020202", "url": "https://shop.example.com/hooks",
                   "failing_since": "2026-11-19T10:00:00Z", "disabled_at": "2026-11-22T10:00:00Z"})
        );
    }

    #[test]
    fn reservation_events_v1() {
        let data = |status: &str| {
            json!({"id": "07070707-0707-0707-0707-070707070707", "order_id": "order-1001", "sku": "mug-blue",
                   "quantity": 2, "status": status, "created_at": "2026-11-22T10:00:00Z",
                   "updated_at": "2026-11-22T10:00:00Z"})
        };
        assert_eq!(ReservationHeldV1::TYPE, "reservation.held");
        pinned(ReservationHeldV1(reservation(ReservationStatusV1::Held)), data("held"));
        assert_eq!(ReservationReleasedV1::TYPE, "reservation.released");
        pinned(ReservationReleasedV1(reservation(ReservationStatusV1::Released)), data("released"));
        assert_eq!(ReservationCommittedV1::TYPE, "reservation.committed");
        pinned(ReservationCommittedV1(reservation(ReservationStatusV1::Committed)), data("committed"));
    }
}
