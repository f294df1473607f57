//! 3-D Secure: a card that wants authentication leaves the payment pending in
//! `requires_action` with what the customer's browser needs, nothing charged;
//! the customer then passes or fails, and the events say so.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::webhook::{Event, EventObject, PAYMENT_FAILED, PAYMENT_REQUIRES_ACTION, PAYMENT_SUCCEEDED};
use gateway::{GatewayError, PaymentIntent, PaymentOutcome, PaymentStatus, RefundOutcome, RefundRequest};
use reqwest::Method;
use serde_json::json;

use crate::support::{payment, payment_form, verify, Fake, WebhookReceiver};

const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);

pub const THREE_D_SECURE: &str = "pm_card_threeDSecure2Required";

/// A payment confirmed with a card that wants 3-D Secure, as the client sees it.
pub async fn pending(client: &gateway::Client, order: &str, card: &str) -> PaymentIntent {
    match client.create_payment(&payment(order, 1250, card), order).await.unwrap() {
        PaymentOutcome::Pending(intent) => intent,
        other => panic!("{other:?}"),
    }
}

fn intent_of(event: &Event) -> PaymentIntent {
    match event.object().unwrap() {
        EventObject::PaymentIntent(intent) => intent,
        other => panic!("{}: {other:?}", event.kind),
    }
}

/// The `n`-th event received (0-based), verified.
async fn event(receiver: &WebhookReceiver, n: usize) -> Event {
    verify(&receiver.wait_for(n + 1, WAIT).await[n]).expect("a good signature")
}

#[tokio::test]
async fn a_card_that_wants_3ds_is_pending_with_what_the_browser_needs_and_nothing_is_charged() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let form = payment_form("order-3ds", "1250", THREE_D_SECURE);
    let (status, replayed, first) = fake.raw_post("/v1/payment_intents", "order-3ds", &form).await;
    assert_eq!((status, replayed), (200, None), "{first}");
    let intent = pending(&client, "order-3ds", THREE_D_SECURE).await;
    let raw: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(intent.id, raw["id"], "the key replays the same payment");
    assert_eq!(intent.status, PaymentStatus::RequiresAction);
    assert_eq!((intent.amount, intent.amount_received, intent.latest_charge.as_deref()), (1250, 0, None));
    let secret = intent.client_secret.as_deref().unwrap();
    assert!(secret.starts_with(&format!("{}_secret_", intent.id)) && secret.len() > intent.id.len() + 8, "{secret}");
    let next_action = intent.next_action.clone().unwrap();
    assert_eq!(intent.next_action_type(), Some("use_stripe_sdk"));
    assert_eq!(next_action["use_stripe_sdk"]["type"], "three_d_secure_redirect");
    let page = format!("{}/_fake/3ds/{}", fake.url(), intent.id);
    assert_eq!(next_action["use_stripe_sdk"]["stripe_js"], page.as_str());
    assert_eq!(client.retrieve_payment(&intent.id).await.unwrap().as_ref(), Some(&intent));

    // The page the browser would open.
    let shown = reqwest::get(&page).await.unwrap();
    assert_eq!(shown.status(), 200);
    let html = shown.text().await.unwrap();
    assert!(html.contains(&format!("/_fake/payment_intents/{}/authenticate", intent.id)), "{html}");
    assert_eq!(reqwest::get(format!("{}/_fake/3ds/pi_doesnotexist", fake.url())).await.unwrap().status(), 404);

    // Announced once; the replays made nothing more.
    let announced = event(&receiver, 0).await;
    assert_eq!(announced.kind, PAYMENT_REQUIRES_ACTION);
    assert_eq!(intent_of(&announced), intent);
    assert_eq!(fake.payments_of("order-3ds").await, 1);

    // Nothing to refund yet.
    let refund = RefundRequest { payment_intent: intent.id.clone(), amount: None, metadata: BTreeMap::new() };
    match client.create_refund(&refund, "refund-3ds").await {
        Err(GatewayError::Rejected { status: 400, code, .. }) => {
            assert_eq!(code.as_deref(), Some("charge_not_refundable"))
        }
        other => panic!("{other:?}"),
    }

    // Stripe's other test card that always authenticates does the same.
    let alias = pending(&client, "order-alias", "pm_card_authenticationRequired").await;
    assert_eq!((alias.status, alias.latest_charge), (PaymentStatus::RequiresAction, None));
    assert_ne!(alias.client_secret, intent.client_secret);
    receiver.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 2, "one event per payment");
}

