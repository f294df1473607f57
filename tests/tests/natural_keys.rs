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
    let answers = join_all((0..20).map(|i| {
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

// ---- hole 2: an order can be charged twice -----------------------------------

#[actix_web::test]
async fn hole_2_an_order_charged_again_under_a_new_attempt_is_refused() {
    let p = paid().await;
    // the storefront timed out and bumped the attempt instead of reusing its key
    let again =
        p.app.post("/v1/charges", &p.key, "order-1:2", charge("order-1", 2, &p.buyer, &p.seller, "50.00")).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert_eq!(again.code(), "order_already_charged");
    assert_eq!(again.json()["charge_id"], p.charge.as_str(), "the problem names the existing charge");
    assert!(!again.replayed);

    assert_eq!(p.app.balance(&p.key, &p.buyer).await, "50.00", "the buyer paid once");
    assert_eq!(p.app.db.count("charges").await, 1);
    assert_eq!(p.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    let listed = p.app.get("/v1/charges?order_id=order-1", &p.key).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    // a refusal is not stored: the key is free, and the order stays charged once
    let retried =
        p.app.post("/v1/charges", &p.key, "order-1:2", charge("order-1", 2, &p.buyer, &p.seller, "50.00")).await;
    assert_eq!(retried.code(), "order_already_charged");
    assert!(!retried.replayed);
    // the paid attempt itself, under a new key, is still its natural-key replay
    let first =
        p.app.post("/v1/charges", &p.key, "order-1:1:new", charge("order-1", 1, &p.buyer, &p.seller, "50.00")).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(first.natural_key_replayed);
    assert_eq!(first.id(), p.charge);
    // and with other terms, that attempt is a natural-key conflict, as before
    let other =
        p.app.post("/v1/charges", &p.key, "order-1:1:other", charge("order-1", 1, &p.buyer, &p.seller, "51.00")).await;
    assert_eq!(other.code(), "natural_key_conflict");
    assert_eq!(p.app.db.count("charges").await, 1);
    p.audit_clean().await;
}

#[actix_web::test]
async fn hole_2_a_new_attempt_is_allowed_after_a_decline_only() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "30.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let declined = app.post("/v1/charges", &key, "o:1", charge("o", 1, &buyer, &seller, "40.00")).await;
    assert_eq!(declined.code(), "insufficient_funds");
    let paid = app.post("/v1/charges", &key, "o:2", charge("o", 2, &buyer, &seller, "20.00")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    // the declined attempt asked again under a new key: the order is paid now
    let stale = app.post("/v1/charges", &key, "o:1:new", charge("o", 1, &buyer, &seller, "5.00")).await;
    assert_eq!(stale.code(), "order_already_charged", "{stale:?}");
    assert_eq!(stale.json()["charge_id"], paid.id().as_str());
    let third = app.post("/v1/charges", &key, "o:3", charge("o", 3, &buyer, &seller, "5.00")).await;
    assert_eq!(third.code(), "order_already_charged", "{third:?}");
    assert_eq!(app.balance(&key, &buyer).await, "10.00");
    assert_eq!(app.db.count("charges").await, 1);
}

/// Different attempts of one order at once: one charge, every other answer a
/// 409 (`order_already_charged`, or `contention` to retry), never a 5xx.
/// With one buyer and seller the attempts queue on their row locks; with
/// accounts of their own, nothing orders them but the unique index.
async fn concurrent_attempts(accounts_per_attempt: bool) {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let mut parties = Vec::new();
    for i in 0..if accounts_per_attempt { 12 } else { 1 } {
        let buyer = app.funded(&key, &format!("buyer-{i}"), "100.00").await;
        let seller = app.account(&key, &format!("seller-{i}"), "USD", false).await;
        parties.push((buyer, seller));
    }
    let (app, key, parties) = (&app, &key, &parties);
    let body = |attempt: i32| {
        let (buyer, seller) = &parties[attempt as usize % parties.len()];
        charge("order-9", attempt, buyer, seller, "25.00")
    };
    let answers = join_all((0..12).map(|attempt| async move {
        app.post("/v1/charges", key, &format!("order-9:{attempt}"), body(attempt + 1)).await
    }))
    .await;
    assert!(answers.iter().all(|a| a.status.as_u16() < 500), "{answers:?}");
    let created: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::CREATED).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    let charge_id = created[0].id();
    let codes: Vec<String> = answers.iter().filter(|a| a.status != StatusCode::CREATED).map(|a| a.code()).collect();
    println!("accounts per attempt {accounts_per_attempt}: one 201, then {codes:?}");
    for (attempt, a) in answers.iter().enumerate() {
        if a.status == StatusCode::CREATED {
            continue;
        }
        assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
        let mut a = a.clone();
        // a retry of a `contention` answer, with its key, learns what happened
        for _ in 0..50 {
            if a.code() != "contention" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            a = app.post("/v1/charges", key, &format!("order-9:{attempt}"), body(attempt as i32 + 1)).await;
        }
        assert_eq!(a.code(), "order_already_charged", "{a:?}");
        assert_eq!(a.json()["charge_id"], charge_id.as_str());
    }
    assert_eq!(app.db.count("charges").await, 1);
    let debited: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(debited, 1, "one buyer debited once");
    let report = ledger::audit::audit(&app.db.client().await, Default::default()).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

#[actix_web::test]
async fn hole_2_concurrent_attempts_of_one_order_by_one_buyer_charge_once() {
    concurrent_attempts(false).await;
}

#[actix_web::test]
async fn hole_2_concurrent_attempts_of_one_order_by_different_accounts_charge_once() {
    concurrent_attempts(true).await;
}

#[actix_web::test]
async fn hole_2_the_migration_refuses_a_database_where_an_order_was_charged_twice() {
    let p = paid().await;
    let url = p.app.db.url.clone();
    // back to before one charge per order, and the hole used: attempt 2 charged too
    let reverted = tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        use diesel_async::AsyncPgConnection;
        use diesel_migrations::MigrationHarness;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        let ours = |conn: &mut AsyncConnectionWrapper<AsyncPgConnection>| {
            let applied = conn.applied_migrations().unwrap();
            applied.iter().any(|v| v.to_string().replace('-', "").starts_with("20261129000001"))
        };
        let mut reverted = 0;
        while ours(&mut conn) {
            conn.revert_last_migration(ledger::db::MIGRATIONS).unwrap();
            reverted += 1;
        }
        reverted
    })
    .await
    .unwrap();
    assert!(reverted >= 1);
    p.app
        .db
        .client()
        .await
        .batch_execute(
            "SET session_replication_role = replica; \
             INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id, amount, fee, \
                                  currency, transaction_id) \
               SELECT gen_random_uuid(), tenant_id, order_id, 2, buyer_account_id, seller_account_id, amount, fee, \
                      currency, gen_random_uuid() FROM charges",
        )
        .await
        .unwrap();
    let refused = ledger::db::migrate(&p.app.db.url).await.expect_err("the migration stops");
    let message = refused.to_string();
    assert!(message.contains("orders charged more than once") && message.contains("order-1 (2 charges)"), "{message}");
}
