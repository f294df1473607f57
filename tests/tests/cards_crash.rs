//! Card charges with the real processes killed at every phase boundary:
//! after the first transaction, after the provider answered and before the
//! second, after the second and before the response, and inside the
//! completer. Each ends with one provider payment for the order attempt (as
//! the fake provider counts them), one ledger transaction, the final answer
//! on retry and a clean audit.

use std::ops::Deref;
use std::time::Duration;

use awc::http::StatusCode;
use ledger_tests::api_process::{post, ApiProcess, Reply};
use ledger_tests::card_shop::CardShop;
use ledger_tests::spawn_worker_process;
use serde_json::{json, Value};
use service::effects::COMPLETER_AFTER_CLAIM;

struct Shop {
    card: CardShop,
    charge: Value,
}

impl Deref for Shop {
    type Target = CardShop;
    fn deref(&self) -> &CardShop {
        &self.card
    }
}

/// Accounts made through the in-process server; the charge goes to the real
/// `ledger-api` process pointed at the same fake provider.
async fn shop() -> Shop {
    let card = CardShop::new().await;
    let charge = json!({"order_id": "o1", "attempt": 1, "payment_method": "pm_card_visa",
                        "seller_account_id": card.seller, "amount": "12.00", "currency": "USD",
                        "platform_fee": {"account_id": card.platform, "amount": "1.20"}});
    Shop { card, charge }
}

impl Shop {
    async fn charge(&self, api: &ApiProcess) -> Result<Reply, String> {
        post(&api.url("/v1/charges"), &self.key, "o1:1", &self.charge, Duration::from_secs(30)).await
    }

    /// `CardShop::crash_then_retry` with the charge.
    async fn crash_then_retry(&self, point: &str) -> Reply {
        self.card.crash_then_retry(point, async |api| self.charge(api).await).await
    }

