//! One tenant can never read, replay or move another's data.

use awc::http::StatusCode;
use ledger_tests::spawn_app;
use serde_json::json;

#[actix_web::test]
async fn tenants_cannot_see_move_or_replay_each_others_data() {
    let app = spawn_app().await;
    let alice = app.tenant("alice-shop").await;
    let mallory = app.tenant("mallory-shop").await;
    let a_buyer = app.funded(&alice, "buyer", "100.00").await;
    let a_seller = app.account(&alice, "seller", "USD", false).await;
    let body = json!({"order_id": "o1", "attempt": 1, "buyer_account_id": a_buyer, "seller_account_id": a_seller,
                      "amount": "20.00", "currency": "USD"});
    let charge = app.post("/v1/charges", &alice, "o1:1", body.clone()).await;
    assert_eq!(charge.status, StatusCode::CREATED);
    let charge_id = charge.id();
    app.post("/v1/skus/mug/restocks", &alice, "restock", json!({"quantity": 5})).await;
    let hold =
        app.post("/v1/reservations", &alice, "o1:hold", json!({"order_id": "o1", "sku": "mug", "quantity": 1})).await;
    let hold_id = hold.id();
    let before = app.db.counts().await;

    // reads: not found, exactly like an id that does not exist
    for path in [
        format!("/v1/accounts/{a_buyer}"),
        format!("/v1/accounts/{a_buyer}/entries"),
        format!("/v1/charges/{charge_id}"),
        format!("/v1/reservations/{hold_id}"),
        "/v1/skus/mug".to_owned(),
    ] {
        let r = app.get(&path, &mallory).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r:?}");
    }
    let list = app.get("/v1/charges?order_id=o1", &mallory).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 0);

    // the same Idempotency-Key and body under another tenant is not a replay of alice's answer
    let replay = app.post("/v1/charges", &mallory, "o1:1", body.clone()).await;
    assert!(!replay.replayed);
    assert_eq!((replay.status, replay.code().as_str()), (StatusCode::NOT_FOUND, "account_not_found"));

    // moving alice's money with mallory's key: refused
    let m_account = app.account(&mallory, "mine", "USD", true).await;
    let steal = app
        .post(
            "/v1/transfers",
            &mallory,
            "steal",
            json!({"source_account_id": a_buyer, "destination_account_id": m_account, "amount": "1.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(steal.code(), "account_not_found");
    let refund =
        app.post(&format!("/v1/charges/{charge_id}/refunds"), &mallory, "refund", json!({"reference": "refund"})).await;
    assert_eq!(refund.code(), "charge_not_found");
    let release = app.send("POST", &format!("/v1/reservations/{hold_id}/release"), &mallory, Some("rel"), None).await;
    assert_eq!(release.code(), "reservation_not_found");

    let after = app.db.counts().await;
    let changed: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    // mallory's own account and its key are the only new rows
    assert_eq!(
        changed.iter().map(|(b, _)| b.0.as_str()).collect::<Vec<_>>(),
        ["accounts", "idempotency_keys"],
        "{changed:?}"
    );
    assert_eq!(app.balance(&alice, &a_buyer).await, "80.00");
}

#[actix_web::test]
async fn requests_without_a_valid_key_are_refused() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let account = app.account(&key, "a", "USD", false).await;
    for bad in ["", "lk_wrong", "Basic abc"] {
        let r = app.get(&format!("/v1/accounts/{account}"), bad).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{bad}");
    }
    let revoked = app.tenant("other").await;
    let mut conn = ledger::tenants::connect(&app.db.url).await.unwrap();
    assert_eq!(ledger::tenants::revoke_keys(&mut conn, &revoked[..11]).await.unwrap(), 1);
    let r = app.get(&format!("/v1/accounts/{account}"), &revoked).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
