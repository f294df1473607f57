//! Signed webhook events: they arrive and verify; armed faults duplicate,
//! delay and reorder them; failed deliveries are retried, also across a
//! restart of the provider.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::webhook::{
    self, EventObject, SignatureError, CHARGE_REFUNDED, PAYMENT_FAILED, PAYMENT_SUCCEEDED, REFUND_CREATED,
};
use gateway::{PaymentOutcome, RefundOutcome, RefundRequest};
use serde_json::json;

use crate::support::{payment, verify, Fake, WebhookReceiver, WEBHOOK_SECRET};

const WAIT: Duration = Duration::from_secs(10);

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn pay(client: &gateway::Client, order: &str, card: &str) -> PaymentOutcome {
    client.create_payment(&payment(order, 1000, card), order).await.unwrap()
}

async fn refund(client: &gateway::Client, payment_intent: &str, key: &str) {
    let request = RefundRequest { payment_intent: payment_intent.into(), amount: Some(400), metadata: BTreeMap::new() };
    let outcome = client.create_refund(&request, key).await.unwrap();
    assert!(matches!(outcome, RefundOutcome::Created(_)), "{outcome:?}");
}

#[tokio::test]
async fn signed_events_arrive_and_verify_and_bad_signatures_do_not() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(Duration::from_secs(5));

    let PaymentOutcome::Succeeded(paid) = pay(&client, "order-1", "pm_card_visa").await else { panic!() };
    let PaymentOutcome::Declined(_) = pay(&client, "order-2", "pm_card_chargeDeclined").await else { panic!() };
    refund(&client, &paid.id, "refund-1").await;

    let received = receiver.wait_for(4, WAIT).await;
    let mut events: Vec<_> = received.iter().map(|r| verify(r).expect("a good signature")).collect();
    events.sort_by_key(|e| e.kind.clone());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, [CHARGE_REFUNDED, PAYMENT_FAILED, PAYMENT_SUCCEEDED, REFUND_CREATED]);
    match events[2].object().unwrap() {
        EventObject::PaymentIntent(pi) => {
            assert_eq!((pi.id, pi.metadata["order_id"].as_str()), (paid.id.clone(), "order-1"))
        }
        other => panic!("{other:?}"),
    }
    match events[0].object().unwrap() {
        EventObject::Charge(charge) => {
            assert_eq!((charge.payment_intent, charge.amount_refunded), (Some(paid.id.clone()), 400));
            assert!(!charge.refunded, "a partial refund");
        }
        other => panic!("{other:?}"),
    }
    match events[3].object().unwrap() {
        EventObject::Refund(refund) => {
            assert_eq!((refund.payment_intent, refund.amount), (Some(paid.id.clone()), 400));
            assert_eq!(refund.status, gateway::RefundStatus::Succeeded);
        }
        other => panic!("{other:?}"),
    }
    // The service's own check, through the client and its configuration.
    assert!(client.verify_webhook(&received[0].body, received[0].signature.as_deref()).is_ok());

    let good = &received[0];
    let mut tampered = good.body.clone();
    let at = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[at] = b'9';
    let bad = webhook::verify(&tampered, good.signature.as_deref(), WEBHOOK_SECRET, webhook::DEFAULT_TOLERANCE, now());
    assert!(matches!(bad, Err(SignatureError::Mismatch)), "{bad:?}");
    let wrong =
        webhook::verify(&good.body, good.signature.as_deref(), "whsec_wrong", webhook::DEFAULT_TOLERANCE, now());
    assert!(matches!(wrong, Err(SignatureError::Mismatch)));
    let stale =
        webhook::verify(&good.body, good.signature.as_deref(), WEBHOOK_SECRET, webhook::DEFAULT_TOLERANCE, now() + 600);
    assert!(matches!(stale, Err(SignatureError::Stale { .. })));
}

