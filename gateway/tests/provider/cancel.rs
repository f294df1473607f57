//! Cancelling a payment that was not charged: once, idempotent like every
//! write, refused with the payment for one that was charged meanwhile, and
//! unknown under faults until the same key answers.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway::webhook::{EventObject, PAYMENT_CANCELED, PAYMENT_FAILED, PAYMENT_REQUIRES_ACTION, PAYMENT_SUCCEEDED};
use gateway::{CancelOutcome, Client, GatewayError, PaymentIntent, PaymentOutcome, PaymentStatus, UnknownReason};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::authentication::{pending, THREE_D_SECURE};
use crate::support::{payment, verify, Fake, WebhookReceiver};

const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);
const ABANDONED: [(&str, &str); 1] = [("cancellation_reason", "abandoned")];

/// The key the service would send for the cancellation of one of its charges.
fn key(charge: u128) -> String {
    gateway::cancel_key(b"server secret", Uuid::from_u128(1), Uuid::from_u128(charge))
}

fn cancel_path(id: &str) -> String {
    format!("/v1/payment_intents/{id}/cancel")
}

async fn cancel(client: &Client, id: &str, key: &str) -> CancelOutcome {
    client.cancel_payment(id, key).await.unwrap()
}

fn canceled(outcome: CancelOutcome) -> PaymentIntent {
    match outcome {
        CancelOutcome::Canceled(intent) => intent,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_payment_left_waiting_for_authentication_is_canceled_once_and_the_key_replays() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);
    let waiting = pending(&client, "order-c", THREE_D_SECURE).await;
    receiver.wait_for(1, WAIT).await;

    let first_key = key(1);
    let done = canceled(cancel(&client, &waiting.id, &first_key).await);
    assert_eq!((done.id.as_str(), done.status), (waiting.id.as_str(), PaymentStatus::Canceled));
    assert_eq!(done.cancellation_reason.as_deref(), Some("abandoned"));
    assert_eq!((done.amount_received, done.latest_charge.as_ref(), done.next_action.as_ref()), (0, None, None));
    assert_eq!(done.metadata, waiting.metadata);
    let received = receiver.wait_for(2, WAIT).await;
    let event = verify(&received[1]).unwrap();
    assert_eq!(event.kind, PAYMENT_CANCELED);
    assert_eq!(event.object().unwrap(), EventObject::PaymentIntent(done.clone()));
    assert_eq!(client.retrieve_payment(&waiting.id).await.unwrap().unwrap(), done);

    // The same key replays the same answer, and nothing happens again.
    assert_eq!(canceled(cancel(&client, &waiting.id, &first_key).await), done);
    let (status, replayed, body) = fake.raw_post(&cancel_path(&waiting.id), &first_key, &ABANDONED).await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")), "{body}");
    // Other parameters, or another payment, under the same key: a bug.
    let (status, _, body) =
        fake.raw_post(&cancel_path(&waiting.id), &first_key, &[("cancellation_reason", "duplicate")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("idempotency_error"), "{body}");
    let other = pending(&client, "order-other", THREE_D_SECURE).await;
    let mismatch = client.cancel_payment(&other.id, &first_key).await;
    assert!(matches!(mismatch, Err(GatewayError::IdempotencyMismatch { .. })), "{mismatch:?}");

    // Under a new key (past the key window, say), Stripe refuses: it is
    // canceled already. Which is what the caller wanted.
    let (status, _, body) = fake.raw_post(&cancel_path(&waiting.id), &key(2), &ABANDONED).await;
    let refused: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("payment_intent_unexpected_state")), "{body}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("it has a status of canceled"), "{body}");
    assert_eq!(canceled(cancel(&client, &waiting.id, &key(3)).await), done);

    // A canceled payment cannot be authenticated any more.
    let path = format!("/payment_intents/{}/authenticate", waiting.id);
    assert_eq!(fake.admin_answer(Method::POST, &path, Some(json!({"result": "succeed"}))).await.0, 400);

    // A declined payment is cancelable too; its failed charge stays named.
    let PaymentOutcome::Declined(decline) =
        client.create_payment(&payment("order-d", 900, "pm_card_chargeDeclined"), "order-d").await.unwrap()
    else {
        panic!("expected a decline");
    };
    let declined = canceled(cancel(&client, decline.payment_intent_id.as_deref().unwrap(), &key(4)).await);
    assert!(declined.latest_charge.is_some());

    // Events: the two payments waiting, the cancels that executed, the
    // decline; none for the replays and refusals.
    let received = receiver.wait_for(5, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 5, "{received:?}");
    let mut kinds: Vec<String> = receiver.received().iter().map(|r| verify(r).unwrap().kind).collect();
    kinds.sort();
    let mut expected =
        [PAYMENT_CANCELED, PAYMENT_CANCELED, PAYMENT_FAILED, PAYMENT_REQUIRES_ACTION, PAYMENT_REQUIRES_ACTION];
    expected.sort();
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn a_payment_charged_meanwhile_is_not_cancelable_and_the_refusal_carries_it() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    // The customer authenticated just before the cancel went out.
    let waiting = pending(&client, "order-race", THREE_D_SECURE).await;
    let path = format!("/payment_intents/{}/authenticate", waiting.id);
    fake.admin(Method::POST, &path, Some(json!({"result": "succeed"}))).await;

    let first_key = key(1);
    let CancelOutcome::NotCancelable(charged) = cancel(&client, &waiting.id, &first_key).await else {
        panic!("a charged payment is past cancelling");
    };
    assert_eq!((charged.id.as_str(), charged.status), (waiting.id.as_str(), PaymentStatus::Succeeded));
    assert_eq!((charged.amount_received, charged.cancellation_reason.as_ref()), (1250, None));
    assert!(charged.latest_charge.is_some(), "what the caller records as the success");
    assert_eq!(client.retrieve_payment(&waiting.id).await.unwrap().unwrap(), charged);

    // The refusal is Stripe's, and stored for the key like an answer.
    let (status, replayed, body) = fake.raw_post(&cancel_path(&waiting.id), &first_key, &ABANDONED).await;
    assert_eq!((status, replayed.as_deref()), (400, Some("true")), "{body}");
    let refused: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = &refused["error"];
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("invalid_request_error"), Some("payment_intent_unexpected_state"))
    );
    assert!(
        error["message"].as_str().unwrap().starts_with(
            "You cannot cancel this PaymentIntent because it has a status of succeeded. Only a PaymentIntent"
        ),
        "{body}"
    );
    assert_eq!(
        (error["payment_intent"]["id"].as_str(), error["payment_intent"]["status"].as_str()),
        (Some(waiting.id.as_str()), Some("succeeded"))
    );
    assert!(matches!(cancel(&client, &waiting.id, &first_key).await, CancelOutcome::NotCancelable(_)));

    // A payment that succeeded at once, likewise.
    let PaymentOutcome::Succeeded(paid) =
        client.create_payment(&payment("order-paid", 500, "pm_card_visa"), "order-paid").await.unwrap()
    else {
        panic!("expected a success");
    };
    let CancelOutcome::NotCancelable(same) = cancel(&client, &paid.id, &key(2)).await else {
        panic!("a charged payment is past cancelling");
    };
    assert_eq!(same, paid);

    // An unknown payment is the caller's mistake, and stores nothing.
    match client.cancel_payment("pi_doesnotexist", &key(3)).await {
        Err(error @ GatewayError::Rejected { status: 404, .. }) => {
            assert!(error.is_configuration());
            let GatewayError::Rejected { code, param, .. } = error else { unreachable!() };
            assert_eq!((code.as_deref(), param.as_deref()), (Some("resource_missing"), Some("intent")));
        }
        other => panic!("{other:?}"),
    }
    // So do parameters Stripe does not take.
    let other = pending(&client, "order-other", THREE_D_SECURE).await;
    for form in [[("cancellation_reason", "bored")], [("amount", "1")]] {
        let (status, _, body) = fake.raw_post(&cancel_path(&other.id), &key(4), &form).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("invalid_request_error"), "{body}");
    }
    assert_eq!(canceled(cancel(&client, &other.id, &key(4)).await).status, PaymentStatus::Canceled);
    assert!(matches!(cancel(&client, &other.id, &key(3)).await, CancelOutcome::Canceled(_)));
}

