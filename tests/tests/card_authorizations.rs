//! Card authorizations through the fake provider: `"capture": false` on a
//! card asks for a manual capture; the capture and the void are effects at
//! the provider through the one protocol (`service::effects`), killed at each
//! of their phase boundaries here; one of a capture, a void and the expiry
//! ends an authorization, at the provider as in the ledger.

use std::ops::Deref;
use std::time::Duration;

use awc::http::StatusCode;
use ledger_tests::api_process::{post, ApiProcess, Reply};
use ledger_tests::card_shop::CardShop;
use rust_decimal::Decimal;
use serde_json::{json, Value};

struct Shop(CardShop);

impl Deref for Shop {
    type Target = CardShop;
    fn deref(&self) -> &CardShop {
        &self.0
    }
}

async fn shop() -> Shop {
    Shop(CardShop::new().await)
}

const ORDER: &str = "o1";

impl Shop {
    /// Authorizes 25.00 (fee 2.50) on a card for `order`: `authorized`.
    async fn authorize(&self, order: &str) -> String {
        let body = json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
                          "seller_account_id": self.seller, "amount": "25.00", "currency": "USD",
                          "platform_fee": {"account_id": self.platform, "amount": "2.50"}, "capture": false});
        let made = self.app.post("/v1/charges", &self.key, &format!("{order}:1"), body).await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        let charge = made.json();
        assert_eq!(charge["status"], "authorized", "{charge}");
        made.id()
    }

    async fn capture(&self, charge: &str, idem: &str, amount: Option<&str>) -> ledger_tests::Answer {
        let mut body = json!({"reference": format!("{charge}:ship")});
        if let Some(amount) = amount {
            body["amount"] = amount.into();
        }
        self.app.post(&format!("/v1/charges/{charge}/capture"), &self.key, idem, body).await
    }

    async fn void(&self, charge: &str, idem: &str) -> ledger_tests::Answer {
        let body = json!({"reference": format!("{charge}:cancel")});
        self.app.post(&format!("/v1/charges/{charge}/void"), &self.key, idem, body).await
    }

    async fn payment(&self, order: &str) -> Value {
        let payments = self.fake.payments_of(order).await;
        assert_eq!(payments.len(), 1, "one provider payment for the order: {payments:?}");
        payments[0].clone()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.scalar(sql).await
    }

    /// The seller's balance in the ledger.
    async fn seller_balance(&self) -> Decimal {
        self.app.balance(&self.key, &self.seller).await.parse().unwrap()
    }

    /// Exactly one capture of 20.00 of the 25.00 held, at the provider and
    /// in the ledger, with its events.
    async fn assert_captured_once(&self, answer: &Value) {
        assert_eq!((answer["status"].as_str(), answer["amount"].as_str()), (Some("succeeded"), Some("20.00")));
        let payment = self.payment(ORDER).await;
        assert_eq!((payment["status"].as_str(), payment["amount_received"].as_i64()), (Some("succeeded"), Some(2000)));
        assert_eq!(self.count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
        assert_eq!(self.seller_balance().await, Decimal::new(1750, 2), "20.00 less the platform's 2.50");
        assert_eq!(self.count("SELECT count(*) FROM outbox WHERE event_type = 'charge.captured'").await, 1);
        assert_eq!(self.count("SELECT count(*) FROM outbox WHERE event_type = 'charge.voided'").await, 0);
        self.audit_clean().await;
    }

    /// Exactly one void: the payment cancelled at the provider, nothing in
    /// the ledger, one event.
    async fn assert_voided_once(&self, answer: &Value, reason: &str) {
        assert_eq!(answer["status"], "voided", "{answer}");
        assert_eq!(answer["authorization"]["void_reason"], reason, "{answer}");
        assert_eq!(self.payment(ORDER).await["status"], "canceled");
        assert_eq!(self.count("SELECT count(*) FROM ledger_transactions").await, 0, "a card hold moves nothing");
        assert_eq!(self.count("SELECT count(*) FROM outbox WHERE event_type = 'charge.voided'").await, 1);
        assert_eq!(self.count("SELECT count(*) FROM outbox WHERE event_type = 'charge.captured'").await, 0);
        self.audit_clean().await;
    }

    /// The capture, to a real `ledger-api` process.
    async fn capture_at(&self, api: &ApiProcess, charge: &str) -> Result<Reply, String> {
        let body = json!({"reference": format!("{charge}:ship"), "amount": "20.00"});
        let url = api.url(&format!("/v1/charges/{charge}/capture"));
        post(&url, &self.key, "o1:capture", &body, Duration::from_secs(30)).await
    }

    async fn void_at(&self, api: &ApiProcess, charge: &str) -> Result<Reply, String> {
        let body = json!({"reference": format!("{charge}:cancel")});
        post(&api.url(&format!("/v1/charges/{charge}/void")), &self.key, "o1:void", &body, Duration::from_secs(30))
            .await
    }

    /// A provider client for the expirer, pointed at this shop's provider.
    fn payments(&self) -> service::provider::Provider {
        service::provider::Provider::new(&self.worker_config().gateway).unwrap()
    }
}

