//! Charge-then-drop, hang and slow faults: the client reports an unknown
//! outcome, and resending with the same key converges on one payment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gateway::{Client, PaymentOutcome, PaymentRequest, UnknownReason};
use serde_json::json;

use crate::support::{metadata, payment, Fake};

#[tokio::test]
async fn charge_then_drop_is_unknown_and_the_retry_finds_the_one_payment() {
    let fake = Fake::start(&[]);
    let client = fake.client(Duration::from_secs(5));
    fake.arm(json!({"kind": "drop_after_charge", "metadata": {"order_id": "order-d"}})).await;

    let first = client.create_payment(&payment("order-d", 1000, "pm_card_visa"), "key-d").await.unwrap();
    let PaymentOutcome::Unknown(unknown) = first else { panic!("{first:?}") };
    assert!(matches!(unknown.reason, UnknownReason::Connection | UnknownReason::IncompleteResponse), "{unknown:?}");
    assert_eq!(unknown.status, None, "no answer arrived");
    // The charge was made before the connection went.
    assert_eq!(fake.payments_of("order-d").await, 1);

    let retry = client.create_payment(&payment("order-d", 1000, "pm_card_visa"), "key-d").await.unwrap();
    assert!(matches!(retry, PaymentOutcome::Succeeded(_)), "{retry:?}");
    assert_eq!(fake.payments_of("order-d").await, 1);
    assert_eq!(fake.stats().await["faults_applied"]["drop_after_charge"], 1);
}

#[tokio::test]
async fn an_answer_cut_halfway_is_unknown_and_the_retry_finds_the_one_payment() {
    let fake = Fake::start(&[]);
    let client = fake.client(Duration::from_secs(5));
    fake.arm(json!({"kind": "cut_after_charge", "metadata": {"order_id": "order-c"}})).await;

    let first = client.create_payment(&payment("order-c", 1000, "pm_card_visa"), "key-c").await.unwrap();
    let PaymentOutcome::Unknown(unknown) = first else { panic!("{first:?}") };
    assert_eq!((unknown.reason, unknown.status), (UnknownReason::IncompleteResponse, Some(200)), "{unknown:?}");

    let retry = client.create_payment(&payment("order-c", 1000, "pm_card_visa"), "key-c").await.unwrap();
    assert!(matches!(retry, PaymentOutcome::Succeeded(_)), "{retry:?}");
    assert_eq!(fake.payments_of("order-c").await, 1);
    assert_eq!(fake.stats().await["faults_applied"]["cut_after_charge"], 1);
}

