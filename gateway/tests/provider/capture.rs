//! Authorize now, capture later: a payment made with manual capture is held
//! on the card (`requires_capture`) until it is captured, in full or in part,
//! canceled, or its authorization expires. A capture is idempotent like every
//! write, refused with the payment once the payment is past capturing, and
//! unknown under faults until the same key answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway::webhook::{
    PAYMENT_AMOUNT_CAPTURABLE_UPDATED, PAYMENT_CANCELED, PAYMENT_REQUIRES_ACTION, PAYMENT_SUCCEEDED,
};
use gateway::{
    CancelOutcome, CaptureMethod, CaptureOutcome, Client, EventObject, GatewayError, PaymentIntent, PaymentOutcome,
    PaymentStatus, RefundOutcome, RefundRequest, UnknownReason,
};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::authentication::THREE_D_SECURE;
use crate::support::{eventually, payment, payment_form, verify, Fake, WebhookReceiver};

const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);
const AMOUNT: i64 = 1250;
const WEEK_SECS: i64 = 7 * 24 * 3600;

/// The key the service would send for the capture of one of its charges.
fn key(charge: u128) -> String {
    gateway::capture_key(b"server secret", Uuid::from_u128(1), Uuid::from_u128(charge))
}

fn capture_path(id: &str) -> String {
    format!("/v1/payment_intents/{id}/capture")
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A payment made with manual capture on a card that accepts: authorized.
async fn authorize(client: &Client, order: &str) -> PaymentIntent {
    let request = payment(order, AMOUNT, "pm_card_visa");
    match client.create_payment_with_capture(&request, CaptureMethod::Manual, order).await.unwrap() {
        PaymentOutcome::RequiresCapture(intent) => intent,
        other => panic!("{other:?}"),
    }
}

async fn capture(client: &Client, id: &str, amount: Option<i64>, key: &str) -> CaptureOutcome {
    client.capture_payment(id, amount, key).await.unwrap()
}

fn captured(outcome: CaptureOutcome) -> PaymentIntent {
    match outcome {
        CaptureOutcome::Captured(intent) => intent,
        other => panic!("{other:?}"),
    }
}

fn not_capturable(outcome: CaptureOutcome) -> PaymentIntent {
    match outcome {
        CaptureOutcome::NotCapturable(intent) => intent,
        other => panic!("{other:?}"),
    }
}

/// The charge behind a payment, as the provider shows it.
async fn charge(fake: &Fake, intent: &PaymentIntent) -> Value {
    let id = intent.latest_charge.as_deref().expect("a payment with a charge");
    let (status, charge) = fake.raw_get(&format!("/v1/charges/{id}"), &[]).await;
    assert_eq!(status, 200, "{charge}");
    charge
}

async fn refund(client: &Client, payment_intent: &str, amount: Option<i64>, key: &str) -> RefundOutcome {
    let request = RefundRequest { payment_intent: payment_intent.to_owned(), amount, metadata: BTreeMap::new() };
    client.create_refund(&request, key).await.unwrap()
}

/// A refund that must be refused with `code`.
async fn refund_refused(client: &Client, payment_intent: &str, amount: Option<i64>, code: &str) {
    let request = RefundRequest { payment_intent: payment_intent.to_owned(), amount, metadata: BTreeMap::new() };
    match client.create_refund(&request, &format!("refund-{payment_intent}-{amount:?}")).await {
        Err(GatewayError::Rejected { status: 400, code: got, .. }) => assert_eq!(got.as_deref(), Some(code)),
        other => panic!("{other:?}"),
    }
}

/// The payment events received so far, verified, once per event id, in the
/// order received: (type, payment).
fn payment_events(receiver: &WebhookReceiver) -> Vec<(String, PaymentIntent)> {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for received in receiver.received() {
        let event = verify(&received).expect("a good signature");
        if !seen.insert(event.id.clone()) {
            continue;
        }
        if let EventObject::PaymentIntent(intent) = event.object().unwrap() {
            events.push((event.kind, intent));
        }
    }
    events
}

/// Waits for `n` payment events, then a moment more for any that should not
/// come; returns them.
async fn settled_payment_events(receiver: &WebhookReceiver, n: usize) -> Vec<(String, PaymentIntent)> {
    eventually(WAIT, async || (payment_events(receiver).len() >= n).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = payment_events(receiver);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(events.len(), n, "{kinds:?}");
    events
}

/// The event of `kind` about `id`, exactly one.
fn event_of<'a>(events: &'a [(String, PaymentIntent)], kind: &str, id: &str) -> &'a PaymentIntent {
    let found: Vec<_> = events.iter().filter(|(k, intent)| k == kind && intent.id == id).collect();
    assert_eq!(found.len(), 1, "{kind} for {id}: {found:?}");
    &found[0].1
}

