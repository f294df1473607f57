//! Refunds after they were made: listed by payment and by period (read after
//! write, all pages), failing later with their amount back on the payment,
//! left pending and settling, and the events each step sends.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway::webhook::{
    Event, EventObject, CHARGE_REFUNDED, CHARGE_REFUND_UPDATED, REFUND_CREATED, REFUND_FAILED, REFUND_UPDATED,
};
use gateway::{
    Client, GatewayError, PaymentIntent, PaymentOutcome, Refund, RefundOutcome, RefundRequest, RefundStatus,
};
use reqwest::Method;
use serde_json::json;

use crate::support::{payment, verify, Fake, WebhookReceiver};

const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn pay(client: &Client, order: &str, amount: i64) -> PaymentIntent {
    match client.create_payment(&payment(order, amount, "pm_card_visa"), order).await.unwrap() {
        PaymentOutcome::Succeeded(intent) => intent,
        other => panic!("{other:?}"),
    }
}

async fn refund(client: &Client, payment_intent: &str, amount: i64, key: &str) -> Refund {
    let request = RefundRequest {
        payment_intent: payment_intent.to_owned(),
        amount: Some(amount),
        metadata: BTreeMap::from([("refund_reference".to_owned(), key.to_owned())]),
    };
    match client.create_refund(&request, key).await.unwrap() {
        RefundOutcome::Created(refund) => refund,
        other => panic!("{other:?}"),
    }
}

fn ids(refunds: &[Refund]) -> Vec<&str> {
    refunds.iter().map(|r| r.id.as_str()).collect()
}

/// The events received from the `from`-th on, once there are `until`, verified.
async fn events(receiver: &WebhookReceiver, from: usize, until: usize) -> Vec<Event> {
    let received = receiver.wait_for(until, WAIT).await;
    received[from..until].iter().map(|r| verify(r).expect("a good signature")).collect()
}

fn refund_of(event: &Event) -> Refund {
    match event.object().unwrap() {
        EventObject::Refund(refund) => refund,
        other => panic!("{}: {other:?}", event.kind),
    }
}

