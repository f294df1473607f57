//! Card refunds through the provider-effects protocol, against the fake
//! provider started as its own process: every rule checked before anything
//! leaves, a lost answer recorded by the retry, the completer or a webhook,
//! a look-up before any resend past the provider's key window, a refund the
//! provider fails undone once, and reconciliation that compares refunds.
//! Each of the four holes found on a live stack has its test here, named
//! after it.

use std::ops::Deref;

use awc::http::StatusCode;
use ledger_tests::api_process::{post, ApiProcess};
use ledger_tests::card_shop::CardShop;
use ledger_tests::provider::FakeProvider;
use ledger_tests::{eventually, run_worker_command, spawn_app_with};
use serde_json::{json, Value};

struct Shop(CardShop);

impl Deref for Shop {
    type Target = CardShop;
    fn deref(&self) -> &CardShop {
        &self.0
    }
}

/// A shop whose fake provider runs with `fake_args` and delivers its
/// webhooks to the API when `webhooks`, its API's provider settings tweaked.
async fn shop_with(fake_args: &[&str], webhooks: bool, tweak: impl FnOnce(&mut service::settings::Gateway)) -> Shop {
    Shop(CardShop::with(fake_args, webhooks, tweak).await)
}

async fn shop() -> Shop {
    shop_with(&[], false, |_| {}).await
}

impl Shop {
    /// A card charge of 25.00 (fee 2.50) for `order`, paid.
    async fn paid(&self, order: &str) -> String {
        let body = json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
               "seller_account_id": self.seller, "amount": "25.00", "currency": "USD",
               "platform_fee": {"account_id": self.platform, "amount": "2.50"}});
        let paid = self.app.post("/v1/charges", &self.key, &format!("{order}:1"), body).await;
        assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
        paid.id()
    }

    async fn refund(&self, charge: &str, key: &str, body: Value) -> ledger_tests::Answer {
        self.app.post(&format!("/v1/charges/{charge}/refunds"), &self.key, key, body).await
    }

    /// What the provider refunded of the order's payment, in cents.
    async fn provider_refunded(&self, order: &str) -> i64 {
        let payments = self.fake.payments_of(order).await;
        assert_eq!(payments.len(), 1, "{payments:?}");
        payments[0]["amount_refunded"].as_i64().unwrap()
    }

    /// What the ledger refunded of the charge, in cents.
    async fn ledger_refunded(&self, charge: &str) -> i64 {
        let c = self.app.get(&format!("/v1/charges/{charge}"), &self.key).await.json();
        let amount: rust_decimal::Decimal = c["refunded_amount"].as_str().unwrap().parse().unwrap();
        ledger::cards::minor_units(amount, ledger::Currency::USD)
    }

    async fn refund_status(&self, reference: &str) -> String {
        let row = self
            .app
            .db
            .client()
            .await
            .query_opt("SELECT status FROM refunds WHERE reference = $1", &[&reference])
            .await
            .unwrap();
        row.map_or("none".to_owned(), |r| r.get(0))
    }
}

#[actix_web::test]
async fn hole_1_a_refund_the_seller_cannot_cover_is_refused_before_the_provider_is_asked() {
    let s = shop().await;
    let charge = s.paid("h1").await;
    // the seller moves its 22.50 out
    let elsewhere = s.app.account(&s.key, "elsewhere", "USD", false).await;
    let out = s
        .app
        .post(
            "/v1/transfers",
            &s.key,
            "payout",
            json!({"source_account_id": s.seller, "destination_account_id": elsewhere, "amount": "22.50", "currency": "USD"}),
        )
        .await;
    assert_eq!(out.status, StatusCode::CREATED, "{out:?}");

    let refused = s.refund(&charge, "h1:refund:1", json!({"reference": "h1:refund:1", "amount": "10.00"})).await;
    assert_eq!(refused.status, StatusCode::PAYMENT_REQUIRED, "{refused:?}");
    assert_eq!(refused.code(), "insufficient_funds");
    // nothing left the building, nothing was recorded
    assert_eq!(s.fake.stats().await["refunds"], 0, "{}", s.fake.stats().await);
    assert_eq!(s.provider_refunded("h1").await, 0);
    assert_eq!(s.ledger_refunded(&charge).await, 0);
    assert_eq!(s.app.db.count("refunds").await, 0);
    // the answer is stored and replayed
    let again = s.refund(&charge, "h1:refund:1", json!({"reference": "h1:refund:1", "amount": "10.00"})).await;
    assert!(again.replayed);
    assert_eq!(again.body, refused.body);
    s.audit_clean().await;
}

