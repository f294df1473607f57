//! The natural keys that make a money effect happen once even when the
//! client changes its Idempotency-Key: a refund's reference per charge, and
//! one succeeded charge per order whatever the attempt number.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{spawn_app, spawn_app_with, Answer, TestApp};
use serde_json::{json, Value};

struct Paid {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
    charge: String,
}

/// A buyer funded with 100.00 who paid a 50.00 charge for `order-1`.
async fn paid() -> Paid {
    paid_with(|_| {}).await
}

async fn paid_with(tweak: impl FnOnce(&mut api::config::Config)) -> Paid {
    let app = spawn_app_with(tweak).await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let c = app.post("/v1/charges", &key, "order-1:1", charge("order-1", 1, &buyer, &seller, "50.00")).await;
    assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    let charge = c.id();
    Paid { app, key, buyer, seller, charge }
}

fn charge(order: &str, attempt: i32, buyer: &str, seller: &str, amount: &str) -> Value {
    json!({"order_id": order, "attempt": attempt, "buyer_account_id": buyer, "seller_account_id": seller,
           "amount": amount, "currency": "USD"})
}

impl Paid {
    async fn refund(&self, idem: &str, body: Value) -> Answer {
        self.app.post(&format!("/v1/charges/{}/refunds", self.charge), &self.key, idem, body).await
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn audit_clean(&self) {
        let report = ledger::audit::audit(&self.app.db.client().await, Default::default()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}

// ---- hole 1: a refund can be paid twice -------------------------------------

#[actix_web::test]
async fn hole_1_a_refund_retried_under_a_new_key_is_paid_once() {
    let p = paid().await;
    let body = json!({"amount": "10.00", "reference": "order-1:refund:1"});
    let first = p.refund("order-1:refund:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.json()["reference"], "order-1:refund:1");

    // the storefront lost the answer and retries under a new key: the same refund, not a second one
    let second = p.refund("order-1:refund:1:retry", body.clone()).await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert!(second.natural_key_replayed && !second.replayed, "{second:?}");
    assert_eq!(second.body, first.body, "the existing refund, as it was answered");

    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "60.00", "the buyer got 10.00 back once");
    assert_eq!(p.app.balance(&p.key, &p.seller).await, "40.00");
    assert_eq!(p.app.db.count("refunds").await, 1);
    assert_eq!(p.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'refund'").await, 1);
    assert_eq!(p.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.refunded'").await, 1);
    assert_eq!(p.app.get(&format!("/v1/charges/{}", p.charge), &p.key).await.json()["refunded_amount"], "10.00");
    p.audit_clean().await;
}

#[actix_web::test]
async fn hole_1_a_refund_retried_after_its_key_expired_is_paid_once() {
    let p = paid_with(|c| {
        c.retention.idempotency_retention_secs = 3600;
        c.retention.client_max_retry_secs = 3600;
    })
    .await;
    let body = json!({"amount": "10.00", "reference": "order-1:refund:1"});
    let first = p.refund("order-1:refund:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    // the key expires and is purged
    p.app
        .db
        .client()
        .await
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '2 hours'", &[])
        .await
        .unwrap();
    let pool = ledger::db::pool(&p.app.db.url, &Default::default()).unwrap();
    let purged =
        service::purge::once(&pool, service::purge::Target::IdempotencyKeys, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
    assert!(purged >= 1);

    let retry = p.refund("order-1:refund:1", body).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert!(retry.natural_key_replayed && !retry.replayed);
    assert_eq!(retry.id(), first.id());
    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "60.00");
    assert_eq!(p.app.db.count("refunds").await, 1);
    p.audit_clean().await;
}

#[actix_web::test]
async fn hole_1_a_refund_reference_reused_with_other_terms_is_a_conflict() {
    let p = paid().await;
    let first = p.refund("r1", json!({"amount": "10.00", "reference": "order-1:refund:1"})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let before = p.app.db.counts().await;

    let other = p.refund("r1-other", json!({"amount": "11.00", "reference": "order-1:refund:1"})).await;
    assert_eq!((other.status, other.code().as_str()), (StatusCode::CONFLICT, "natural_key_conflict"), "{other:?}");
    // "all that remains" is other terms than an amount, even one that equals it
    let rest = p.refund("r1-rest", json!({"reference": "order-1:refund:1"})).await;
    assert_eq!((rest.status, rest.code().as_str()), (StatusCode::CONFLICT, "natural_key_conflict"), "{rest:?}");
    assert_eq!(p.app.db.counts().await, before, "nothing written, not even the keys");

    // a reference names a refund of one charge: another reference is another refund
    let next = p.refund("r2", json!({"amount": "11.00", "reference": "order-1:refund:2"})).await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "71.00");
    p.audit_clean().await;
}

#[actix_web::test]
async fn hole_1_a_refund_of_all_that_remains_is_found_again_by_its_reference() {
    let p = paid().await;
    let partial = p.refund("r1", json!({"amount": "10.00", "reference": "r1"})).await;
    assert_eq!(partial.status, StatusCode::CREATED, "{partial:?}");
    let rest = p.refund("r2", json!({"reference": "r2"})).await;
    assert_eq!(rest.status, StatusCode::CREATED, "{rest:?}");
    assert_eq!(rest.json()["amount"], "40.00", "all that remained");

    // nothing remains now, yet the retry is the refund it made, not `refund_exceeds_charge`
    let retry = p.refund("r2:again", json!({"reference": "r2"})).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert!(retry.natural_key_replayed);
    assert_eq!(retry.body, rest.body);
    // the same remainder named as an amount is other terms
    let named = p.refund("r2:named", json!({"amount": "40.00", "reference": "r2"})).await;
    assert_eq!(named.code(), "natural_key_conflict", "{named:?}");
    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "100.00");
    assert_eq!(p.app.db.count("refunds").await, 2);
    p.audit_clean().await;
}

#[actix_web::test]
async fn hole_1_concurrent_refunds_with_one_reference_pay_once() {
    let p = paid().await;
    let body = json!({"amount": "4.00", "reference": "order-1:refund:1"});
    let p = &p;
    let answers =
        join_all((0..20).map(|i| {
            let body = body.clone();
            async move { p.refund(&format!("dup-{i}"), body).await }
        }))
        .await;
    let created = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let existing = answers.iter().filter(|a| a.status == StatusCode::OK && a.natural_key_replayed).count();
    assert_eq!((created, existing), (1, 19), "{answers:?}");
    let ids: std::collections::HashSet<String> = answers.iter().map(|a| a.id()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "54.00");
    assert_eq!(p.app.db.count("refunds").await, 1);
    p.audit_clean().await;
}

#[actix_web::test]
async fn a_refund_needs_a_valid_reference() {
    let p = paid().await;
    let missing = p.refund("m", json!({"amount": "1.00"})).await;
    assert_eq!((missing.status, missing.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_body"));
    for bad in ["", " r1", "r1 ", "r\u{e9}", &"r".repeat(256)] {
        let a = p.refund("bad", json!({"amount": "1.00", "reference": bad})).await;
        assert_eq!((a.status, a.code().as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"), "{bad:?}");
    }
    let longest = p.refund("long", json!({"amount": "1.00", "reference": "r".repeat(255)})).await;
    assert_eq!(longest.status, StatusCode::CREATED, "{longest:?}");
    assert_eq!(p.app.db.count("refunds").await, 1);
}