#[actix_web::test]
async fn a_card_authorization_is_held_by_the_provider_and_a_partial_capture_books_only_what_was_taken() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let held = s.app.get(&format!("/v1/charges/{charge}"), &s.key).await.json();
    assert_eq!(held["authorization"]["amount"], "25.00");
    assert_eq!(held["authorization"]["hold_transaction_id"], Value::Null, "the issuer holds it, not the ledger");
    let payment = s.payment(ORDER).await;
    assert_eq!(
        (payment["status"].as_str(), payment["capture_method"].as_str()),
        (Some("requires_capture"), Some("manual"))
    );
    assert_eq!(s.count("SELECT count(*) FROM ledger_transactions").await, 0);
    assert_eq!(s.count("SELECT count(*) FROM outbox WHERE event_type = 'charge.authorized'").await, 1);

    let captured = s.capture(&charge, "o1:capture", Some("20.00")).await;
    assert_eq!(captured.status, StatusCode::OK, "{captured:?}");
    s.assert_captured_once(&captured.json()).await;
    // the same reference under another key is the same capture, not a second one
    let again = s.capture(&charge, "o1:capture:again", Some("20.00")).await;
    assert_eq!((again.status, again.natural_key_replayed), (StatusCode::OK, true), "{again:?}");
    s.assert_captured_once(&again.json()).await;
    // a void after the capture is refused, not a 500
    let late = s.void(&charge, "o1:void").await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{late:?}");
    assert_eq!(late.json()["code"], "charge_not_authorized");
    // a refund applies to what was captured only
    let refunds = format!("/v1/charges/{charge}/refunds");
    let too_much = s.app.post(&refunds, &s.key, "o1:refund:1", json!({"reference": "r1", "amount": "20.01"})).await;
    assert_eq!(too_much.json()["code"], "refund_exceeds_charge", "{too_much:?}");
    let refunded = s.app.post(&refunds, &s.key, "o1:refund:2", json!({"reference": "r2", "amount": "5.00"})).await;
    assert_eq!(refunded.status, StatusCode::CREATED, "{refunded:?}");
    assert_eq!(s.payment(ORDER).await["amount_refunded"], 500);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_void_cancels_the_card_authorization_at_the_provider_and_frees_the_order() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let voided = s.void(&charge, "o1:void").await;
    assert_eq!(voided.status, StatusCode::OK, "{voided:?}");
    s.assert_voided_once(&voided.json(), "requested").await;
    assert_eq!(s.payment(ORDER).await["cancellation_reason"], "requested_by_customer");
    let capture = s.capture(&charge, "o1:capture", None).await;
    assert_eq!(
        (capture.status, capture.json()["code"].as_str()),
        (StatusCode::CONFLICT, Some("charge_not_authorized"))
    );
    // the order's next attempt may follow
    let body = json!({"order_id": ORDER, "attempt": 2, "payment_method": "pm_card_visa",
                      "seller_account_id": s.seller, "amount": "25.00", "currency": "USD"});
    let next = s.app.post("/v1/charges", &s.key, "o1:2", body).await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
}

