//! Stripe's idempotency semantics: replays including 5xx, parameter
//! mismatches, keys in flight, the key window.

use std::time::Duration;

use gateway::{GatewayError, PaymentOutcome, UnknownReason};
use serde_json::json;

use crate::support::{payment, payment_form, Fake};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_same_key_with_other_parameters_is_an_idempotency_error() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    let first = client.create_payment(&payment("order-1", 1000, "pm_card_visa"), "key-1").await.unwrap();
    assert!(matches!(first, PaymentOutcome::Succeeded(_)), "{first:?}");
    let other = client.create_payment(&payment("order-1", 1001, "pm_card_visa"), "key-1").await;
    assert!(matches!(other, Err(GatewayError::IdempotencyMismatch { .. })), "{other:?}");
    // Parameter order does not matter; values do.
    let mut reordered = payment_form("order-1", "1000", "pm_card_visa");
    reordered.reverse();
    let (status, replayed, _) = fake.raw_post("/v1/payment_intents", "key-1", &reordered).await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")));
    // The same key on another endpoint is a mismatch too.
    let (status, _, body) = fake.raw_post("/v1/refunds", "key-1", &[("payment_intent", "pi_x")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("idempotency_error"), "{body}");
    assert_eq!(fake.payments_of("order-1").await, 1);
}

#[tokio::test]
async fn a_stored_500_replays_as_500_and_charges_nothing() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    fake.arm(json!({"kind": "error_before_charge", "metadata": {"order_id": "order-5"}})).await;

    let first = client.create_payment(&payment("order-5", 1000, "pm_card_visa"), "key-5").await.unwrap();
    let PaymentOutcome::Unknown(unknown) = first else { panic!("{first:?}") };
    assert_eq!((unknown.reason, unknown.status), (UnknownReason::ServerError, Some(500)));

    // Stored for the key: the same key answers 500 again, as a replay, though
    // the fault is spent.
    let form = payment_form("order-5", "1000", "pm_card_visa");
    let (status, replayed, body) = fake.raw_post("/v1/payment_intents", "key-5", &form).await;
    assert_eq!((status, replayed.as_deref()), (500, Some("true")), "{body}");
    assert!(body.contains("api_error"), "{body}");
    let again = client.create_payment(&payment("order-5", 1000, "pm_card_visa"), "key-5").await.unwrap();
    assert!(matches!(again, PaymentOutcome::Unknown(ref u) if u.reason == UnknownReason::ServerError), "{again:?}");
    assert_eq!(fake.payments_of("order-5").await, 0);

    // A new key (the next attempt, after checking nothing was charged) pays.
    let next = client.create_payment(&payment("order-5", 1000, "pm_card_visa"), "key-5-attempt-2").await.unwrap();
    assert!(matches!(next, PaymentOutcome::Succeeded(_)), "{next:?}");
    assert_eq!(fake.payments_of("order-5").await, 1);
    assert_eq!(fake.stats().await["faults_applied"]["error_before_charge"], 1);
}

#[tokio::test]
async fn a_key_in_flight_gets_409_until_the_first_answer() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    fake.arm(json!({"kind": "slow_response", "delay_ms": 1500, "metadata": {"order_id": "order-s"}})).await;

    let first = tokio::spawn({
        let client = client.clone();
        async move { client.create_payment(&payment("order-s", 1000, "pm_card_visa"), "key-s").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = client.create_payment(&payment("order-s", 1000, "pm_card_visa"), "key-s").await.unwrap();
    let PaymentOutcome::Unknown(unknown) = second else { panic!("{second:?}") };
    assert_eq!((unknown.reason, unknown.status), (UnknownReason::InFlight, Some(409)));

    let PaymentOutcome::Succeeded(first) = first.await.unwrap().unwrap() else { panic!("the first must succeed") };
    let PaymentOutcome::Succeeded(third) =
        client.create_payment(&payment("order-s", 1000, "pm_card_visa"), "key-s").await.unwrap()
    else {
        panic!("the key must replay once the first answered");
    };
    assert_eq!(first.id, third.id);
    assert_eq!(fake.payments_of("order-s").await, 1);
    assert_eq!(fake.stats().await["in_flight_conflicts"], 1);
}

#[tokio::test]
async fn past_the_key_window_the_same_key_charges_again_so_callers_search_first() {
    let fake = Fake::start(&["--idempotency-ttl-secs", "1"]);
    let client = fake.client(TIMEOUT);
    let request = payment("order-w", 1000, "pm_card_visa");
    let PaymentOutcome::Succeeded(first) = client.create_payment(&request, "key-w").await.unwrap() else {
        panic!("expected a success");
    };
    let PaymentOutcome::Succeeded(replayed) = client.create_payment(&request, "key-w").await.unwrap() else {
        panic!("expected a replay");
    };
    assert_eq!(first.id, replayed.id);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past the window, a caller looks the attempt up by the metadata it sent
    // before sending anything: here it finds the payment and stops.
    let found =
        client.search_payments(&[("tenant_id", "tenant-1"), ("order_id", "order-w"), ("attempt", "1")]).await.unwrap();
    assert_eq!(found.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    assert!(client.search_payments(&[("order_id", "order-other")]).await.unwrap().is_empty());

    // Sending blindly would have charged twice: the key is forgotten.
    let PaymentOutcome::Succeeded(second) = client.create_payment(&request, "key-w").await.unwrap() else {
        panic!("expected a new payment");
    };
    assert_ne!(first.id, second.id);
    assert_eq!(fake.payments_of("order-w").await, 2);
    assert_eq!(client.search_payments(&[("order_id", "order-w")]).await.unwrap().len(), 2);
}
