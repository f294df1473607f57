//! The two idempotency layers: the HTTP key and the ledger's natural keys.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

async fn parties(app: &TestApp, key: &str, funds: &str) -> (String, String) {
    let buyer = app.funded(key, "buyer", funds).await;
    let seller = app.account(key, "seller", "USD", false).await;
    (buyer, seller)
}

fn charge(order: &str, attempt: i32, buyer: &str, seller: &str, amount: &str) -> Value {
    json!({"order_id": order, "attempt": attempt, "buyer_account_id": buyer, "seller_account_id": seller,
           "amount": amount, "currency": "USD"})
}

#[actix_web::test]
async fn fifty_concurrent_identical_charges_make_one_effect_and_identical_answers() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "100.00").await;
    let body = charge("order-1", 1, &buyer, &seller, "25.00");
    let answers = join_all((0..50).map(|_| app.post("/v1/charges", &key, "order-1:1", body.clone()))).await;

    let first = &answers[0];
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    for a in &answers {
        assert_eq!((a.status, &a.body), (first.status, &first.body), "every answer is the first one, byte for byte");
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1, "exactly one request ran the effect");
    assert_eq!(app.db.count("charges").await, 1);
    let txs: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(txs, 1, "one ledger transaction");
    assert_eq!(app.balance(&key, &buyer).await, "75.00");
    assert_eq!(app.balance(&key, &seller).await, "25.00");
}

#[actix_web::test]
async fn same_order_attempt_with_another_key_makes_no_second_effect() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "100.00").await;
    let body = charge("order-2", 1, &buyer, &seller, "30.00");
    let first = app.post("/v1/charges", &key, "k-first", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let second = app.post("/v1/charges", &key, "k-second", body.clone()).await;
    assert_eq!(second.status, StatusCode::OK, "the existing charge, not a new one: {second:?}");
    assert!(second.natural_key_replayed && !second.replayed);
    assert_eq!(second.id(), first.id());
    // the second key now replays its own first answer
    let again = app.post("/v1/charges", &key, "k-second", body).await;
    assert!(again.replayed);
    assert_eq!((again.status, &again.body), (second.status, &second.body));

    // different terms for the same attempt are a conflict, not a second charge
    let other = app.post("/v1/charges", &key, "k-third", charge("order-2", 1, &buyer, &seller, "31.00")).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "natural_key_conflict");

    assert_eq!(app.db.count("charges").await, 1);
    assert_eq!(app.balance(&key, &buyer).await, "70.00");
}

#[actix_web::test]
async fn concurrent_duplicates_with_different_keys_make_one_charge() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "100.00").await;
    let body = charge("order-3", 1, &buyer, &seller, "10.00");
    let (app, key) = (&app, &key);
    let answers = join_all((0..20).map(|i| {
        let body = body.clone();
        async move { app.post("/v1/charges", key, &format!("dup-{i}"), body).await }
    }))
    .await;
    let ids: std::collections::HashSet<String> = answers.iter().map(|a| a.id()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.status == StatusCode::CREATED).count(), 1);
    assert_eq!(app.db.count("charges").await, 1);
    assert_eq!(app.balance(key, &buyer).await, "90.00");
}

#[actix_web::test]
async fn key_reused_for_another_request_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "100.00").await;
    let first = app.post("/v1/charges", &key, "reused", charge("order-4", 1, &buyer, &seller, "5.00")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let before = app.db.counts().await;

    let other = app.post("/v1/charges", &key, "reused", charge("order-5", 1, &buyer, &seller, "5.00")).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "idempotency_key_reused");
    // same key on another endpoint is another request too
    let elsewhere = app.post("/v1/accounts", &key, "reused", json!({"reference": "x", "currency": "USD"})).await;
    assert_eq!(elsewhere.code(), "idempotency_key_reused");
    assert_eq!(app.db.counts().await, before, "nothing written");

    // the same request with its keys in another order and spacing is the same request
    let reordered = format!(
        r#"{{ "currency": "USD", "amount": "5.00", "seller_account_id": "{seller}", "buyer_account_id": "{buyer}", "attempt": 1, "order_id": "order-4" }}"#
    );
    let same = app.send("POST", "/v1/charges", &key, Some("reused"), Some(reordered.as_bytes())).await;
    assert!(same.replayed);
    assert_eq!(same.body, first.body);
}