#[tokio::test]
async fn an_authorization_holds_the_amount_until_it_is_captured_in_full() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let before = now();
    let held = authorize(&client, "order-full").await;
    assert_eq!(held.status, PaymentStatus::RequiresCapture);
    assert_eq!((held.amount, held.amount_capturable, held.amount_received), (AMOUNT, AMOUNT, 0));
    assert_eq!(client.retrieve_payment(&held.id).await.unwrap().as_ref(), Some(&held));
    let (_, raw) = fake.raw_get(&format!("/v1/payment_intents/{}", held.id), &[]).await;
    assert_eq!(raw["capture_method"], "manual", "{raw}");
    // The card authorized it: a charge that succeeded, not captured, with the
    // time it must be captured by (a week, the default).
    let authorization = charge(&fake, &held).await;
    assert_eq!(
        (&authorization["status"], &authorization["paid"], &authorization["captured"]),
        (&json!("succeeded"), &json!(true), &json!(false)),
        "{authorization}"
    );
    assert_eq!((&authorization["amount_captured"], &authorization["amount_refunded"]), (&json!(0), &json!(0)));
    let capture_before = authorization["payment_method_details"]["card"]["capture_before"].as_i64().unwrap();
    assert!((before + WEEK_SECS..=now() + WEEK_SECS).contains(&capture_before), "{authorization}");
    // Nothing was taken, so nothing can be refunded.
    refund_refused(&client, &held.id, None, "charge_not_refundable").await;

    let done = captured(capture(&client, &held.id, None, &key(1)).await);
    assert_eq!((done.id.as_str(), done.status), (held.id.as_str(), PaymentStatus::Succeeded));
    assert_eq!((done.amount_received, done.amount_capturable), (AMOUNT, 0));
    assert_eq!(done.latest_charge, held.latest_charge, "the authorization's charge, now captured");
    assert_eq!(client.retrieve_payment(&held.id).await.unwrap().unwrap(), done);
    let taken = charge(&fake, &done).await;
    assert_eq!(
        (&taken["captured"], &taken["amount_captured"], &taken["amount_refunded"]),
        (&json!(true), &json!(AMOUNT), &json!(0)),
        "{taken}"
    );
    // Now it is the money of a payment that succeeded, and can be refunded.
    let RefundOutcome::Created(refunded) = refund(&client, &held.id, Some(250), "refund-full").await else {
        panic!("expected a refund");
    };
    assert_eq!(refunded.amount, 250);

    // Announced: authorized (the payment as first answered), then captured.
    let events = settled_payment_events(&receiver, 2).await;
    assert_eq!(event_of(&events, PAYMENT_AMOUNT_CAPTURABLE_UPDATED, &held.id), &held);
    assert_eq!(event_of(&events, PAYMENT_SUCCEEDED, &held.id), &done);
}