fn kinds(events: &[Event]) -> Vec<&str> {
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn refunds_are_listed_by_payment_and_by_period_newest_first_over_all_pages() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    let from = now_secs();
    let first = pay(&client, "order-1", 10_000).await;
    let second = pay(&client, "order-2", 10_000).await;
    // More than one page of the client's (100) for the first payment.
    let mut made = Vec::new();
    for n in 0..102 {
        made.push(refund(&client, &first.id, 1, &format!("r1-{n}")).await);
    }
    let other = refund(&client, &second.id, 500, "r2-0").await;
    let until = now_secs() + 1;

    // At once, and all of them: a list is read after write.
    let listed = client.list_refunds(&first.id).await.unwrap();
    let newest_first: Vec<&str> = made.iter().rev().map(|r| r.id.as_str()).collect();
    assert_eq!(ids(&listed), newest_first);
    assert!(listed.iter().all(|r| r.payment_intent.as_deref() == Some(first.id.as_str())));
    assert_eq!(client.list_refunds(&second.id).await.unwrap(), std::slice::from_ref(&other));
    assert_eq!(listed[0], made[101], "the listed refund is the one made");

    let all = client.list_all_refunds(from, until).await.unwrap();
    assert_eq!(all.len(), 103);
    assert_eq!(all[0].id, other.id);
    assert!(client.list_all_refunds(from - 3600, from).await.unwrap().is_empty());
    assert!(client.list_all_refunds(until, until + 3600).await.unwrap().is_empty());

    // A payment without refunds has none; an id that cannot be one has none;
    // an unknown one is the caller's mistake, not an empty list.
    let third = pay(&client, "order-3", 100).await;
    assert!(client.list_refunds(&third.id).await.unwrap().is_empty());
    assert!(client.list_refunds("").await.unwrap().is_empty());
    assert!(client.list_refunds("pi_1&limit=1").await.unwrap().is_empty());
    match client.list_refunds("pi_doesnotexist").await {
        Err(error @ GatewayError::Rejected { status: 400, .. }) => {
            assert!(error.is_configuration());
            let GatewayError::Rejected { code, param, .. } = error else { unreachable!() };
            assert_eq!((code.as_deref(), param.as_deref()), (Some("resource_missing"), Some("payment_intent")));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_refund_list_pages_both_ways_and_filters_as_stripe_does() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    let first = pay(&client, "order-1", 1000).await;
    let second = pay(&client, "order-2", 1000).await;
    let a = refund(&client, &first.id, 100, "a").await;
    let b = refund(&client, &second.id, 100, "b").await;
    let c = refund(&client, &first.id, 100, "c").await;
    let d = refund(&client, &first.id, 100, "d").await;

    let page = |value: &serde_json::Value| -> (Vec<String>, bool) {
        let ids = value["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        (ids, value["has_more"].as_bool().unwrap())
    };
    let (status, body) = fake.raw_get("/v1/refunds", &[("limit", "2")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["object"].as_str(), body["url"].as_str()), (Some("list"), Some("/v1/refunds")));
    assert_eq!(body["data"][0]["object"], "refund");
    assert_eq!(page(&body), (vec![d.id.clone(), c.id.clone()], true));
    let (_, body) = fake.raw_get("/v1/refunds", &[("limit", "2"), ("starting_after", &c.id)]).await;
    assert_eq!(page(&body), (vec![b.id.clone(), a.id.clone()], false));
    let (_, body) = fake.raw_get("/v1/refunds", &[("limit", "2"), ("ending_before", &a.id)]).await;
    assert_eq!(page(&body), (vec![c.id.clone(), b.id.clone()], true));
    // Filters, and a cursor that is not among what they select.
    let (_, body) = fake.raw_get("/v1/refunds", &[("payment_intent", &first.id), ("starting_after", &d.id)]).await;
    assert_eq!(page(&body), (vec![c.id.clone(), a.id.clone()], false));
    let (_, body) =
        fake.raw_get("/v1/refunds", &[("charge", second.latest_charge.as_deref().unwrap()), ("limit", "1")]).await;
    assert_eq!(page(&body), (vec![b.id.clone()], false));
    let (_, body) = fake.raw_get("/v1/refunds", &[("payment_intent", &first.id), ("ending_before", &b.id)]).await;
    assert_eq!(page(&body), (vec![d.id.clone(), c.id.clone()], false));
    let created = a.created.to_string();
    let (_, body) = fake.raw_get("/v1/refunds", &[("created[gte]", &created), ("created[lte]", &created)]).await;
    assert!(page(&body).0.contains(&a.id), "{body}");
    let (_, body) = fake.raw_get("/v1/refunds", &[("created[gt]", &created), ("created[lt]", &created)]).await;
    assert_eq!(page(&body), (vec![], false));

    for (query, param) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "101")], "limit"),
        (vec![("customer", "cus_1")], "customer"),
        (vec![("created[gte]", "yesterday")], "created[gte]"),
        (vec![("starting_after", "re_doesnotexist")], "starting_after"),
        (vec![("charge", "ch_doesnotexist")], "charge"),
        (vec![("starting_after", a.id.as_str()), ("ending_before", b.id.as_str())], "ending_before"),
    ] {
        let (status, body) = fake.raw_get("/v1/refunds", &query).await;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{query:?}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn a_refund_fails_later_and_its_amount_is_the_payments_again() {
    let mut fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);
    let paid = pay(&client, "order-f", 1000).await;
    // Its event first, so that each step's events are told apart by order.
    receiver.wait_for(1, WAIT).await;
    let made = refund(&client, &paid.id, 400, "refund-f").await;
    assert_eq!(made.status, RefundStatus::Succeeded);

    // Made: the refund and the charge are announced.
    let created = events(&receiver, 1, 3).await;
    assert_eq!(kinds(&created), [CHARGE_REFUNDED, REFUND_CREATED]);
    let announced = refund_of(created.iter().find(|e| e.kind == REFUND_CREATED).unwrap());
    assert_eq!(announced, made);
    assert_eq!(announced.metadata["refund_reference"], "refund-f");

    // The card was closed: the refund fails, and the payment has its 400 back.
    let failed = fake.admin(Method::POST, &format!("/refunds/{}/fail", made.id), None).await;
    assert_eq!(
        (failed["status"].as_str(), failed["failure_reason"].as_str()),
        (Some("failed"), Some("lost_or_stolen_card"))
    );
    let failure = events(&receiver, 3, 5).await;
    assert_eq!(kinds(&failure), [CHARGE_REFUND_UPDATED, REFUND_FAILED]);
    for event in &failure {
        let refund = refund_of(event);
        assert_eq!((refund.id.as_str(), refund.status), (made.id.as_str(), RefundStatus::Failed));
        assert_eq!(refund.failure_reason.as_deref(), Some("lost_or_stolen_card"));
        assert_eq!(refund.metadata, made.metadata);
        assert_eq!(event.data.object["payment_intent"], paid.id.as_str());
    }
    assert_eq!(client.list_refunds(&paid.id).await.unwrap()[0].status, RefundStatus::Failed);
    let payments = fake.admin(Method::GET, "/payments", None).await;
    assert_eq!(payments["data"][0]["amount_refunded"], 0);

    // A failed refund cannot fail again; an unknown one is not there.
    let path = format!("/refunds/{}/fail", made.id);
    assert_eq!(fake.admin_answer(Method::POST, &path, None).await.0, 400);
    assert_eq!(fake.admin_answer(Method::POST, "/refunds/re_doesnotexist/fail", None).await.0, 404);
    assert_eq!(fake.admin_answer(Method::POST, &format!("/refunds/{}/succeed", made.id), None).await.0, 400);

    // The whole payment can be refunded again; this one fails for another
    // reason, and all of it survives kill -9.
    let whole = refund(&client, &paid.id, 1000, "refund-f-2").await;
    let reason = json!({"failure_reason": "expired_or_canceled_card"});
    let failed = fake.admin(Method::POST, &format!("/refunds/{}/fail", whole.id), Some(reason)).await;
    assert_eq!(failed["failure_reason"], "expired_or_canceled_card");
    fake.kill_and_restart();
    let client = fake.client(TIMEOUT);
    let listed = client.list_refunds(&paid.id).await.unwrap();
    let fates: Vec<_> = listed.iter().map(|r| (r.id.as_str(), r.status, r.failure_reason.as_deref())).collect();
    assert_eq!(
        fates,
        [
            (whole.id.as_str(), RefundStatus::Failed, Some("expired_or_canceled_card")),
            (made.id.as_str(), RefundStatus::Failed, Some("lost_or_stolen_card")),
        ]
    );
    let payments = fake.admin(Method::GET, "/payments", None).await;
    assert_eq!(payments["data"][0]["amount_refunded"], 0);
    refund(&client, &paid.id, 1000, "refund-f-3").await;
}