#[tokio::test]
async fn the_customer_passes_or_fails_authentication_and_the_events_say_so() {
    let mut fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    // Passed: charged, as if it had succeeded at once.
    let passed = pending(&client, "order-pass", THREE_D_SECURE).await;
    event(&receiver, 0).await;
    let path = format!("/payment_intents/{}/authenticate", passed.id);
    let answer = fake.admin(Method::POST, &path, Some(json!({"result": "succeed"}))).await;
    assert_eq!(answer["status"], "succeeded");
    let succeeded = event(&receiver, 1).await;
    assert_eq!(succeeded.kind, PAYMENT_SUCCEEDED);
    let charged = intent_of(&succeeded);
    assert_eq!((charged.id.as_str(), charged.status), (passed.id.as_str(), PaymentStatus::Succeeded));
    assert_eq!((charged.amount_received, charged.next_action.as_ref()), (1250, None));
    let charge = charged.latest_charge.clone().expect("charged now");
    assert_eq!(client.retrieve_payment(&passed.id).await.unwrap().unwrap(), charged);
    // Once only.
    let (status, body) = fake.admin_answer(Method::POST, &path, Some(json!({"result": "fail"}))).await;
    assert_eq!(status, 400, "{body}");
    // Now there is a charge to refund.
    let refund = RefundRequest { payment_intent: passed.id.clone(), amount: Some(250), metadata: BTreeMap::new() };
    let RefundOutcome::Created(refunded) = client.create_refund(&refund, "refund-pass").await.unwrap() else {
        panic!("expected a refund");
    };
    assert_eq!(refunded.charge.as_deref(), Some(charge.as_str()));

    // Failed (a form, as the page posts it): back to wanting a payment method.
    let failed = pending(&client, "order-fail", THREE_D_SECURE).await;
    let received = receiver.wait_for(5, WAIT).await.len();
    let response = reqwest::Client::new()
        .post(format!("{}/_fake/payment_intents/{}/authenticate", fake.url(), failed.id))
        .form(&[("result", "fail")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let payment_failed = event(&receiver, received).await;
    assert_eq!(payment_failed.kind, PAYMENT_FAILED);
    let left = intent_of(&payment_failed);
    assert_eq!((left.status, left.latest_charge.as_deref()), (PaymentStatus::RequiresPaymentMethod, None));
    assert_eq!((left.amount_received, left.next_action.as_ref()), (0, None));
    let error = left.last_payment_error.clone().unwrap();
    assert_eq!(error.code.as_deref(), Some("payment_intent_authentication_failure"));
    assert_eq!(error.kind, "invalid_request_error", "no decline: the card was never asked");
    assert!(error.message.starts_with("The provided PaymentMethod has failed authentication."), "{}", error.message);

    // Bad requests change nothing.
    for (body, want) in [
        (Some(json!({"result": "maybe"})), 400),
        (Some(json!({"result": ""})), 400),
        (Some(json!({"result": 1})), 400),
        (None, 400),
    ] {
        let path = format!("/payment_intents/{}/authenticate", failed.id);
        assert_eq!(fake.admin_answer(Method::POST, &path, body.clone()).await.0, want, "{body:?}");
    }
    let unknown =
        fake.admin_answer(Method::POST, "/payment_intents/pi_nope/authenticate", Some(json!({"result": "succeed"})));
    assert_eq!(unknown.await.0, 404);
    // A payment that never needed authentication cannot be authenticated.
    let PaymentOutcome::Succeeded(plain) =
        client.create_payment(&payment("order-plain", 100, "pm_card_visa"), "order-plain").await.unwrap()
    else {
        panic!("expected a success");
    };
    let path = format!("/payment_intents/{}/authenticate", plain.id);
    assert_eq!(fake.admin_answer(Method::POST, &path, Some(json!({"result": "succeed"}))).await.0, 400);

    // Each step is on disk before its answer.
    fake.kill_and_restart();
    let client = fake.client(TIMEOUT);
    assert_eq!(client.retrieve_payment(&passed.id).await.unwrap().unwrap().status, PaymentStatus::Succeeded);
    assert_eq!(client.retrieve_payment(&failed.id).await.unwrap().unwrap(), left);
}