#[tokio::test]
async fn cancel_faults_are_unknown_and_the_same_key_converges() {
    let mut fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    // A stored 500: nothing canceled, the key keeps answering 500.
    let first = pending(&client, "order-e", THREE_D_SECURE).await;
    fake.arm(json!({"kind": "error_before_charge", "metadata": {"order_id": "order-e"}})).await;
    for _ in 0..2 {
        let CancelOutcome::Unknown(unknown) = cancel(&client, &first.id, &key(1)).await else {
            panic!("a 500 is unknown");
        };
        assert_eq!((unknown.reason, unknown.status), (UnknownReason::ServerError, Some(500)));
    }
    let still = client.retrieve_payment(&first.id).await.unwrap().unwrap();
    assert_eq!(still.status, PaymentStatus::RequiresAction);
    // Having looked it up, the caller may cancel under a new key.
    assert_eq!(canceled(cancel(&client, &first.id, &key(2)).await).id, first.id);

    // Canceled, then the answer dropped or cut: the same key finds it done.
    for (n, kind) in [(3, "drop_after_charge"), (4, "cut_after_charge")] {
        let order = format!("order-{kind}");
        let waiting = pending(&client, &order, THREE_D_SECURE).await;
        fake.arm(json!({"kind": kind, "metadata": {"order_id": order}})).await;
        let CancelOutcome::Unknown(unknown) = cancel(&client, &waiting.id, &key(n)).await else {
            panic!("{kind}: no answer is unknown");
        };
        assert!(
            matches!(unknown.reason, UnknownReason::Connection | UnknownReason::IncompleteResponse),
            "{kind}: {unknown:?}"
        );
        assert_eq!(client.retrieve_payment(&waiting.id).await.unwrap().unwrap().status, PaymentStatus::Canceled);
        let done = canceled(cancel(&client, &waiting.id, &key(n)).await);
        assert_eq!(done.cancellation_reason.as_deref(), Some("abandoned"));
    }
    let applied = &fake.stats().await["faults_applied"];
    assert_eq!((applied["drop_after_charge"].as_u64(), applied["cut_after_charge"].as_u64()), (Some(1), Some(1)));

    // On disk before any answer: after kill -9 the key still replays.
    let last = pending(&client, "order-k", THREE_D_SECURE).await;
    let done = canceled(cancel(&client, &last.id, &key(5)).await);
    fake.kill_and_restart();
    let client = fake.client(TIMEOUT);
    assert_eq!(canceled(cancel(&client, &last.id, &key(5)).await), done);
    assert_eq!(client.retrieve_payment(&last.id).await.unwrap().unwrap(), done);

    // One canceled event per payment canceled, for all the resends (a
    // delivery cut short by the kill may come again: same event id).
    let canceled_events = || {
        let events = receiver.received().iter().map(|r| verify(r).unwrap()).collect::<Vec<_>>();
        events.into_iter().filter(|e| e.kind == PAYMENT_CANCELED).map(|e| e.id).collect::<BTreeSet<_>>().len()
    };
    crate::support::eventually(WAIT, async || (canceled_events() >= 4).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(canceled_events(), 4);
    assert!(receiver.received().iter().all(|r| verify(r).unwrap().kind != PAYMENT_SUCCEEDED));
}
