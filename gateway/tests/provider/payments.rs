//! Payments, declines, refunds: the client's outcomes against the fake.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::{GatewayError, PaymentOutcome, PaymentStatus, RefundOutcome, RefundRequest, RefundStatus};

use crate::support::{payment, payment_form, Fake};

/// A key that may read but not write, as the fake is told.
const RESTRICTED_KEY: &str = "rk_test_ledger_local_readonly";

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_payment_succeeds_and_the_same_key_replays_it() {
    let fake = Fake::start(&[]);
    let form = payment_form("order-1", "1250", "pm_card_visa");
    let (status, replayed, first) = fake.raw_post("/v1/payment_intents", "key-1", &form).await;
    assert_eq!((status, replayed), (200, None));
    let (status, replayed, again) = fake.raw_post("/v1/payment_intents", "key-1", &form).await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")));
    assert_eq!(first, again, "a replay answers the same bytes");

    // The client sends the same parameters, so it gets the same payment.
    let client = fake.client(TIMEOUT);
    let PaymentOutcome::Succeeded(intent) =
        client.create_payment(&payment("order-1", 1250, "pm_card_visa"), "key-1").await.unwrap()
    else {
        panic!("expected a success");
    };
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(intent.id, first["id"]);
    assert_eq!((intent.amount, intent.amount_received, intent.currency.as_str()), (1250, 1250, "eur"));
    assert_eq!(intent.metadata["order_id"], "order-1");
    assert!(intent.latest_charge.is_some());

    let fetched = client.retrieve_payment(&intent.id).await.unwrap().unwrap();
    assert_eq!((fetched.id.as_str(), fetched.status), (intent.id.as_str(), PaymentStatus::Succeeded));
    assert_eq!(client.retrieve_payment("pi_doesnotexist").await.unwrap(), None);
    assert_eq!(client.retrieve_payment("../v1/refunds").await.unwrap(), None);

    assert_eq!(fake.payments_of("order-1").await, 1);
    assert_eq!(fake.stats().await["replays"], 2);
}

#[tokio::test]
async fn declines_are_definitive_and_replayed_and_validation_failures_store_nothing() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);

    let declined = client.create_payment(&payment("order-d", 900, "pm_card_chargeDeclined"), "key-d").await.unwrap();
    let PaymentOutcome::Declined(decline) = &declined else { panic!("{declined:?}") };
    assert_eq!((decline.code.as_str(), decline.decline_code.as_deref()), ("card_declined", Some("generic_decline")));
    let declined_id = decline.payment_intent_id.clone().expect("the decline names its payment");
    let left = client.retrieve_payment(&declined_id).await.unwrap().unwrap();
    assert_eq!(left.status, PaymentStatus::RequiresPaymentMethod);
    assert_eq!(left.last_payment_error.unwrap().decline_code.as_deref(), Some("generic_decline"));
    // The stored 402 replays: the same decline, not a second attempt.
    let again = client.create_payment(&payment("order-d", 900, "pm_card_chargeDeclined"), "key-d").await.unwrap();
    let PaymentOutcome::Declined(again) = again else { panic!("{again:?}") };
    assert_eq!((again.payment_intent_id, again.decline_code), (Some(declined_id), decline.decline_code.clone()));

    let poor = client
        .create_payment(&payment("order-p", 900, "pm_card_chargeDeclinedInsufficientFunds"), "key-p")
        .await
        .unwrap();
    let PaymentOutcome::Declined(poor) = poor else { panic!("{poor:?}") };
    assert_eq!(poor.decline_code.as_deref(), Some("insufficient_funds"));

    // An unknown payment method is our bug, and nothing is stored for it ...
    let unknown = client.create_payment(&payment("order-u", 900, "pm_card_nonsense"), "key-u").await;
    match unknown {
        Err(GatewayError::Rejected { status: 400, code, param, .. }) => {
            assert_eq!((code.as_deref(), param.as_deref()), (Some("resource_missing"), Some("payment_method")));
        }
        other => panic!("{other:?}"),
    }
    // ... so the same key with a valid card goes through.
    let fixed = client.create_payment(&payment("order-u", 900, "pm_card_mastercard"), "key-u").await.unwrap();
    assert!(matches!(fixed, PaymentOutcome::Succeeded(_)), "{fixed:?}");

    assert_eq!(fake.payments_of("order-d").await, 1);
    assert_eq!(fake.payments_of("order-u").await, 1);
}

#[tokio::test]
async fn a_wrong_secret_key_is_a_configuration_error() {
    let fake = Fake::start(&[]);
    let config = gateway::Config::new(fake.url(), "sk_test_wrong", "whsec");
    let client = gateway::Client::new(&config).unwrap();
    let result = client.create_payment(&payment("order-1", 100, "pm_card_visa"), "key-1").await;
    assert!(matches!(result, Err(GatewayError::Unauthorized { .. })), "{result:?}");
    assert!(matches!(client.list_all_payments(0, i64::MAX).await, Err(GatewayError::Unauthorized { .. })));
    assert_eq!(fake.stats().await["payments"], 0);
}