#[tokio::test]
async fn an_armed_pending_refund_counts_as_refunded_until_it_settles_or_fails() {
    let fake = Fake::start(&[]);
    let receiver = WebhookReceiver::start();
    fake.set_webhook_endpoint(&receiver.url).await;
    let client = fake.client(TIMEOUT);
    let paid = pay(&client, "order-p", 1000).await;
    receiver.wait_for(1, WAIT).await;
    fake.arm(json!({"kind": "refund_pending", "count": 2, "metadata": {"order_id": "order-p"}})).await;

    let pending = refund(&client, &paid.id, 600, "refund-p").await;
    assert_eq!(pending.status, RefundStatus::Pending);
    let created = events(&receiver, 1, 3).await;
    assert_eq!(refund_of(created.iter().find(|e| e.kind == REFUND_CREATED).unwrap()).status, RefundStatus::Pending);
    // Its amount is taken already: only 400 is left.
    let over = RefundRequest { payment_intent: paid.id.clone(), amount: Some(401), metadata: BTreeMap::new() };
    match client.create_refund(&over, "refund-p-over").await {
        Err(GatewayError::Rejected { code, .. }) => assert_eq!(code.as_deref(), Some("amount_too_large")),
        other => panic!("{other:?}"),
    }

    let settled = fake.admin(Method::POST, &format!("/refunds/{}/succeed", pending.id), None).await;
    assert_eq!(settled["status"], "succeeded");
    let updated = events(&receiver, 3, 5).await;
    assert_eq!(kinds(&updated), [CHARGE_REFUND_UPDATED, REFUND_UPDATED]);
    assert!(updated.iter().all(|e| refund_of(e).status == RefundStatus::Succeeded));
    assert_eq!(client.list_refunds(&paid.id).await.unwrap()[0].status, RefundStatus::Succeeded);

    // The second armed one is pending too, and fails instead (a form body).
    let second = refund(&client, &paid.id, 400, "refund-p-2").await;
    assert_eq!(second.status, RefundStatus::Pending);
    events(&receiver, 5, 7).await;
    let response = reqwest::Client::new()
        .post(format!("{}/_fake/refunds/{}/fail", fake.url(), second.id))
        .form(&[("failure_reason", "declined")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let failed = events(&receiver, 7, 9).await;
    assert_eq!(kinds(&failed), [CHARGE_REFUND_UPDATED, REFUND_FAILED]);
    assert!(failed.iter().all(|e| refund_of(e).failure_reason.as_deref() == Some("declined")));
    let payments = fake.admin(Method::GET, "/payments", None).await;
    assert_eq!(payments["data"][0]["amount_refunded"], 600);

    // Spent: the next refund succeeds at once.
    assert_eq!(refund(&client, &paid.id, 400, "refund-p-3").await.status, RefundStatus::Succeeded);
    assert_eq!(fake.stats().await["faults_applied"]["refund_pending"], 2);
}

#[tokio::test]
async fn concurrent_refunds_of_one_payment_never_exceed_it() {
    let fake = Fake::start(&[]);
    let client = fake.client(TIMEOUT);
    let paid = pay(&client, "order-c", 1000).await;
    // Ten fit. Each refund builds on those before it, even one not on disk
    // yet, so none more does.
    let mut created = 0;
    for round in 0..10 {
        let attempts = (0..2).map(|n| {
            let (client, payment_intent) = (client.clone(), paid.id.clone());
            let request = RefundRequest { payment_intent, amount: Some(100), metadata: BTreeMap::new() };
            tokio::spawn(async move { client.create_refund(&request, &format!("refund-{round}-{n}")).await })
        });
        for attempt in attempts.collect::<Vec<_>>() {
            match attempt.await.unwrap() {
                Ok(RefundOutcome::Created(_)) => created += 1,
                Err(GatewayError::Rejected { code, .. }) => {
                    assert_eq!(code.as_deref(), Some("charge_already_refunded"))
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let refunded: i64 = client.list_refunds(&paid.id).await.unwrap().iter().map(|r| r.amount).sum();
    assert_eq!((created, refunded), (10, 1000));
    let payments = fake.admin(Method::GET, "/payments", None).await;
    assert_eq!(payments["data"][0]["amount_refunded"], 1000);
}
