//! Every kind of bad input gets a 4xx problem with a stable code and writes
//! nothing: not an effect, not an idempotency key.

use awc::http::StatusCode;
use ledger_tests::spawn_app;
use serde_json::json;

#[actix_web::test]
async fn bad_input_is_a_problem_with_a_stable_code_and_writes_nothing() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let euro = app.account(&key, "euro", "EUR", false).await;
    let yen = app.account(&key, "yen", "JPY", true).await;
    let charge = app
        .post(
            "/v1/charges",
            &key,
            "ok:1",
            json!({"order_id": "ok", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller, "amount": "10.00", "currency": "USD"}),
        )
        .await
        .id();
    app.post("/v1/skus/mug/restocks", &key, "restock", json!({"quantity": 3})).await;
    let missing = "00000000-0000-7000-8000-000000000000";
    let c = |amount: serde_json::Value, currency: &str| {
        json!({"order_id": "o", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller, "amount": amount, "currency": currency})
            .to_string()
    };
    let charge_with = |patch: serde_json::Value| {
        let mut v = json!({"order_id": "o", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller, "amount": "1.00", "currency": "USD"});
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v.to_string()
    };
    let json_ct = "application/json";
    let cases: Vec<(&str, String, &str, String, u16, &str)> = vec![
        ("POST", "/v1/charges".into(), json_ct, r#"{"order_id": "#.into(), 400, "malformed_json"),
        ("POST", "/v1/charges".into(), json_ct, "".into(), 400, "malformed_json"),
        ("POST", "/v1/charges".into(), "text/plain", c(json!("1.00"), "USD"), 415, "unsupported_media_type"),
        ("POST", "/v1/charges".into(), "", c(json!("1.00"), "USD"), 415, "unsupported_media_type"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"surprise": true})), 400, "invalid_body"),
        ("POST", "/v1/charges".into(), json_ct, json!({"order_id": "o"}).to_string(), 400, "invalid_body"),
        ("POST", "/v1/charges".into(), json_ct, "[]".into(), 400, "invalid_body"),
        ("POST", "/v1/charges".into(), json_ct, c(json!(1.5), "USD"), 400, "invalid_body"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"attempt": "one"})), 400, "invalid_body"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("-5.00"), "USD"), 409, "amount_not_positive"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("0.00"), "USD"), 409, "amount_not_positive"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1.001"), "USD"), 409, "amount_too_precise"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1.5"), "JPY"), 409, "amount_too_precise"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1000000000.01"), "USD"), 409, "amount_too_large"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1e3"), "USD"), 422, "invalid_amount"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("ten"), "USD"), 422, "invalid_amount"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1.00"), "XYZ"), 422, "unknown_currency"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1.00"), "usd"), 422, "unknown_currency"),
        ("POST", "/v1/charges".into(), json_ct, c(json!("1.00"), "EUR"), 409, "currency_mismatch"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"seller_account_id": euro})), 409, "currency_mismatch"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"buyer_account_id": missing})), 404, "account_not_found"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"seller_account_id": buyer})), 409, "same_account"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"attempt": 0})), 422, "invalid_field"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"order_id": "x".repeat(256)})), 422, "invalid_field"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"order_id": ""})), 422, "invalid_field"),
        ("POST", "/v1/charges".into(), json_ct, charge_with(json!({"order_id": "bad\u{7}id"})), 422, "invalid_field"),
        (
            "POST",
            "/v1/charges".into(),
            json_ct,
            charge_with(json!({"platform_fee": {"account_id": euro, "amount": "2.00"}})),
            409,
            "fee_exceeds_amount",
        ),
        ("POST", "/v1/charges".into(), json_ct, format!(r#"{{"order_id": "{}"}}"#, "x".repeat(20_000)), 413, "payload_too_large"),
        (
            "POST",
            "/v1/transfers".into(),
            json_ct,
            json!({"source_account_id": buyer, "destination_account_id": yen, "amount": "1.00", "currency": "USD"}).to_string(),
            409,
            "currency_mismatch",
        ),
        (
            "POST",
            "/v1/transfers".into(),
            json_ct,
            json!({"source_account_id": buyer, "destination_account_id": buyer, "amount": "1.00", "currency": "USD"}).to_string(),
            409,
            "same_account",
        ),
        (
            "POST",
            "/v1/transfers".into(),
            json_ct,
            json!({"source_account_id": buyer, "destination_account_id": seller, "amount": "1.00", "currency": "USD", "description": "d".repeat(501)}).to_string(),
            422,
            "invalid_field",
        ),
        ("POST", "/v1/accounts".into(), json_ct, json!({"reference": "r", "currency": "ABC"}).to_string(), 422, "unknown_currency"),
        ("POST", "/v1/accounts".into(), json_ct, json!({"reference": " r", "currency": "USD"}).to_string(), 422, "invalid_field"),
        ("POST", "/v1/accounts".into(), json_ct, json!({"reference": "buyer", "currency": "EUR"}).to_string(), 409, "natural_key_conflict"),
        ("POST", format!("/v1/charges/{charge}/refunds"), json_ct, json!({"amount": "0.001", "reference": "r"}).to_string(), 409, "amount_too_precise"),
        ("POST", format!("/v1/charges/{charge}/refunds"), json_ct, json!({"amount": "-1", "reference": "r"}).to_string(), 409, "amount_not_positive"),
        ("POST", format!("/v1/charges/{missing}/refunds"), json_ct, json!({"reference": "r"}).to_string(), 404, "charge_not_found"),
        ("POST", "/v1/charges/not-a-uuid/refunds".into(), json_ct, json!({"reference": "r"}).to_string(), 404, "not_found"),
        ("POST", "/v1/skus/bad%20sku/restocks".into(), json_ct, json!({"quantity": 1}).to_string(), 422, "invalid_field"),
        ("POST", "/v1/skus/mug/restocks".into(), json_ct, json!({"quantity": 0}).to_string(), 422, "invalid_field"),
        ("POST", "/v1/skus/mug/restocks".into(), json_ct, json!({"quantity": 1_000_001}).to_string(), 422, "invalid_field"),
        ("POST", "/v1/skus/mug/restocks".into(), json_ct, json!({"quantity": 1.5}).to_string(), 400, "invalid_body"),
        ("POST", "/v1/reservations".into(), json_ct, json!({"order_id": "o", "sku": "mug", "quantity": -1}).to_string(), 422, "invalid_field"),
        ("POST", "/v1/reservations".into(), json_ct, json!({"order_id": "o", "sku": "ghost", "quantity": 1}).to_string(), 404, "sku_not_found"),
        ("POST", format!("/v1/reservations/{missing}/release"), "", "".into(), 404, "reservation_not_found"),
        ("GET", "/v1/accounts/not-a-uuid".into(), "", "".into(), 404, "not_found"),
        ("GET", format!("/v1/accounts/{missing}"), "", "".into(), 404, "account_not_found"),
        ("GET", format!("/v1/accounts/{buyer}/entries?limit=1000"), "", "".into(), 400, "invalid_parameter"),
        ("GET", "/v1/charges?status=paid".into(), "", "".into(), 400, "invalid_parameter"),
        ("GET", "/v1/nothing-here".into(), "", "".into(), 404, "not_found"),
    ];
    let before = app.db.counts().await;
    for (i, (method, path, content_type, body, status, code)) in cases.into_iter().enumerate() {
        let mut req = app
            .http
            .request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{}", app.base, path))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .insert_header(("Idempotency-Key", format!("bad-{i}")));
        if !content_type.is_empty() {
            req = req.insert_header(("Content-Type", content_type));
        }
        let mut res = req.send_body(body.clone()).await.unwrap();
        let got = res.body().await.unwrap();
        let text = String::from_utf8_lossy(&got);
        assert_eq!(res.status(), StatusCode::from_u16(status).unwrap(), "case {i} {method} {path} {body:.80}: {text}");
        assert_eq!(
            res.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "case {i}: {text}"
        );
        let problem: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(problem["code"], code, "case {i} {method} {path}: {text}");
        assert_eq!(problem["status"], status, "case {i}");
        assert_eq!(problem["type"], format!("/problems/{code}"), "case {i}");
        assert!(problem["title"].is_string() && problem["detail"].is_string(), "case {i}");
    }
    assert_eq!(app.db.counts().await, before, "a refused request writes nothing");
}