    async fn assert_paid_once(&self, answer: &Value) {
        let payments = self.fake.payments_of("o1").await;
        assert_eq!(payments.len(), 1, "one provider payment: {payments:?}");
        assert_eq!(self.fake.max_payments_per_attempt().await, 1);
        assert_eq!(answer["status"], "succeeded", "{answer}");
        assert_eq!(answer["provider_payment_id"], payments[0]["id"]);
        assert_eq!(self.scalar("SELECT count(*) FROM charges").await, 1);
        assert_eq!(self.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
        assert_eq!(self.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
        self.audit_clean().await;
    }
}

#[actix_web::test]
async fn killed_after_the_first_transaction_the_retry_asks_the_provider_once() {
    let s = shop().await;
    let retry = s.crash_then_retry("card-after-charge-created").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed);
    s.assert_paid_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_provider_answered_the_retry_records_that_payment() {
    let s = shop().await;
    let retry = s.crash_then_retry("card-after-provider").await;
    // the provider charged before the crash; the retry's same key replays that payment
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(s.fake.stats().await["replays"].as_u64().unwrap_or(0), 1, "{}", s.fake.stats().await);
    s.assert_paid_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_second_transaction_the_retry_is_replayed() {
    let s = shop().await;
    let retry = s.crash_then_retry("card-after-complete").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(retry.replayed, "the stored final answer");
    s.assert_paid_once(&retry.body).await;
}

#[actix_web::test]
async fn the_completer_killed_after_the_provider_answered_is_resumed_once() {
    let s = shop().await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o1"}})).await;
    let api = s.api(None).await;
    let first = s.charge(&api).await.expect("answered");
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");

    let mut victim = s.completer_process(Some("completer-after-provider"));
    let status = tokio::task::spawn_blocking(move || victim.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the completer died at its point");
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'processing'").await, 1, "nothing recorded");

    let mut completer = s.completer_process(None);
    ledger_tests::eventually(20, "the restarted completer completes the charge", || async {
        s.scalar("SELECT count(*) FROM charges WHERE status = 'succeeded'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();

    let retry = s.charge(&api).await.expect("answered");
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    let again = s.charge(&api).await.expect("answered");
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    s.assert_paid_once(&retry.body).await;
}

/// A payment left waiting for the buyer's authentication past its window
/// is cancelled by the completer; killed right after the cancel (before it
/// recorded anything), the restarted completer finds the payment cancelled
/// and records the decline once, and the order is free again.
#[actix_web::test]
async fn the_completer_killed_after_cancelling_an_unauthenticated_payment_records_it_once() {
    let mut s = shop().await;
    s.charge["payment_method"] = json!("pm_card_threeDSecure2Required");
    let api = s.api_with(&[("GATEWAY_ACTION_WINDOW_SECS", "1"), ("GATEWAY_TIMEOUT_MS", "5000")]).await;
    let first = s.charge(&api).await.expect("answered");
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(first.body["status"], "requires_action");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut config = s.completer_config(1);
    config.gateway.gateway_action_window_secs = 1;
    let completer = |crash_at: Option<&str>| spawn_worker_process(&config, "completer", crash_at);
    let mut victim = completer(Some("completer-after-provider"));
    let status = tokio::task::spawn_blocking(move || victim.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the completer died at its point");
    let payments = s.fake.payments_of("o1").await;
    assert_eq!(payments[0]["status"], "canceled", "cancelled at the provider before the crash: {payments:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'requires_action'").await, 1, "nothing recorded");

    let mut again = completer(None);
    ledger_tests::eventually(20, "the restarted completer records the cancelled payment", || async {
        s.scalar("SELECT count(*) FROM charges WHERE status = 'failed'").await == 1
    })
    .await;
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(s.fake.payments_of("o1").await.len(), 1, "one payment, cancelled once");
    let answer = s.charge(&api).await.expect("answered");
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED, "{answer:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions").await, 0);
    s.audit_clean().await;
}

/// A completer that stops after its claim (a frozen host; or a scan whose
/// earlier provider calls each took their timeout) and goes on after a
/// client's retry recorded one of its charges failed, by then past the
/// provider's key window: it takes each charge again before sending it and
/// sends nothing for that one. Sent from its claim, with the key forgotten
/// at the provider, it would have made a payment for a charge the ledger
/// recorded failed (found by the protocol's model, `docs/model.md`).
#[actix_web::test]
async fn a_completer_frozen_after_its_claim_never_sends_a_charge_recorded_failed_meanwhile() {
    // the provider forgets a key 4 s after it stored it; a stored 5xx with
    // nothing found by a look-up means "never made" once 1 s has passed
    let s = CardShop::with(&["--idempotency-ttl-secs", "4"], false, |g| {
        g.card_lease_secs = 1;
        g.gateway_key_window_secs = 4;
        g.gateway_search_lag_secs = 1;
    })
    .await;
    let body = |order: &str| {
        json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
               "seller_account_id": s.seller, "amount": "12.00", "currency": "USD"})
    };
    // f1: its first send gets a 500 the provider stores for its key;
    // f2: the provider charges and the answer is lost
    s.fake.arm(json!({"kind": "error_before_charge", "count": 1, "metadata": {"order_id": "f1"}})).await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "f2"}})).await;
    let sent = std::time::Instant::now();
    for order in ["f1", "f2"] {
        let first = s.app.post("/v1/charges", &s.key, &format!("{order}:1"), body(order)).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    }
    // both leases pass; the completer claims both and stops there
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut config = s.completer_config(1);
    config.gateway.gateway_key_window_secs = 4;
    config.gateway.gateway_search_lag_secs = 1;
    let mut completer = ledger_tests::spawn_worker_frozen_at(&config, "completer", COMPLETER_AFTER_CLAIM);
    let pid = completer.id();
    ledger_tests::eventually(10, "the completer stops after its claim", || async {
        ledger_tests::process_state(pid) == Some('T')
    })
    .await;

    // the client's retry: the stored 500 again, nothing found: f1 failed
    let retry = s.app.post("/v1/charges", &s.key, "f1:1", body("f1")).await;
    assert_eq!(retry.status, StatusCode::PAYMENT_REQUIRED, "{retry:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE order_id = 'f1' AND status = 'failed'").await, 1);

    // past the key window: the provider has forgotten f1's key
    let window = Duration::from_millis(4500);
    tokio::time::sleep(window.saturating_sub(sent.elapsed())).await;
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    // f2, claimed after f1, is completed: the scan went past f1
    ledger_tests::eventually(20, "the completer completes f2", || async {
        s.scalar("SELECT count(*) FROM charges WHERE order_id = 'f2' AND status = 'succeeded'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();

    let f1 = s.fake.payments_of("f1").await;
    assert!(f1.iter().all(|p| p["status"] != "succeeded"), "a payment for a charge recorded failed: {f1:?}");
    assert_eq!(s.fake.payments_of("f2").await.len(), 1);
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE order_id = 'f1' AND status = 'failed'").await, 1);
    s.audit_clean().await;
}

/// A process frozen between its conclusion that nothing was made (a stored
/// 500, a look-up that found nothing) and its record of it, resumed once the
/// provider has forgotten the key and another send has made the payment:
/// its conclusion is not recorded (past the key window it no longer holds),
/// the charge stays in flight, and the retry finds the one payment. Recorded,
/// it would have failed a charge the provider made, and freed the order for
/// a second payment (found by the protocol's model, `docs/model.md`).
#[actix_web::test]
async fn a_conclusion_that_nothing_was_made_is_not_recorded_past_the_key_window() {
    // the provider forgets a key 5 s after it stored it; a stored 5xx with
    // nothing found means "never made" once 1 s has passed
    let s = CardShop::with(&["--idempotency-ttl-secs", "5"], false, |g| {
        g.card_lease_secs = 1;
        g.gateway_key_window_secs = 5;
        g.gateway_search_lag_secs = 1;
    })
    .await;
    let body = json!({"order_id": "f3", "attempt": 1, "payment_method": "pm_card_visa",
                      "seller_account_id": s.seller, "amount": "12.00", "currency": "USD"});
    s.fake.arm(json!({"kind": "error_before_charge", "count": 1, "metadata": {"order_id": "f3"}})).await;
    let sent = std::time::Instant::now();
    let first = s.app.post("/v1/charges", &s.key, "f3:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");

    // past the search lag, a retry through a process that concludes "never
    // made" and freezes before recording it
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let env = [
        ("LEDGER_FREEZE_AT", "card-after-provider"),
        ("GATEWAY_KEY_WINDOW_SECS", "5"),
        ("GATEWAY_SEARCH_LAG_SECS", "1"),
        ("CARD_LEASE_SECS", "1"),
    ];
    let frozen = s.api_with(&env).await;
    let stalled = {
        let (url, key, body) = (frozen.url("/v1/charges"), s.key.clone(), body.clone());
        actix_web::rt::spawn(async move { post(&url, &key, "f3:1", &body, Duration::from_secs(60)).await })
    };
    frozen.until_frozen(Duration::from_secs(10)).await;
    assert!(sent.elapsed() < Duration::from_secs(5), "concluded within the key window: {:?}", sent.elapsed());

    // the key forgotten, another send makes the payment; its answer is lost
    tokio::time::sleep(Duration::from_millis(5500).saturating_sub(sent.elapsed())).await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "f3"}})).await;
    let lost = s.app.post("/v1/charges", &s.key, "f3:1", body.clone()).await;
    assert_eq!(lost.status, StatusCode::ACCEPTED, "{lost:?}");
    assert_eq!(s.fake.payments_of("f3").await.len(), 1, "the provider charged");

    // the frozen process resumes: its stale conclusion is not recorded
    frozen.signal(libc::SIGCONT);
    let resumed = stalled.await.unwrap().expect("answered");
    assert_eq!(resumed.status, StatusCode::ACCEPTED, "{resumed:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'processing'").await, 1);

    let retry = s.app.post("/v1/charges", &s.key, "f3:1", body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    let payments = s.fake.payments_of("f3").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(retry.json()["provider_payment_id"], payments[0]["id"]);
    s.audit_clean().await;
}