#[actix_web::test]
async fn a_card_authorization_holds_at_most_the_networks_seven_days() {
    let s = shop().await;
    let body = json!({"order_id": ORDER, "attempt": 1, "payment_method": "pm_card_visa",
                      "seller_account_id": s.seller, "amount": "25.00", "currency": "USD",
                      "capture": false, "expires_in": 604_801});
    let refused = s.app.post("/v1/charges", &s.key, "o1:1", body).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert_eq!(refused.json()["code"], "invalid_authorization");
    assert!(s.fake.payments_of(ORDER).await.is_empty(), "nothing sent");
    assert_eq!(s.count("SELECT count(*) FROM charges").await, 0);
}

#[actix_web::test]
async fn capture_and_void_racing_on_a_card_authorization_have_one_winner_at_the_provider_and_in_the_ledger() {
    let s = shop().await;
    for round in 0..8 {
        let order = format!("race-{round}");
        let charge = s.authorize(&order).await;
        let (capture_key, void_key) = (format!("{order}:capture"), format!("{order}:void"));
        let (capture, void) =
            futures::join!(s.capture(&charge, &capture_key, Some("20.00")), s.void(&charge, &void_key));
        let won = [capture.status, void.status].iter().filter(|st| **st == StatusCode::OK).count();
        assert_eq!(won, 1, "exactly one winner: {capture:?} {void:?}");
        let loser = if capture.status == StatusCode::OK { &void } else { &capture };
        assert_eq!(loser.status, StatusCode::CONFLICT, "{loser:?}");
        let payment = s.payment(&order).await;
        let expected = if capture.status == StatusCode::OK { "succeeded" } else { "canceled" };
        assert_eq!(payment["status"], expected, "the provider agrees with the winner");
    }
    let captured = s.count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await;
    assert_eq!(s.count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, captured);
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type IN ('charge.captured', 'charge.voided')").await,
        8
    );
    s.audit_clean().await;
}

#[actix_web::test]
async fn the_expirer_cancels_a_card_authorization_past_its_deadline_at_the_provider_once() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    s.app
        .db
        .client()
        .await
        .execute("UPDATE charge_authorizations SET expires_at = now() - interval '1 second'", &[])
        .await
        .unwrap();
    // a capture past the deadline is refused before the expirer runs
    let late = s.capture(&charge, "o1:capture", None).await;
    assert_eq!((late.status, late.json()["code"].as_str()), (StatusCode::CONFLICT, Some("authorization_expired")));
    let (pool, payments) = (ledger::db::pool(&s.app.db.url, &Default::default()).unwrap(), s.payments());
    let (a, b) =
        futures::join!(workers::expirer::once(&pool, Some(&payments)), workers::expirer::once(&pool, Some(&payments)));
    assert!(a.unwrap() + b.unwrap() >= 1, "found due");
    let after = s.app.get(&format!("/v1/charges/{charge}"), &s.key).await.json();
    s.assert_voided_once(&after, "expired").await;
    assert_eq!(s.payment(ORDER).await["cancellation_reason"], "abandoned");
    assert_eq!(workers::expirer::once(&pool, Some(&payments)).await.unwrap(), 0, "nothing left due");
}

#[actix_web::test]
async fn a_capture_that_finds_the_authorization_expired_at_the_provider_voids_it() {
    let s = Shop(CardShop::with(&["--authorization-expiry-secs", "1"], false, |_| {}).await);
    let charge = s.authorize(ORDER).await;
    ledger_tests::eventually(20, "the provider expires the authorization", || async {
        s.payment(ORDER).await["status"] == "canceled"
    })
    .await;
    let capture = s.capture(&charge, "o1:capture", Some("20.00")).await;
    assert_eq!(capture.status, StatusCode::CONFLICT, "{capture:?}");
    assert_eq!(capture.json()["code"], "authorization_expired");
    let again = s.capture(&charge, "o1:capture", Some("20.00")).await;
    assert!(again.replayed && again.body == capture.body, "the one answer, replayed: {again:?}");
    let after = s.app.get(&format!("/v1/charges/{charge}"), &s.key).await.json();
    s.assert_voided_once(&after, "expired").await;
    assert_eq!(after["amount"], "25.00", "what was held, nothing taken");
}

// ---- killed at each phase boundary ------------------------------------------