#[tokio::test]
async fn a_partial_capture_takes_that_amount_and_releases_the_rest() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let held = authorize(&client, "order-part").await;
    let done = captured(capture(&client, &held.id, Some(800), &key(1)).await);
    assert_eq!(done.status, PaymentStatus::Succeeded);
    assert_eq!((done.amount, done.amount_received, done.amount_capturable), (AMOUNT, 800, 0));
    assert_eq!(client.retrieve_payment(&held.id).await.unwrap().unwrap(), done);
    // The released rest shows as refunded on the charge, as Stripe shows it.
    let taken = charge(&fake, &done).await;
    assert_eq!(
        (&taken["captured"], &taken["amount_captured"], &taken["amount_refunded"], &taken["refunded"]),
        (&json!(true), &json!(800), &json!(450), &json!(false)),
        "{taken}"
    );
    let summary = fake.admin(Method::GET, "/payments", None).await;
    assert_eq!(summary["data"][0]["amount_received"], 800, "{summary}");

    // Only what was taken can be given back.
    refund_refused(&client, &held.id, Some(801), "amount_too_large").await;
    let RefundOutcome::Created(refunded) = refund(&client, &held.id, None, "refund-part").await else {
        panic!("expected a refund");
    };
    assert_eq!(refunded.amount, 800);
    let after = charge(&fake, &done).await;
    assert_eq!((&after["amount_refunded"], &after["refunded"]), (&json!(AMOUNT), &json!(true)), "{after}");

    let events = settled_payment_events(&receiver, 2).await;
    assert_eq!(event_of(&events, PAYMENT_AMOUNT_CAPTURABLE_UPDATED, &held.id).amount_capturable, AMOUNT);
    assert_eq!(event_of(&events, PAYMENT_SUCCEEDED, &held.id).amount_received, 800);
}

#[tokio::test]
async fn a_capture_replays_for_its_key_and_another_key_finds_it_not_capturable() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let held = authorize(&client, "order-twice").await;
    let first_key = key(1);
    let done = captured(capture(&client, &held.id, Some(1000), &first_key).await);
    assert_eq!(done.amount_received, 1000);

    // The same key and amount: the same answer, nothing captured again.
    assert_eq!(captured(capture(&client, &held.id, Some(1000), &first_key).await), done);
    let (status, replayed, body) =
        fake.raw_post(&capture_path(&held.id), &first_key, &[("amount_to_capture", "1000")]).await;
    assert_eq!((status, replayed.as_deref()), (200, Some("true")), "{body}");
    // The same key with another amount (or none): a bug.
    for amount in [Some(900), None] {
        let mismatch = client.capture_payment(&held.id, amount, &first_key).await;
        assert!(matches!(mismatch, Err(GatewayError::IdempotencyMismatch { .. })), "{amount:?}: {mismatch:?}");
    }

    // Another key (past the key window, say): Stripe refuses, naming the
    // payment, which says what the first capture took.
    let again = not_capturable(capture(&client, &held.id, Some(1000), &key(2)).await);
    assert_eq!((again.status, again.amount_received, again.amount_capturable), (PaymentStatus::Succeeded, 1000, 0));
    assert_eq!(again, done);
    let (status, replayed, body) = fake.raw_post(&capture_path(&held.id), &key(3), &[]).await;
    assert_eq!((status, replayed), (400, None), "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    let error = &refused["error"];
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("invalid_request_error"), Some("payment_intent_unexpected_state"))
    );
    assert!(error["message"].as_str().unwrap().contains("has already been captured"), "{body}");
    assert_eq!(error["payment_intent"]["id"], held.id.as_str());
    // The refusal is an answer, stored for its key like any other.
    let (status, replayed, _) = fake.raw_post(&capture_path(&held.id), &key(3), &[]).await;
    assert_eq!((status, replayed.as_deref()), (400, Some("true")));

    // One capture, one event, for all those requests.
    let events = settled_payment_events(&receiver, 2).await;
    assert_eq!(event_of(&events, PAYMENT_SUCCEEDED, &held.id), &done);
    assert_eq!(client.retrieve_payment(&held.id).await.unwrap().unwrap(), done);
}

