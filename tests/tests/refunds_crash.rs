//! Card refunds with the real processes killed at every phase boundary of
//! the provider-effects protocol: after the first transaction, after the
//! provider answered and before the second, after the second and before the
//! response, and inside the completer. Each ends with one provider refund
//! for the (charge, reference), the ledger equal to the provider, the final
//! answer on retry and a clean audit.

use std::ops::Deref;
use std::time::Duration;

use awc::http::StatusCode;
use ledger_tests::api_process::{post, ApiProcess, Reply};
use ledger_tests::card_shop::CardShop;
use serde_json::{json, Value};

struct Shop {
    card: CardShop,
    charge: String,
}

impl Deref for Shop {
    type Target = CardShop;
    fn deref(&self) -> &CardShop {
        &self.card
    }
}

const REFUND_KEY: &str = "o1:refund:1";

/// A card charge of 12.00 (fee 1.20) paid through the in-process server; the
/// refunds go to real `ledger-api` processes pointed at the same provider.
async fn shop() -> Shop {
    let card = CardShop::new().await;
    let body = json!({"order_id": "o1", "attempt": 1, "payment_method": "pm_card_visa",
                      "seller_account_id": card.seller, "amount": "12.00", "currency": "USD",
                      "platform_fee": {"account_id": card.platform, "amount": "1.20"}});
    let paid = card.app.post("/v1/charges", &card.key, "o1:1", body).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    Shop { charge: paid.id(), card }
}

impl Shop {
    async fn refund(&self, api: &ApiProcess) -> Result<Reply, String> {
        let body = json!({"reference": "o1:refund:1", "amount": "5.00"});
        post(
            &api.url(&format!("/v1/charges/{}/refunds", self.charge)),
            &self.key,
            REFUND_KEY,
            &body,
            Duration::from_secs(30),
        )
        .await
    }

    /// `CardShop::crash_then_retry` with the refund.
    async fn crash_then_retry(&self, point: &str) -> Reply {
        self.card.crash_then_retry(point, async |api| self.refund(api).await).await
    }

    async fn assert_refunded_once(&self, answer: &Value) {
        let refunds = self.fake.refunds_of("o1").await;
        assert_eq!(refunds.len(), 1, "one provider refund for the reference: {refunds:?}");
        assert_eq!(refunds[0].metadata["reference"], "o1:refund:1");
        assert_eq!(self.fake.payments_of("o1").await[0]["amount_refunded"], 500);
        assert_eq!(answer["status"], "succeeded", "{answer}");
        assert_eq!(answer["provider_refund_id"], refunds[0].id.as_str());
        assert_eq!(self.scalar("SELECT count(*) FROM refunds WHERE status = 'succeeded'").await, 1);
        assert_eq!(self.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund'").await, 1);
        assert_eq!(self.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.refunded'").await, 1);
        let refunded: rust_decimal::Decimal =
            self.app.db.client().await.query_one("SELECT refunded_amount FROM charges", &[]).await.unwrap().get(0);
        assert_eq!(refunded, rust_decimal::Decimal::new(5, 0), "the ledger equals the provider");
        self.audit_clean().await;
    }
}

#[actix_web::test]
async fn killed_after_the_refunds_first_transaction_the_retry_asks_the_provider_once() {
    let s = shop().await;
    let retry = s.crash_then_retry("refund-after-created").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(!retry.replayed);
    s.assert_refunded_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_provider_refunded_the_retry_records_that_refund() {
    let s = shop().await;
    let retry = s.crash_then_retry("refund-after-provider").await;
    // the provider refunded before the crash; the retry's same key replays that refund
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(s.fake.stats().await["replays"].as_u64().unwrap_or(0), 1, "{}", s.fake.stats().await);
    s.assert_refunded_once(&retry.body).await;
}

#[actix_web::test]
async fn killed_after_the_refunds_second_transaction_the_retry_is_replayed() {
    let s = shop().await;
    let retry = s.crash_then_retry("refund-after-complete").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert!(retry.replayed, "the stored final answer");
    s.assert_refunded_once(&retry.body).await;
}

#[actix_web::test]
async fn the_completer_killed_after_the_provider_refunded_is_resumed_once() {
    let s = shop().await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"reference": "o1:refund:1"}})).await;
    let api = s.api(None).await;
    let first = s.refund(&api).await.expect("answered");
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(first.body["status"], "pending");

    let mut victim = s.completer_process(Some("completer-after-provider"));
    let status = tokio::task::spawn_blocking(move || victim.wait().unwrap()).await.unwrap();
    assert!(!status.success(), "the completer died at its point");
    assert_eq!(s.scalar("SELECT count(*) FROM refunds WHERE status = 'pending'").await, 1, "nothing recorded");

    let mut completer = s.completer_process(None);
    ledger_tests::eventually(20, "the restarted completer completes the refund", || async {
        s.scalar("SELECT count(*) FROM refunds WHERE status = 'succeeded'").await == 1
    })
    .await;
    let _ = completer.kill();
    let _ = completer.wait();
    let retry = s.refund(&api).await.expect("answered");
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    s.assert_refunded_once(&retry.body).await;
}