#[actix_web::test]
async fn killed_after_the_captures_first_transaction_the_retry_captures_once() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let retry = s.crash_then_retry("capture-after-begin", async |api| s.capture_at(api, &charge).await).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    s.assert_captured_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_provider_captured_the_retry_records_that_capture() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let retry = s.crash_then_retry("capture-after-provider", async |api| s.capture_at(api, &charge).await).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert!(s.fake.stats().await["replays"].as_u64().unwrap_or(0) >= 1, "the same key: {}", s.fake.stats().await);
    s.assert_captured_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_captures_second_transaction_the_retry_is_replayed() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let retry = s.crash_then_retry("capture-after-complete", async |api| s.capture_at(api, &charge).await).await;
    assert_eq!((retry.status, retry.replayed), (StatusCode::OK, true), "{retry:?}");
    s.assert_captured_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_provider_cancelled_the_retry_records_that_void() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let retry = s.crash_then_retry("void-after-provider", async |api| s.void_at(api, &charge).await).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    s.assert_voided_once(&retry.body, "requested").await;
}

#[actix_web::test]
async fn killed_after_the_voids_first_transaction_the_completer_cancels_it_once() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let mut victim = s.api(Some("void-after-begin")).await;
    assert!(s.void_at(&victim, &charge).await.is_err(), "died before answering");
    assert!(victim.exited(Duration::from_secs(10)).await.is_some_and(|st| !st.success()));
    assert_eq!(s.payment(ORDER).await["status"], "requires_capture", "the provider was not asked");
    // nothing else may end it meanwhile
    let capture = s.capture(&charge, "o1:capture", None).await;
    assert_eq!(
        (capture.status, capture.json()["code"].as_str()),
        (StatusCode::CONFLICT, Some("charge_not_authorized"))
    );

    let mut completer = s.completer_process(None);
    ledger_tests::eventually(20, "the completer cancels the authorization", || async {
        s.count("SELECT count(*) FROM charges WHERE status = 'voided'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();
    let api = s.api(None).await;
    let retry = s.void_at(&api, &charge).await.expect("answered");
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    s.assert_voided_once(&retry.body, "requested").await;
}

#[actix_web::test]
async fn the_completer_killed_after_the_provider_captured_is_resumed_once() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let mut victim = s.api(Some("capture-after-begin")).await;
    assert!(s.capture_at(&victim, &charge).await.is_err(), "died before answering");
    assert!(victim.exited(Duration::from_secs(10)).await.is_some_and(|st| !st.success()));

    let mut dying = s.completer_process(Some("completer-after-provider"));
    let status = tokio::task::spawn_blocking(move || dying.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the completer died at its point");
    assert_eq!(s.count("SELECT count(*) FROM charges WHERE status = 'capturing'").await, 1, "nothing recorded");
    assert_eq!(s.payment(ORDER).await["status"], "succeeded", "the provider captured");

    let mut completer = s.completer_process(None);
    ledger_tests::eventually(20, "the restarted completer records the capture", || async {
        s.count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();
    let api = s.api(None).await;
    let retry = s.capture_at(&api, &charge).await.expect("answered");
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    s.assert_captured_once(&retry.body).await;
}

#[actix_web::test]
async fn an_expirer_killed_after_the_provider_cancelled_leaves_the_void_to_the_completer_once() {
    let s = shop().await;
    let charge = s.authorize(ORDER).await;
    let client = s.app.db.client().await;
    client.execute("UPDATE charge_authorizations SET expires_at = now() - interval '1 second'", &[]).await.unwrap();
    let mut config = s.completer_config(1);
    config.expirer_poll_ms = 50;
    let mut dying = ledger_tests::spawn_worker_process(&config, "expirer", Some("expirer-after-provider"));
    let status = tokio::task::spawn_blocking(move || dying.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the expirer died at its point");
    assert_eq!(s.count("SELECT count(*) FROM charges WHERE status = 'voiding'").await, 1, "nothing recorded");
    assert_eq!(s.payment(ORDER).await["status"], "canceled", "the provider cancelled it");

    let mut completer = s.completer_process(None);
    ledger_tests::eventually(20, "the completer records the void", || async {
        s.count("SELECT count(*) FROM charges WHERE status = 'voided'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();
    let after = s.app.get(&format!("/v1/charges/{charge}"), &s.key).await.json();
    s.assert_voided_once(&after, "expired").await;
}