#[tokio::test]
async fn armed_faults_deliver_twice_late_and_out_of_order() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(Duration::from_secs(5));

    // Twice: the same event id arrives two times.
    fake.arm(json!({"kind": "webhook_twice", "metadata": {"order_id": "order-t"}})).await;
    let PaymentOutcome::Succeeded(_) = pay(&client, "order-t", "pm_card_visa").await else { panic!() };
    let twice = receiver.wait_for(2, WAIT).await;
    let (a, b) = (verify(&twice[0]).unwrap(), verify(&twice[1]).unwrap());
    assert_eq!((a.id.as_str(), a.kind.as_str()), (b.id.as_str(), PAYMENT_SUCCEEDED));

    // Out of order: the payment's event is held until the refund's is through.
    fake.arm(json!({"kind": "webhook_out_of_order", "metadata": {"order_id": "order-o"}})).await;
    let PaymentOutcome::Succeeded(paid) = pay(&client, "order-o", "pm_card_visa").await else { panic!() };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "the payment's event is held");
    refund(&client, &paid.id, "refund-o").await;
    let received = receiver.wait_for(5, WAIT).await;
    let events: Vec<webhook::Event> = received[2..].iter().map(|r| verify(r).unwrap()).collect();
    assert_ne!(events[0].kind, PAYMENT_SUCCEEDED, "a refund's event overtook it");
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, [CHARGE_REFUNDED, PAYMENT_SUCCEEDED, REFUND_CREATED]);
    let succeeded = events.iter().find(|e| e.kind == PAYMENT_SUCCEEDED).unwrap();
    assert!(events.iter().all(|e| e.created >= succeeded.created), "`created` still tells the true order");

    // Late: not before the delay.
    fake.arm(json!({"kind": "webhook_late", "delay_ms": 700, "metadata": {"order_id": "order-l"}})).await;
    let answered = Instant::now();
    let PaymentOutcome::Succeeded(_) = pay(&client, "order-l", "pm_card_visa").await else { panic!() };
    let received = receiver.wait_for(6, WAIT).await;
    assert!(received[5].at.duration_since(answered) >= Duration::from_millis(700));

    let applied = &fake.stats().await["faults_applied"];
    assert_eq!((applied["webhook_twice"].as_u64(), applied["webhook_out_of_order"].as_u64()), (Some(1), Some(1)));
    assert_eq!(applied["webhook_late"], 1);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff() {
    let fake = Fake::start(&["--webhook-retry-ms", "100"]);
    let receiver = WebhookReceiver::start();
    receiver.fail_next(3);
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(Duration::from_secs(5));
    let started = Instant::now();
    let PaymentOutcome::Succeeded(_) = pay(&client, "order-1", "pm_card_visa").await else { panic!() };
    let received = receiver.wait_for(1, WAIT).await;
    // 100 + 200 + 400 ms of backoff before the fourth attempt.
    assert!(received[0].at.duration_since(started) >= Duration::from_millis(700));
    assert!(verify(&received[0]).is_ok());
    let stats = fake.stats().await;
    assert_eq!(
        (stats["webhooks"]["attempts"].as_u64(), stats["webhooks"]["failed_attempts"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(stats["webhooks"]["pending"], 0);
}

#[tokio::test]
async fn pending_deliveries_survive_kill_9() {
    let mut fake = Fake::start(&["--webhook-retry-ms", "100", "--webhook-retry-max-ms", "200"]);
    let receiver = WebhookReceiver::start();
    receiver.fail_next(u32::MAX);
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(Duration::from_secs(5));
    let PaymentOutcome::Succeeded(paid) = pay(&client, "order-1", "pm_card_visa").await else { panic!() };
    crate::support::eventually(WAIT, async || {
        (fake.stats().await["webhooks"]["failed_attempts"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    fake.kill_and_restart();
    receiver.fail_next(0);
    let received = receiver.wait_for(1, WAIT).await;
    let event = verify(&received[0]).unwrap();
    assert_eq!(event.kind, PAYMENT_SUCCEEDED);
    assert_eq!(event.data.object["id"], paid.id.as_str());
}