#[actix_web::test]
async fn hole_2_a_reused_idempotency_key_is_refused_before_the_provider_is_asked() {
    let s = shop().await;
    let charge = s.paid("h2").await;
    let first = s.refund(&charge, "K", json!({"reference": "h2:refund:1", "amount": "5.00"})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let reused = s.refund(&charge, "K", json!({"reference": "h2:refund:2", "amount": "7.00"})).await;
    assert_eq!(reused.status, StatusCode::CONFLICT, "{reused:?}");
    assert_eq!(reused.code(), "idempotency_key_reused");
    assert_eq!(s.fake.stats().await["refunds"], 1);
    assert_eq!(s.provider_refunded("h2").await, 500);
    assert_eq!(s.ledger_refunded(&charge).await, 500);

    // reused while the first is still pending at the provider: refused too
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"reference": "h2:refund:3"}})).await;
    let pending = s.refund(&charge, "L", json!({"reference": "h2:refund:3", "amount": "1.00"})).await;
    assert_eq!(pending.status, StatusCode::ACCEPTED, "{pending:?}");
    assert_eq!(pending.json()["status"], "pending");
    let reused = s.refund(&charge, "L", json!({"reference": "h2:refund:4", "amount": "7.00"})).await;
    assert_eq!(reused.code(), "idempotency_key_reused", "{reused:?}");
    assert_eq!(s.fake.stats().await["refunds"], 2, "the dropped one was made; the reuse was not sent");
    assert_eq!(s.provider_refunded("h2").await, 600);
    // the retry with the key records what the provider did
    let retried = s.refund(&charge, "L", json!({"reference": "h2:refund:3", "amount": "1.00"})).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
    assert_eq!(s.ledger_refunded(&charge).await, 600);
    s.audit_clean().await;
}

#[actix_web::test]
async fn hole_3_a_lost_refund_answer_is_pending_and_the_completer_records_it() {
    let s = shop_with(&[], false, |g| g.card_lease_secs = 1).await;
    let charge = s.paid("h3").await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"reference": "h3:refund:1"}})).await;
    let lost = s.refund(&charge, "h3:refund:1", json!({"reference": "h3:refund:1", "amount": "25.00"})).await;
    assert_eq!(lost.status, StatusCode::ACCEPTED, "{lost:?}");
    assert_eq!(lost.json()["status"], "pending");
    assert_eq!(s.provider_refunded("h3").await, 2500, "the provider refunded; the answer was lost");
    // the seller's share is held back while the refund is pending
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "0.00");
    let _completer = s.completer(1, 86_400);
    eventually(20, "the completer records the refund", || async {
        s.refund_status("h3:refund:1").await == "succeeded"
    })
    .await;
    assert_eq!(s.ledger_refunded(&charge).await, 2500);
    assert_eq!(s.fake.stats().await["refunds"], 1, "the same provider key: one refund");
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.refunded'").await, 1);
    // the client's retry gets the final answer, stored from then on
    let retry = s.refund(&charge, "h3:refund:1", json!({"reference": "h3:refund:1", "amount": "25.00"})).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.json()["status"], "succeeded");
    let again = s.refund(&charge, "h3:refund:1", json!({"reference": "h3:refund:1", "amount": "25.00"})).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    s.audit_clean().await;
}

