//! The fake's state survives `kill -9`: payments, keys, and a charge whose
//! answer was dropped.

use std::time::Duration;

use gateway::{ListPayments, PaymentOutcome};
use serde_json::json;

use crate::support::{payment, payment_form, Fake};

#[tokio::test]
async fn keys_and_payments_survive_kill_9() {
    let mut fake = Fake::start(&[]);
    let client = fake.client(Duration::from_secs(5));
    let form = payment_form("order-1", "1000", "pm_card_visa");
    let (status, _, first) = fake.raw_post("/v1/payment_intents", "key-1", &form).await;
    assert_eq!(status, 200);
    // The second charge's answer is dropped, then the provider is killed at once.
    fake.arm(json!({"kind": "drop_after_charge", "metadata": {"order_id": "order-2"}})).await;
    let dropped = client.create_payment(&payment("order-2", 2000, "pm_card_visa"), "key-2").await.unwrap();
    assert!(matches!(dropped, PaymentOutcome::Unknown(_)), "{dropped:?}");

    fake.kill_and_restart();
    let client = fake.client(Duration::from_secs(5));

    let (status, replayed, again) = fake.raw_post("/v1/payment_intents", "key-1", &form).await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")));
    assert_eq!(first, again);
    let retry = client.create_payment(&payment("order-2", 2000, "pm_card_visa"), "key-2").await.unwrap();
    let PaymentOutcome::Succeeded(second) = retry else { panic!("{retry:?}") };
    assert_eq!(second.amount, 2000);

    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let fetched = client.retrieve_payment(first["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(fetched.map(|p| p.amount), Some(1000));
    let listed = client.list_payments(&ListPayments::default()).await.unwrap();
    assert_eq!(listed.data.len(), 2);
    let groups = fake.groups().await;
    assert_eq!((groups["total"].as_u64(), groups["max_per_group"].as_u64()), (Some(2), Some(1)), "{groups}");
}

#[tokio::test]
async fn a_journal_cut_mid_line_loses_only_the_unfinished_write() {
    let mut fake = Fake::start(&[]);
    let client = fake.client(Duration::from_secs(5));
    let paid = client.create_payment(&payment("order-1", 1000, "pm_card_visa"), "key-1").await.unwrap();
    assert!(matches!(paid, PaymentOutcome::Succeeded(_)));
    // What a crash in the middle of an append leaves behind.
    fake.kill();
    fake.append_to_journal(b"{\"seq\":99,\"ops\":[{\"op\":\"paym");
    fake.restart();
    let client = fake.client(Duration::from_secs(5));
    assert_eq!(client.list_all_payments(0, i64::MAX).await.unwrap().len(), 1);
    let again = client.create_payment(&payment("order-2", 500, "pm_card_visa"), "key-2").await.unwrap();
    assert!(matches!(again, PaymentOutcome::Succeeded(_)), "{again:?}");
    fake.kill_and_restart();
    assert_eq!(fake.client(Duration::from_secs(5)).list_all_payments(0, i64::MAX).await.unwrap().len(), 2);
}