#[tokio::test]
async fn an_authorization_is_released_by_a_cancel_and_is_then_not_capturable() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let held = authorize(&client, "order-release").await;
    let cancel_key = gateway::cancel_key(b"server secret", Uuid::from_u128(1), Uuid::from_u128(1));
    let CancelOutcome::Canceled(released) = client.cancel_payment(&held.id, &cancel_key).await.unwrap() else {
        panic!("an authorization is cancelable");
    };
    assert_eq!(
        (released.status, released.cancellation_reason.as_deref()),
        (PaymentStatus::Canceled, Some("abandoned"))
    );
    assert_eq!((released.amount_capturable, released.amount_received), (0, 0));
    assert_eq!(released.latest_charge, held.latest_charge, "the authorization's charge stays named");
    // The whole authorization is released: refunded on the charge, never captured.
    let authorization = charge(&fake, &released).await;
    assert_eq!(
        (&authorization["captured"], &authorization["refunded"], &authorization["amount_refunded"]),
        (&json!(false), &json!(true), &json!(AMOUNT)),
        "{authorization}"
    );

    let refused = not_capturable(capture(&client, &held.id, None, &key(1)).await);
    assert_eq!(refused, released);
    let (status, _, body) = fake.raw_post(&capture_path(&held.id), &key(2), &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("it has a status of canceled"), "{body}");
    refund_refused(&client, &held.id, None, "charge_not_refundable").await;
    // Canceling again is what was asked for already.
    let other_key = gateway::cancel_key(b"server secret", Uuid::from_u128(1), Uuid::from_u128(2));
    assert!(matches!(client.cancel_payment(&held.id, &other_key).await, Ok(CancelOutcome::Canceled(_))));

    let events = settled_payment_events(&receiver, 2).await;
    assert_eq!(event_of(&events, PAYMENT_AMOUNT_CAPTURABLE_UPDATED, &held.id), &held);
    assert_eq!(event_of(&events, PAYMENT_CANCELED, &held.id), &released);
}

#[tokio::test]
async fn over_captures_and_bad_captures_are_refused_and_store_nothing() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);

    let held = authorize(&client, "order-over").await;
    match client.capture_payment(&held.id, Some(AMOUNT + 1), &key(1)).await {
        Err(error @ GatewayError::Rejected { status: 400, .. }) => {
            assert!(error.is_configuration(), "our request is wrong, not the payment");
            let GatewayError::Rejected { kind, code, param, message, .. } = error else { unreachable!() };
            assert_eq!(
                (kind.as_str(), code.as_deref(), param.as_deref()),
                ("invalid_request_error", Some("amount_too_large"), Some("amount_to_capture"))
            );
            assert!(message.contains("greater than the authorized amount"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    for form in [[("amount_to_capture", "0")], [("amount_to_capture", "ten")], [("amount", "100")]] {
        let (status, _, body) = fake.raw_post(&capture_path(&held.id), &key(1), &form).await;
        assert_eq!(status, 400, "{form:?}: {body}");
        assert!(body.contains("invalid_request_error"), "{body}");
    }
    assert_eq!(client.retrieve_payment(&held.id).await.unwrap().unwrap(), held, "nothing captured");
    // Nothing was stored for the key: it captures now.
    let done = captured(capture(&client, &held.id, Some(AMOUNT), &key(1)).await);
    assert_eq!(done.amount_received, AMOUNT);

    // An unknown payment is the caller's mistake.
    match client.capture_payment("pi_doesnotexist", None, &key(2)).await {
        Err(error @ GatewayError::Rejected { status: 404, .. }) => assert!(error.is_configuration()),
        other => panic!("{other:?}"),
    }
    // A payment captured at once has nothing to capture.
    let PaymentOutcome::Succeeded(paid) =
        client.create_payment(&payment("order-auto", 500, "pm_card_visa"), "order-auto").await.unwrap()
    else {
        panic!("automatic capture is the default");
    };
    assert_eq!((paid.amount_received, paid.amount_capturable), (500, 0));
    assert_eq!(not_capturable(capture(&client, &paid.id, None, &key(3)).await), paid);

    // The capture method is checked like any parameter; `automatic` said
    // aloud is the default.
    let mut form = payment_form("order-bad", "500", "pm_card_visa");
    form.push(("capture_method", "later"));
    let (status, _, body) = fake.raw_post("/v1/payment_intents", "order-bad", &form).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"param\":\"capture_method\""), "{body}");
    let mut form = payment_form("order-said", "500", "pm_card_visa");
    form.push(("capture_method", "automatic"));
    let (status, _, body) = fake.raw_post("/v1/payment_intents", "order-said", &form).await;
    let said: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, said["status"].as_str(), said["capture_method"].as_str()),
        (200, Some("succeeded"), Some("automatic"))
    );
    // A decline is a decline whatever the capture method.
    let declined = payment("order-no", 500, "pm_card_chargeDeclined");
    let outcome = client.create_payment_with_capture(&declined, CaptureMethod::Manual, "order-no").await.unwrap();
    assert!(matches!(outcome, PaymentOutcome::Declined(_)), "{outcome:?}");
}

