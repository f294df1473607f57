//! Stock and reservations: never oversold, released stock comes back.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::spawn_app;
use serde_json::json;

#[actix_web::test]
async fn concurrent_reservations_never_oversell() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let r = app.post("/v1/skus/mug/restocks", &key, "restock-1", json!({"quantity": 10})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.json()["available"], 10);
    // 25 orders of 2 units each against 10 units: 5 fit
    let (app, key) = (&app, &key);
    let answers = join_all((0..25).map(|i| async move {
        app.post(
            "/v1/reservations",
            key,
            &format!("ord-{i}:hold"),
            json!({"order_id": format!("ord-{i}"), "sku": "mug", "quantity": 2}),
        )
        .await
    }))
    .await;
    let held = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let out = answers.iter().filter(|a| a.status == StatusCode::CONFLICT && a.code() == "out_of_stock").count();
    assert_eq!((held, out), (5, 20), "{answers:?}");
    let sku = app.get("/v1/skus/mug", key).await.json();
    assert_eq!(
        (sku["on_hand"].as_i64(), sku["reserved"].as_i64(), sku["available"].as_i64()),
        (Some(10), Some(10), Some(0))
    );
    let db = app.db.client().await;
    let reserved: i64 = db
        .query_one("SELECT coalesce(sum(quantity), 0)::int8 FROM reservations WHERE status = 'held'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved, 10);
}

#[actix_web::test]
async fn a_release_gives_stock_back_once_and_a_second_hold_of_the_same_order_is_the_first() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    app.post("/v1/skus/lamp/restocks", &key, "restock", json!({"quantity": 3})).await;
    let hold =
        app.post("/v1/reservations", &key, "o1:hold", json!({"order_id": "o1", "sku": "lamp", "quantity": 2})).await;
    assert_eq!(hold.status, StatusCode::CREATED);
    let id = hold.id();
    // same order and SKU under another key: the existing hold, no second one
    let again = app
        .post("/v1/reservations", &key, "o1:hold-again", json!({"order_id": "o1", "sku": "lamp", "quantity": 2}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.natural_key_replayed);
    assert_eq!(again.id(), id);
    assert_eq!(app.get("/v1/skus/lamp", &key).await.json()["available"], 1);

    let released = app.send("POST", &format!("/v1/reservations/{id}/release"), &key, Some("o1:release"), None).await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    assert_eq!(released.json()["status"], "released");
    // releasing again, even under a new key, gives nothing back twice
    let twice = app.send("POST", &format!("/v1/reservations/{id}/release"), &key, Some("o1:release-2"), None).await;
    assert_eq!(twice.status, StatusCode::OK);
    let sku = app.get("/v1/skus/lamp", &key).await.json();
    assert_eq!((sku["reserved"].as_i64(), sku["available"].as_i64()), (Some(0), Some(3)));

    let missing =
        app.post("/v1/reservations", &key, "o2:hold", json!({"order_id": "o2", "sku": "nope", "quantity": 1})).await;
    assert_eq!((missing.status, missing.code().as_str()), (StatusCode::NOT_FOUND, "sku_not_found"));
}

#[actix_web::test]
async fn out_of_stock_is_stored_and_replayed() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    app.post("/v1/skus/cup/restocks", &key, "restock", json!({"quantity": 1})).await;
    let body = json!({"order_id": "o1", "sku": "cup", "quantity": 2});
    let first = app.post("/v1/reservations", &key, "o1:hold", body.clone()).await;
    assert_eq!(first.code(), "out_of_stock");
    app.post("/v1/skus/cup/restocks", &key, "restock-2", json!({"quantity": 5})).await;
    let replay = app.post("/v1/reservations", &key, "o1:hold", body).await;
    assert!(replay.replayed);
    assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    assert_eq!(app.db.count("reservations").await, 0);
}