#[tokio::test]
async fn a_restricted_key_reads_but_its_writes_are_a_configuration_error_not_a_decline() {
    let fake = Fake::start(&["--restricted-key", RESTRICTED_KEY]);
    let client = fake.client(TIMEOUT);
    let PaymentOutcome::Succeeded(paid) =
        client.create_payment(&payment("order-1", 1000, "pm_card_visa"), "key-1").await.unwrap()
    else {
        panic!("expected a success");
    };
    let restricted = gateway::Client::new(&gateway::Config::new(fake.url(), RESTRICTED_KEY, "whsec")).unwrap();
    assert!(restricted.retrieve_payment(&paid.id).await.unwrap().is_some());
    assert_eq!(restricted.list_all_payments(0, i64::MAX).await.unwrap().len(), 1);
    assert!(restricted.list_refunds(&paid.id).await.unwrap().is_empty());

    let forbidden = |result: Result<(), GatewayError>, permission: &str| match result {
        Err(error @ GatewayError::Rejected { status: 403, .. }) => {
            assert!(error.is_configuration(), "{error}");
            let GatewayError::Rejected { kind, code, message, request_id, .. } = error else { unreachable!() };
            assert_eq!((kind.as_str(), code), ("invalid_request_error", None));
            assert!(message.contains("does not have the required permissions"), "{message}");
            assert!(message.contains(permission), "{message}");
            assert!(!message.contains(RESTRICTED_KEY), "the key is masked: {message}");
            assert!(request_id.is_some());
        }
        other => panic!("{other:?}"),
    };
    let second = payment("order-2", 1000, "pm_card_visa");
    forbidden(restricted.create_payment(&second, "key-2").await.map(drop), "rak_payment_intent_write");
    let refund = RefundRequest { payment_intent: paid.id.clone(), amount: None, metadata: BTreeMap::new() };
    forbidden(restricted.create_refund(&refund, "refund-1").await.map(drop), "rak_refund_write");
    assert_eq!(fake.stats().await["payments"], 1);

    // Nothing was stored for the key: with the secret key it goes through.
    let retried = client.create_payment(&second, "key-2").await.unwrap();
    assert!(matches!(retried, PaymentOutcome::Succeeded(_)), "{retried:?}");
    // A decline is the card's answer, not an error; a wrong key is one.
    let declined = client.create_payment(&payment("order-3", 1000, "pm_card_chargeDeclined"), "key-3").await;
    assert!(matches!(declined, Ok(PaymentOutcome::Declined(_))), "{declined:?}");
    let wrong = gateway::Client::new(&gateway::Config::new(fake.url(), "rk_test_wrong", "whsec")).unwrap();
    let error = wrong.create_payment(&payment("order-4", 1000, "pm_card_visa"), "key-4").await.unwrap_err();
    assert!(matches!(error, GatewayError::Unauthorized { .. }) && error.is_configuration(), "{error:?}");
}

#[tokio::test]
async fn refunds_are_partial_or_full_and_never_above_the_payment() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    let PaymentOutcome::Succeeded(intent) =
        client.create_payment(&payment("order-r", 1000, "pm_card_visa"), "key-r").await.unwrap()
    else {
        panic!("expected a success");
    };
    let refund = |amount: Option<i64>| RefundRequest {
        payment_intent: intent.id.clone(),
        amount,
        metadata: BTreeMap::from([("refund_reference".to_owned(), "r".to_owned())]),
    };

    let RefundOutcome::Created(partial) = client.create_refund(&refund(Some(300)), "refund-1").await.unwrap() else {
        panic!("expected a refund");
    };
    assert_eq!((partial.amount, partial.status), (300, RefundStatus::Succeeded));
    assert_eq!(partial.payment_intent.as_deref(), Some(intent.id.as_str()));
    assert_eq!(partial.charge, intent.latest_charge);
    // Idempotent like everything else.
    let RefundOutcome::Created(replayed) = client.create_refund(&refund(Some(300)), "refund-1").await.unwrap() else {
        panic!("expected the same refund");
    };
    assert_eq!(replayed, partial);

    // More than what is left is refused, and stores nothing for the key.
    match client.create_refund(&refund(Some(701)), "refund-2").await {
        Err(GatewayError::Rejected { status: 400, code, .. }) => assert_eq!(code.as_deref(), Some("amount_too_large")),
        other => panic!("{other:?}"),
    }
    // No amount: the rest.
    let RefundOutcome::Created(rest) = client.create_refund(&refund(None), "refund-3").await.unwrap() else {
        panic!("expected a refund");
    };
    assert_eq!(rest.amount, 700);
    match client.create_refund(&refund(Some(1)), "refund-4").await {
        Err(GatewayError::Rejected { status: 400, code, .. }) => {
            assert_eq!(code.as_deref(), Some("charge_already_refunded"))
        }
        other => panic!("{other:?}"),
    }

    let payments = fake.admin(reqwest::Method::GET, "/payments", None).await;
    assert_eq!(payments["data"][0]["amount_refunded"], 1000);
    assert_eq!(fake.stats().await["refunds"], 2);

    // A declined payment has nothing to refund.
    let PaymentOutcome::Declined(decline) =
        client.create_payment(&payment("order-x", 1000, "pm_card_chargeDeclined"), "key-x").await.unwrap()
    else {
        panic!("expected a decline");
    };
    let nothing =
        RefundRequest { payment_intent: decline.payment_intent_id.unwrap(), amount: None, metadata: BTreeMap::new() };
    assert!(matches!(
        client.create_refund(&nothing, "refund-5").await,
        Err(GatewayError::Rejected { status: 400, .. })
    ));
}