#[actix_web::test]
async fn a_decline_is_stored_and_replayed_and_the_next_attempt_can_succeed() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "10.00").await;
    let declined = app.post("/v1/charges", &key, "order-6:1", charge("order-6", 1, &buyer, &seller, "25.00")).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined.code(), "insufficient_funds");
    assert_eq!(app.db.count("charges").await, 0);

    // funds arrive; the same key still answers what it answered
    let ext = app.account(&key, "more-funds", "USD", true).await;
    let t = app
        .post(
            "/v1/transfers",
            &key,
            "top-up",
            json!({"source_account_id": ext, "destination_account_id": buyer, "amount": "50.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED);
    let replay = app.post("/v1/charges", &key, "order-6:1", charge("order-6", 1, &buyer, &seller, "25.00")).await;
    assert!(replay.replayed);
    assert_eq!((replay.status, &replay.body), (declined.status, &declined.body));

    let next = app.post("/v1/charges", &key, "order-6:2", charge("order-6", 2, &buyer, &seller, "25.00")).await;
    assert_eq!(next.status, StatusCode::CREATED);
    assert_eq!(app.balance(&key, &buyer).await, "35.00");
}

#[actix_web::test]
async fn validation_errors_are_not_stored() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "10.00").await;
    let missing = "00000000-0000-7000-8000-000000000000";
    let refused = app.post("/v1/charges", &key, "order-7:1", charge("order-7", 1, missing, &seller, "5.00")).await;
    assert_eq!(refused.code(), "account_not_found");
    assert_eq!(app.db.count("idempotency_keys").await, 4, "only the four set-up keys (three accounts, one transfer)");
    // the key was rolled back with the refused request: a corrected retry runs
    let ok = app.post("/v1/charges", &key, "order-7:1", charge("order-7", 1, &buyer, &seller, "5.00")).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    assert!(!ok.replayed);
    assert_eq!(app.db.count("charges").await, 1);
}

#[actix_web::test]
async fn missing_or_malformed_keys_are_refused() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let body = json!({"reference": "r", "currency": "USD"}).to_string();
    let none = app.send("POST", "/v1/accounts", &key, None, Some(body.as_bytes())).await;
    assert_eq!((none.status, none.code().as_str()), (StatusCode::BAD_REQUEST, "missing_idempotency_key"));
    let long = "k".repeat(256);
    let too_long = app.send("POST", "/v1/accounts", &key, Some(&long), Some(body.as_bytes())).await;
    assert_eq!((too_long.status, too_long.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_idempotency_key"));
    let max = "k".repeat(255);
    let ok = app.send("POST", "/v1/accounts", &key, Some(&max), Some(body.as_bytes())).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(app.db.count("accounts").await, 1);
}

#[actix_web::test]
async fn a_retry_after_the_key_expired_still_makes_no_second_charge() {
    let app = spawn_app_with(|c| {
        c.retention.idempotency_retention_secs = 3600;
        c.retention.client_max_retry_secs = 3600;
    })
    .await;
    let key = app.tenant("shop").await;
    let (buyer, seller) = parties(&app, &key, "100.00").await;
    let body = charge("order-8", 1, &buyer, &seller, "40.00");
    let first = app.post("/v1/charges", &key, "order-8:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let transactions = app.db.count("ledger_transactions").await;

    // age every key past the retention and purge, as the background task does
    let db = app.db.client().await;
    db.execute("UPDATE idempotency_keys SET created_at = now() - interval '2 hours'", &[]).await.unwrap();
    let pool = ledger::db::pool(&app.db.url, &Default::default()).unwrap();
    let purged =
        service::purge::once(&pool, service::purge::Target::IdempotencyKeys, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
    assert!(purged >= 1);
    let left: i64 =
        db.query_one("SELECT count(*) FROM idempotency_keys WHERE key = 'order-8:1'", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);

    let retry = app.post("/v1/charges", &key, "order-8:1", body).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert!(retry.natural_key_replayed);
    assert_eq!(retry.id(), first.id());
    assert_eq!(app.db.count("charges").await, 1);
    assert_eq!(app.db.count("ledger_transactions").await, transactions, "no second ledger transaction");
    assert_eq!(app.balance(&key, &buyer).await, "60.00");
}

#[actix_web::test]
async fn an_expired_key_not_yet_purged_is_taken_over() {
    let app = spawn_app_with(|c| {
        c.retention.idempotency_retention_secs = 3600;
        c.retention.client_max_retry_secs = 3600;
    })
    .await;
    let key = app.tenant("shop").await;
    let first = app.post("/v1/accounts", &key, "acct-k", json!({"reference": "a", "currency": "USD"})).await;
    assert_eq!(first.status, StatusCode::CREATED);
    app.db
        .client()
        .await
        .execute("UPDATE idempotency_keys SET created_at = now() - interval '2 hours'", &[])
        .await
        .unwrap();
    // expired: the key may now name a new request
    let other = app.post("/v1/accounts", &key, "acct-k", json!({"reference": "b", "currency": "USD"})).await;
    assert_eq!(other.status, StatusCode::CREATED, "{other:?}");
    assert!(!other.replayed);
    assert_eq!(app.db.count("accounts").await, 2);
}