#[tokio::test]
async fn a_3ds_authorization_waits_for_the_customer_then_for_its_capture() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let request = payment("order-3ds", AMOUNT, THREE_D_SECURE);
    let outcome = client.create_payment_with_capture(&request, CaptureMethod::Manual, "order-3ds").await.unwrap();
    let PaymentOutcome::Pending(waiting) = outcome else { panic!("{outcome:?}") };
    assert_eq!(
        (waiting.status, waiting.amount_capturable, waiting.latest_charge.as_ref()),
        (PaymentStatus::RequiresAction, 0, None)
    );
    // Not authorized yet: nothing to capture.
    let early = not_capturable(capture(&client, &waiting.id, None, &key(1)).await);
    assert_eq!(early.status, PaymentStatus::RequiresAction);

    let path = format!("/payment_intents/{}/authenticate", waiting.id);
    let answer = fake.admin(Method::POST, &path, Some(json!({"result": "succeed"}))).await;
    assert_eq!(answer["status"], "requires_capture", "{answer}");
    let held = client.retrieve_payment(&waiting.id).await.unwrap().unwrap();
    assert_eq!(
        (held.status, held.amount_capturable, held.amount_received),
        (PaymentStatus::RequiresCapture, AMOUNT, 0)
    );
    assert_eq!(charge(&fake, &held).await["captured"], false);

    let done = captured(capture(&client, &waiting.id, None, &key(2)).await);
    assert_eq!((done.status, done.amount_received), (PaymentStatus::Succeeded, AMOUNT));

    let events = settled_payment_events(&receiver, 3).await;
    assert_eq!(event_of(&events, PAYMENT_REQUIRES_ACTION, &waiting.id), &waiting);
    assert_eq!(event_of(&events, PAYMENT_AMOUNT_CAPTURABLE_UPDATED, &waiting.id), &held);
    assert_eq!(event_of(&events, PAYMENT_SUCCEEDED, &waiting.id), &done);
}