#[actix_web::test]
async fn hole_3_a_refund_webhook_completes_a_refund_whose_answer_was_lost() {
    // no completer, and the lease is long: only the webhook can complete it
    let s = shop_with(&[], true, |g| g.card_lease_secs = 600).await;
    let charge = s.paid("h3w").await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"reference": "h3w:refund:1"}})).await;
    let lost = s.refund(&charge, "h3w:refund:1", json!({"reference": "h3w:refund:1", "amount": "4.00"})).await;
    // 202 pending; or 201, when the webhook (sent by the provider as it
    // refunded) was recorded before the request's own second transaction,
    // which found the refund final: the request never learned the outcome
    // from the provider, so the webhook is what completed it either way
    match lost.status {
        StatusCode::ACCEPTED => assert_eq!(lost.json()["status"], "pending", "{lost:?}"),
        StatusCode::CREATED => assert_eq!(lost.json()["status"], "succeeded", "{lost:?}"),
        other => panic!("{other}: {lost:?}"),
    }
    eventually(20, "the webhook records the refund", || async { s.refund_status("h3w:refund:1").await == "succeeded" })
        .await;
    assert_eq!(s.ledger_refunded(&charge).await, 400);
    assert_eq!(s.provider_refunded("h3w").await, 400);
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.refunded'").await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn hole_4_a_refund_retried_past_the_key_window_is_looked_up_not_sent_again() {
    // the provider forgets keys after 0.2 s: resending the key then would refund again
    let s = shop_with(&["--idempotency-ttl-secs", "0.2"], false, |g| {
        g.card_lease_secs = 1;
        g.gateway_key_window_secs = 1;
    })
    .await;
    let charge = s.paid("h4").await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"reference": "h4:refund:1"}})).await;
    let lost = s.refund(&charge, "h4:refund:1", json!({"reference": "h4:refund:1", "amount": "10.00"})).await;
    assert_eq!(lost.status, StatusCode::ACCEPTED, "{lost:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let retry = s.refund(&charge, "h4:refund:1", json!({"reference": "h4:refund:1", "amount": "10.00"})).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(s.fake.stats().await["refunds"], 1, "found by listing, not sent again");
    assert_eq!(s.provider_refunded("h4").await, 1000);
    assert_eq!(s.ledger_refunded(&charge).await, 1000);
    let listed = s.fake.refunds_of("h4").await;
    assert_eq!(retry.json()["provider_refund_id"], listed[0].id.as_str());
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_refund_the_provider_fails_later_is_undone_once() {
    let s = shop_with(&[], true, |g| g.card_lease_secs = 600).await;
    let charge = s.paid("f1").await;
    let made = s.refund(&charge, "f1:refund:1", json!({"reference": "f1:refund:1", "amount": "10.00"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "13.50");
    let provider_refund = made.json()["provider_refund_id"].as_str().unwrap().to_owned();
    s.fake.admin("POST", &format!("/refunds/{provider_refund}/fail"), Some(json!({}))).await;
    eventually(20, "the failure undoes the refund", || async { s.refund_status("f1:refund:1").await == "failed" })
        .await;
    // the seller and the platform have their shares back; the charge may be refunded again
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "22.50");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "2.50");
    assert_eq!(s.ledger_refunded(&charge).await, 0);
    assert_eq!(s.provider_refunded("f1").await, 0);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund_reversal'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.refund_failed'").await, 1);
    // the seller's history shows the charge, the refund and its reversal
    let entries = s.app.get(&format!("/v1/accounts/{}/entries", s.seller), &s.key).await;
    assert_eq!(entries.status, StatusCode::OK, "{entries:?}");
    let kinds: Vec<String> =
        entries.json()["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["refund_reversal", "refund", "charge"]);
    // the same event again (the fake delivers both refund.failed and charge.refund.updated): nothing more
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund_reversal'").await, 1);
    // the first request's stored answer stays what it was; a new reference refunds again
    let replay = s.refund(&charge, "f1:refund:1", json!({"reference": "f1:refund:1", "amount": "10.00"})).await;
    assert!(replay.replayed);
    let other = s.refund(&charge, "f1:refund:1:other", json!({"reference": "f1:refund:1", "amount": "10.00"})).await;
    assert_eq!(other.status, StatusCode::PAYMENT_REQUIRED, "{other:?}");
    assert_eq!(other.code(), "refund_failed");
    let next = s.refund(&charge, "f1:refund:2", json!({"reference": "f1:refund:2", "amount": "25.00"})).await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
    assert_eq!(s.provider_refunded("f1").await, 2500);
    assert_eq!(s.ledger_refunded(&charge).await, 2500);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_pending_refund_the_provider_fails_is_answered_refund_failed() {
    let s = shop_with(&[], true, |g| g.card_lease_secs = 600).await;
    let charge = s.paid("f2").await;
    s.fake.arm(json!({"kind": "refund_pending", "count": 1, "metadata": {"reference": "f2:refund:1"}})).await;
    let pending = s.refund(&charge, "f2:refund:1", json!({"reference": "f2:refund:1"})).await;
    assert_eq!(pending.status, StatusCode::ACCEPTED, "{pending:?}");
    assert_eq!(pending.json()["status"], "pending");
    let provider_refund = s.fake.refunds_of("f2").await[0].id.clone();
    s.fake
        .admin(
            "POST",
            &format!("/refunds/{provider_refund}/fail"),
            Some(json!({"failure_reason": "expired_or_canceled_card"})),
        )
        .await;
    eventually(20, "the failure undoes the refund", || async { s.refund_status("f2:refund:1").await == "failed" })
        .await;
    let answer = s.refund(&charge, "f2:refund:1", json!({"reference": "f2:refund:1"})).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED, "{answer:?}");
    assert_eq!(answer.code(), "refund_failed");
    assert!(answer.json()["detail"].as_str().unwrap().contains("expired_or_canceled_card"), "{answer:?}");
    let again = s.refund(&charge, "f2:refund:1", json!({"reference": "f2:refund:1"})).await;
    assert!(again.replayed);
    assert_eq!(s.ledger_refunded(&charge).await, 0);
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "22.50");
    s.audit_clean().await;
}

#[actix_web::test]
async fn reconcile_payments_compares_refunds_and_says_when_it_could_not_run() {
    let s = shop().await;
    let charge = s.paid("c1").await;
    let made = s.refund(&charge, "c1:refund:1", json!({"reference": "c1:refund:1", "amount": "5.00"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    let clean = run_worker_command(&s.worker_config(), &["reconcile-payments"]).await;
    let out = String::from_utf8_lossy(&clean.stdout).to_string();
    assert_eq!(clean.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&clean.stderr));
    assert!(out.contains("0 difference(s)"), "{out}");

    // planted: a refund made at the provider behind the ledger's back
    let client = gateway::Client::new(&s.worker_config().gateway.client_config()).unwrap();
    let payment = s.fake.payments_of("c1").await[0]["id"].as_str().unwrap().to_owned();
    let stray = gateway::RefundRequest { payment_intent: payment, amount: Some(300), metadata: Default::default() };
    let made = client.create_refund(&stray, "stray-refund").await.unwrap();
    assert!(matches!(made, gateway::RefundOutcome::Created(_)), "{made:?}");
    let found = run_worker_command(&s.worker_config(), &["reconcile-payments"]).await;
    let out = String::from_utf8_lossy(&found.stdout).to_string();
    assert_eq!(found.status.code(), Some(1), "{out}");
    assert!(out.contains("refund_without_record"), "{out}");
    assert!(out.contains("refunded_amount_differs"), "{out}");

    // a provider it cannot reach: 2, not a clean 0 nor a 1 for differences
    let mut unreachable = s.worker_config();
    unreachable.gateway.gateway_url = "http://127.0.0.1:9".to_owned();
    let failed = run_worker_command(&unreachable, &["reconcile-payments"]).await;
    assert_eq!(failed.status.code(), Some(2), "{}", String::from_utf8_lossy(&failed.stderr));
}

#[actix_web::test]
async fn a_provider_configuration_error_is_not_a_decline_and_nothing_is_stored() {
    // the API holds a restricted key: the provider refuses every write with 403
    let restricted = "rk_test_ledger_restricted";
    let fake = FakeProvider::start(&["--restricted-key", restricted]);
    let app = spawn_app_with(|c| {
        fake.configure(&mut c.gateway);
        c.gateway.gateway_secret_key = restricted.to_owned();
        c.gateway.gateway_timeout_ms = 5_000;
        c.metrics_addr = Some("127.0.0.1:0".into());
    })
    .await;
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let body = json!({"order_id": "k1", "attempt": 1, "payment_method": "pm_card_visa",
                      "seller_account_id": seller, "amount": "25.00", "currency": "USD"});
    for _ in 0..2 {
        let refused = app.post("/v1/charges", &key, "k1:1", body.clone()).await;
        assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{refused:?}");
        assert_eq!(refused.code(), "provider_rejected");
        assert!(!refused.replayed, "not stored");
        assert!(refused.json()["detail"].as_str().unwrap().contains("permission"), "{refused:?}");
    }
    // not a decline: no charge, no key, no decline counted; the order is free
    assert_eq!(app.db.count("charges").await, 0);
    let keys: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM idempotency_keys WHERE key = 'k1:1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0, "the key is free for the retry");
    assert!(fake.payments().await.is_empty());
    let text = app.metrics().await;
    assert!(text.contains("ledger_provider_rejections_total{effect=\"card charge\"} 2"), "{text}");
    assert!(!text.contains("ledger_declines_total{code=\"card_declined\"}"), "{text}");

    // fixed (a process with the full key): the same request runs afresh and pays
    let env: Vec<(&str, String)> = fake.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fixed = ApiProcess::start(&app.db.url, &env).await;
    let wait = std::time::Duration::from_secs(30);
    let paid = post(&fixed.url("/v1/charges"), &key, "k1:1", &body, wait).await.unwrap();
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let charge = paid.body["id"].as_str().unwrap().to_owned();

    // a refund refused as misconfigured stays pending, its money held, and is sent once fixed
    let refund = json!({"reference": "k1:refund:1", "amount": "5.00"});
    let path = format!("/v1/charges/{charge}/refunds");
    let refused = app.post(&path, &key, "k1:refund:1", refund.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{refused:?}");
    assert_eq!(refused.code(), "provider_rejected");
    let status: String = app.db.client().await.query_one("SELECT status FROM refunds", &[]).await.unwrap().get(0);
    assert_eq!(status, "pending");
    let retried = post(&fixed.url(&path), &key, "k1:refund:1", &refund, wait).await.unwrap();
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
    assert_eq!(retried.body["status"], "succeeded");
    assert_eq!(fake.payments_of("k1").await[0]["amount_refunded"], 500);
    let report = ledger::audit::audit(&app.db.client().await, Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

/// Webhooks come in any order: a refund's success, delivered after the
/// failure the provider reported later for the same refund, is its older
/// event, not a contradiction. The failure undoes the refund once (and
/// flags `refund_failed_after_succeeded` for an operator, as a refund that
/// failed after succeeding always does); the late success changes nothing
/// and raises no `refund_succeeded_after_failed` (found by the protocol's
/// model, `docs/model.md`).
#[actix_web::test]
async fn refund_webhooks_out_of_order_raise_no_false_flag() {
    let s = shop_with(&["--webhook-hold-max-ms", "20000"], true, |g| g.card_lease_secs = 600).await;
    let charge = s.paid("w1").await;
    eventually(20, "the charge's webhooks delivered", || async { s.fake.stats().await["webhooks"]["pending"] == 0 })
        .await;
    // the refund's events (`refund.created`, `charge.refunded`) are held
    // until a later one has gone through: the failure's
    s.fake.arm(json!({"kind": "webhook_out_of_order", "count": 10, "metadata": {"order_id": "w1"}})).await;
    let made = s.refund(&charge, "w1:refund:1", json!({"reference": "w1:refund:1", "amount": "10.00"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
    s.fake.disarm().await;
    let provider_refund = made.json()["provider_refund_id"].as_str().unwrap().to_owned();
    s.fake.admin("POST", &format!("/refunds/{provider_refund}/fail"), Some(json!({}))).await;
    eventually(30, "every webhook delivered", || async { s.fake.stats().await["webhooks"]["pending"] == 0 }).await;

    // the held success went through after the failure
    let deliveries = s.fake.webhooks().await["data"].as_array().unwrap().clone();
    let held: Vec<&Value> = deliveries.iter().filter(|d| d["held"] == true).collect();
    assert!(!held.is_empty(), "{deliveries:?}");
    let failed_at = deliveries
        .iter()
        .filter(|d| ["refund.failed", "charge.refund.updated"].contains(&d["type"].as_str().unwrap_or("")))
        .filter_map(|d| d["delivered_ms"].as_i64())
        .min()
        .expect("the failure's events delivered");
    assert!(held.iter().any(|d| d["type"] == "refund.created"), "{deliveries:?}");
    assert!(held.iter().all(|d| d["delivered_ms"].as_i64().unwrap() > failed_at), "{deliveries:?}");
    assert_eq!(s.refund_status("w1:refund:1").await, "failed");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund_reversal'").await, 1);
    let flags: Vec<String> = s
        .app
        .db
        .client()
        .await
        .query("SELECT kind FROM provider_flags ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(flags, ["refund_failed_after_succeeded"], "only the failure after success is flagged");
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "22.50");
    s.audit_clean().await;
}