#[tokio::test]
async fn a_hung_connection_times_out_and_the_retry_replays_at_once() {
    let fake = Fake::start(&[]);
    let client = fake.client(Duration::from_millis(500));
    fake.arm(json!({"kind": "hang_after_charge", "delay_ms": 3000, "metadata": {"order_id": "order-h"}})).await;

    let started = Instant::now();
    let first = client.create_payment(&payment("order-h", 1000, "pm_card_visa"), "key-h").await.unwrap();
    let PaymentOutcome::Unknown(unknown) = first else { panic!("{first:?}") };
    assert_eq!(unknown.reason, UnknownReason::Timeout, "{unknown:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let retry = client.create_payment(&payment("order-h", 1000, "pm_card_visa"), "key-h").await.unwrap();
    assert!(matches!(retry, PaymentOutcome::Succeeded(_)), "{retry:?}");
    assert_eq!(fake.payments_of("order-h").await, 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_retries_converge_on_one_payment() {
    let fake = Fake::start(&[]);
    let client = fake.client(Duration::from_millis(400));
    fake.arm(json!({"kind": "slow_response", "delay_ms": 1200, "metadata": {"order_id": "order-s"}})).await;

    let request = payment("order-s", 1000, "pm_card_visa");
    let mut outcomes = Vec::new();
    let started = Instant::now();
    let intent = loop {
        match client.create_payment(&request, "key-s").await.unwrap() {
            PaymentOutcome::Succeeded(intent) => break intent,
            PaymentOutcome::Unknown(unknown) => outcomes.push(unknown.reason),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no convergence: {outcomes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcomes.first(), Some(&UnknownReason::Timeout), "{outcomes:?}");
    assert!(outcomes.contains(&UnknownReason::InFlight), "retries during the slow answer get 409: {outcomes:?}");
    assert_eq!(intent.metadata["order_id"], "order-s");
    assert_eq!(fake.payments_of("order-s").await, 1);
}

/// Runs `orders` card payments one after another with random faults, as a
/// careful caller would: the same key while the outcome is unknown, and a new
/// attempt only once the provider holds no payment for the current one.
async fn pay_all(client: &Client, orders: usize) -> Vec<Vec<&'static str>> {
    let mut journeys = Vec::new();
    for n in 0..orders {
        let order = format!("order-{n}");
        let mut journey = Vec::new();
        let mut attempt = 1;
        'attempts: loop {
            let request = PaymentRequest {
                amount: 1000 + n as i64,
                currency: "eur".into(),
                payment_method: "pm_card_visa".into(),
                metadata: metadata(&order, attempt),
            };
            let key = format!("{order}-{attempt}");
            for _ in 0..3 {
                match client.create_payment(&request, &key).await.unwrap() {
                    PaymentOutcome::Succeeded(_) => {
                        journey.push("succeeded");
                        break 'attempts;
                    }
                    PaymentOutcome::Unknown(u) if u.reason == UnknownReason::ServerError => journey.push("500"),
                    PaymentOutcome::Unknown(_) => journey.push("unknown"),
                    other => panic!("{other:?}"),
                }
            }
            // The key keeps answering 500: look the attempt up before moving on.
            let metadata: BTreeMap<_, _> = request.metadata.clone();
            let pairs: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert!(client.search_payments(&pairs).await.unwrap().is_empty(), "a stored 500 charged nothing");
            attempt += 1;
        }
        journeys.push(journey);
    }
    journeys
}

#[tokio::test]
async fn seeded_faults_repeat_and_never_charge_an_attempt_twice() {
    let args =
        ["--fault-seed", "7", "--fault-error-rate", "0.2", "--fault-drop-rate", "0.2", "--fault-cut-rate", "0.2"];
    let (one, two) = (Fake::start(&args), Fake::start(&args));
    let first = pay_all(&one.client(Duration::from_secs(5)), 12).await;
    let second = pay_all(&two.client(Duration::from_secs(5)), 12).await;
    assert_eq!(first, second, "the same seed and order give the same faults");

    let stats = one.stats().await;
    let applied = &stats["faults_applied"];
    assert!(applied["error_before_charge"].as_u64() > Some(0), "{stats}");
    assert!(applied["drop_after_charge"].as_u64() > Some(0), "{stats}");
    assert!(applied["cut_after_charge"].as_u64() > Some(0), "{stats}");

    let groups = one.groups().await;
    assert_eq!(groups["max_per_group"], 1, "{groups}");
    let succeeded = groups["groups"].as_array().unwrap().iter().filter(|g| g["payments"][0]["status"] == "succeeded");
    assert_eq!(succeeded.count(), 12, "one payment per order: {groups}");
}

#[tokio::test]
async fn the_latency_holds_every_answer_and_many_wait_at_once() {
    let fake = Fake::start(&["--latency-ms", "1000"]);
    assert_eq!(fake.admin(reqwest::Method::GET, "/latency", None).await, json!({"ms": 1000}));
    let client = fake.client(Duration::from_secs(30));
    // 40 payments at once on the provider's two threads: every answer comes
    // after the latency, and they wait side by side, not two at a time
    // (which would take 20 s)
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let client = client.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let request = payment(&format!("order-l{i}"), 1000, "pm_card_visa");
            let outcome = client.create_payment(&request, &format!("key-l{i}")).await;
            (sent.elapsed(), outcome)
        });
    }
    while let Some(answer) = tasks.join_next().await {
        let (took, outcome) = answer.unwrap();
        assert!(matches!(outcome, Ok(PaymentOutcome::Succeeded(_))), "{outcome:?}");
        assert!(took >= Duration::from_millis(1000), "answered after {took:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "40 answers took {:?}", started.elapsed());
    assert_eq!(fake.stats().await["payments"], 40);

    // changed while running
    let (status, _) = fake.admin_answer(reqwest::Method::PUT, "/latency", Some(json!({"ms": 0}))).await;
    assert_eq!(status, 204);
    let sent = Instant::now();
    let outcome = client.create_payment(&payment("order-now", 1000, "pm_card_visa"), "key-now").await.unwrap();
    assert!(matches!(outcome, PaymentOutcome::Succeeded(_)), "{outcome:?}");
    assert!(sent.elapsed() < Duration::from_millis(1000), "{:?}", sent.elapsed());
}