#[tokio::test]
async fn capture_faults_are_unknown_and_the_same_key_converges() {
    let mut fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);

    // A stored 500: nothing captured, the key keeps answering 500.
    let first = authorize(&client, "order-e").await;
    fake.arm(json!({"kind": "error_before_charge", "metadata": {"order_id": "order-e"}})).await;
    for _ in 0..2 {
        let CaptureOutcome::Unknown(unknown) = capture(&client, &first.id, None, &key(1)).await else {
            panic!("a 500 is unknown");
        };
        assert_eq!((unknown.reason, unknown.status), (UnknownReason::ServerError, Some(500)));
    }
    assert_eq!(client.retrieve_payment(&first.id).await.unwrap().unwrap(), first);
    // Having looked it up, the caller may capture under a new key.
    assert_eq!(captured(capture(&client, &first.id, None, &key(2)).await).amount_received, AMOUNT);

    // Captured, then the answer dropped or cut: the same key finds it done.
    for (n, kind) in [(3, "drop_after_charge"), (4, "cut_after_charge")] {
        let order = format!("order-{kind}");
        let held = authorize(&client, &order).await;
        fake.arm(json!({"kind": kind, "metadata": {"order_id": order}})).await;
        let CaptureOutcome::Unknown(unknown) = capture(&client, &held.id, Some(700), &key(n)).await else {
            panic!("{kind}: no answer is unknown");
        };
        assert!(
            matches!(unknown.reason, UnknownReason::Connection | UnknownReason::IncompleteResponse),
            "{kind}: {unknown:?}"
        );
        let looked_up = client.retrieve_payment(&held.id).await.unwrap().unwrap();
        assert_eq!((looked_up.status, looked_up.amount_received), (PaymentStatus::Succeeded, 700));
        assert_eq!(captured(capture(&client, &held.id, Some(700), &key(n)).await), looked_up);
    }
    let applied = &fake.stats().await["faults_applied"];
    assert_eq!(
        (
            applied["error_before_charge"].as_u64(),
            applied["drop_after_charge"].as_u64(),
            applied["cut_after_charge"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );

    // On disk before any answer: after kill -9 the key still replays.
    let last = authorize(&client, "order-k").await;
    let done = captured(capture(&client, &last.id, None, &key(5)).await);
    fake.kill_and_restart();
    let client = fake.client(TIMEOUT);
    assert_eq!(captured(capture(&client, &last.id, None, &key(5)).await), done);
    assert_eq!(client.retrieve_payment(&last.id).await.unwrap().unwrap(), done);
}

#[tokio::test]
async fn an_uncaptured_authorization_expires_and_is_canceled_automatically() {
    let mut fake = Fake::start(&["--authorization-expiry-secs", "2"]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);

    let forgotten = authorize(&client, "order-forgotten").await;
    let kept = authorize(&client, "order-kept").await;
    let taken = captured(capture(&client, &kept.id, None, &key(1)).await);
    let authorization = charge(&fake, &forgotten).await;
    let capture_before = authorization["payment_method_details"]["card"]["capture_before"].as_i64().unwrap();
    assert!((now() - 1..=now() + 3).contains(&capture_before), "{authorization}");

    // Its time is kept with it: a restart does not give it more.
    fake.kill_and_restart();
    let client = fake.client(TIMEOUT);
    let expired = eventually(WAIT, async || {
        let now = client.retrieve_payment(&forgotten.id).await.unwrap().unwrap();
        (now.status == PaymentStatus::Canceled).then_some(now)
    })
    .await;
    assert_eq!(expired.cancellation_reason.as_deref(), Some("automatic"));
    assert_eq!((expired.amount_capturable, expired.amount_received), (0, 0));
    let released = charge(&fake, &expired).await;
    assert_eq!((&released["captured"], &released["refunded"]), (&json!(false), &json!(true)), "{released}");
    assert_eq!(not_capturable(capture(&client, &forgotten.id, None, &key(2)).await), expired);
    // The one captured in time is untouched.
    assert_eq!(client.retrieve_payment(&kept.id).await.unwrap().unwrap(), taken);

    let events = settled_payment_events(&receiver, 4).await;
    assert_eq!(event_of(&events, PAYMENT_AMOUNT_CAPTURABLE_UPDATED, &forgotten.id), &forgotten);
    assert_eq!(event_of(&events, PAYMENT_CANCELED, &forgotten.id), &expired);
    assert_eq!(event_of(&events, PAYMENT_SUCCEEDED, &kept.id), &taken);
    assert!(events.iter().all(|(kind, intent)| !(kind == PAYMENT_CANCELED && intent.id == kept.id)));
}
