//! Regressions found by fuzzing the server with its own OpenAPI document
//! (tests/contract/run.sh): each answer here is now what the spec documents.

use ledger_tests::spawn_app;
use serde_json::{json, Value};

/// A method the spec does not list for an existing path is 405 with `Allow`,
/// not 404 (schemathesis `unsupported_method`, `allow_header_conformance`).
#[actix_web::test]
async fn an_unlisted_method_on_a_known_path_is_405_with_allow() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let account = app.account(&key, "buyer", "USD", false).await;
    for (method, path, allow) in [
        ("TRACE", "/healthz".to_owned(), "GET"),
        ("DELETE", "/readyz".to_owned(), "GET"),
        ("PUT", "/v1/charges".to_owned(), "GET, POST"),
        ("DELETE", format!("/v1/accounts/{account}"), "GET"),
        ("GET", "/v1/skus/mug/restocks".to_owned(), "POST"),
        ("PATCH", "/v1/reservations/00000000-0000-7000-8000-000000000000/release".to_owned(), "POST"),
        // served, though not in the document (`routes::UNDOCUMENTED`)
        ("GET", "/v1/provider/webhooks".to_owned(), "POST"),
    ] {
        let mut res = app
            .http
            .request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", app.base))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 405, "{method} {path}");
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(header("allow"), allow, "{method} {path}");
        assert_eq!(header("content-type"), "application/problem+json", "{method} {path}");
        let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
        assert_eq!(body["status"], 405);
    }
    // A path that does not exist at all is still 404.
    let a = app.send("TRACE", "/v1/nothing-here", &key, None, None).await;
    assert_eq!((a.status.as_u16(), a.code()), (404, "not_found".to_owned()));
    let a = app.get("/v1/accounts/x/y/z", &key).await;
    assert_eq!((a.status.as_u16(), a.code()), (404, "not_found".to_owned()));
}

/// Invalid path and query values of GETs are documented 422 `invalid_field`.
#[actix_web::test]
async fn invalid_sku_and_order_id_on_reads_are_documented_422() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    for path in ["/v1/skus/%2A%C3%BD", "/v1/skus/-mug", "/v1/charges?order_id=", "/v1/charges?order_id=%20o"] {
        let a = app.get(path, &key).await;
        assert_eq!((a.status.as_u16(), a.code()), (422, "invalid_field".to_owned()), "{path}: {a:?}");
        assert_eq!(a.content_type, "application/problem+json");
    }
    let spec = api::openapi::document();
    for (path, method) in [("/v1/skus/{sku}", "get"), ("/v1/charges", "get")] {
        let item = &spec.paths.paths[path];
        let op = if method == "get" { item.get.as_ref() } else { item.post.as_ref() }.unwrap();
        assert!(op.responses.responses.contains_key("422"), "{method} {path} documents 422");
    }
}

/// An operation the document says needs no API key (`security: [{}]`): none
/// under /v1. The provider's webhooks go without a key (they are signed
/// instead) and are therefore not in the document at all.
fn unauthenticated(op: &Value) -> bool {
    let open = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())));
    assert!(!open, "{}: every operation under /v1 in the document needs an API key", op["operationId"]);
    open
}

/// The provider's webhooks are served but left out of the document: a
/// storefront's generated client must not offer an operation only the
/// payment provider calls, and no generated request can carry the signature
/// it needs.
#[actix_web::test]
async fn the_provider_webhooks_are_served_but_not_documented() {
    let app = spawn_app().await;
    let spec = serde_json::to_string(&api::openapi::document()).unwrap();
    for absent in ["/v1/provider/webhooks", "receive_provider_webhook", "Stripe-Signature", "WebhookReceipt"] {
        assert!(!spec.contains(absent), "the document mentions {absent}");
    }
    for (path, _) in api::routes::UNDOCUMENTED {
        assert!(!spec.contains(&format!("\"{path}\"")), "{path} is documented");
    }
    // served: an unsigned event is refused as the provider's route refuses it
    let mut res = app
        .http
        .post(format!("{}/v1/provider/webhooks", app.base))
        .insert_header(("Content-Type", "application/json"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["code"], "invalid_signature");
}

/// Every authenticated operation documents 401, and every effectful POST the
/// replay header, in the document the server serves.
#[actix_web::test]
async fn the_served_document_lists_401_and_the_replay_header() {
    let app = spawn_app().await;
    let mut res = app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap();
    let spec: Value = serde_json::from_slice(&res.body().limit(1 << 20).await.unwrap()).unwrap();
    let committed: Value =
        serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))).unwrap();
    assert_eq!(spec, committed, "the served document is the committed one; run `make openapi`");
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") && !unauthenticated(op) {
                assert!(responses.contains_key("401"), "{method} {path} documents 401");
            }
            let idempotent = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key" && p["required"] == true));
            // the provider's webhooks are deduplicated by their event id instead
            let effectful = method == "post" && !unauthenticated(op);
            assert_eq!(idempotent, effectful, "{method} {path}: Idempotency-Key on every effectful POST");
            if idempotent {
                for (status, r) in responses {
                    if status.starts_with('2') {
                        assert!(r["headers"]["Idempotent-Replayed"].is_object(), "{method} {path} {status}");
                    }
                }
            }
        }
    }
}

/// The spec says an operation is idempotent exactly when its handler takes
/// the `IdempotencyKey` extractor: every documented operation, sent without
/// the header, is refused with 400 `missing_idempotency_key` if and only if
/// the document lists the header for it.
#[actix_web::test]
async fn the_documented_idempotency_key_is_the_one_the_server_requires() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let account = app.account(&key, "buyer", "USD", false).await;
    let spec: Value = serde_json::to_value(api::openapi::document()).unwrap();
    let mut idempotent_ops = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let documented = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
            let concrete = path.replace("{id}", &account).replace("{sku}", "mug");
            let body = (method == "post").then_some(&b"{}"[..]);
            let a = app.send(&method.to_uppercase(), &concrete, &key, None, body).await;
            let refused = a.status.as_u16() == 400
                && a.content_type == "application/problem+json"
                && a.json()["code"] == "missing_idempotency_key";
            assert_eq!(refused, documented, "{method} {path}: {a:?}");
            idempotent_ops += documented as usize;
        }
    }
    assert_eq!(idempotent_ops, 12, "every effectful POST");
}

/// The `limit` of the entries page is documented with the bounds the server
/// enforces, 1 to 100 (schemathesis 4.32 sent `limit=-9223372036854775808`,
/// schema-valid when the document gave no bounds, and got 400); the cursor
/// with the form of the cursors the server gives out (entry ids).
#[actix_web::test]
async fn the_entries_page_documents_the_limit_and_cursor_it_enforces() {
    let spec: Value = serde_json::to_value(api::openapi::document()).unwrap();
    let params = spec["paths"]["/v1/accounts/{id}/entries"]["get"]["parameters"].as_array().unwrap().clone();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["schema"].clone();
    assert_eq!(param("limit")["minimum"], 1);
    assert_eq!(param("limit")["maximum"], ledger::pagination::MAX_PAGE);
    assert_eq!(param("starting_after"), param("ending_before"));
    let cursor = regex::Regex::new(param("starting_after")["pattern"].as_str().unwrap()).unwrap();

    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let ext = app.account(&key, "ext", "USD", true).await;
    let account = app.account(&key, "buyer", "USD", false).await;
    for n in 0..2 {
        let body =
            json!({"source_account_id": ext, "destination_account_id": account, "amount": "5.00", "currency": "USD"});
        assert_eq!(app.post("/v1/transfers", &key, &format!("fund:{n}"), body).await.status.as_u16(), 201);
    }
    let page = |query: String| {
        let (app, key, account) = (&app, &key, &account);
        async move { app.get(&format!("/v1/accounts/{account}/entries?{query}"), key).await }
    };
    for limit in [1, 50, 100] {
        assert_eq!(page(format!("limit={limit}")).await.status.as_u16(), 200, "limit {limit}");
    }
    for limit in ["0", "101", "-9223372036854775808"] {
        let a = page(format!("limit={limit}")).await;
        assert_eq!((a.status.as_u16(), a.code()), (400, "invalid_parameter".to_owned()), "limit {limit}");
    }
    // every cursor the server gives out fits the documented pattern, and one
    // that fits it is accepted
    let first = page("limit=1".into()).await.json();
    assert_eq!(first["has_more"], true, "a second page");
    let next = first["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(cursor.is_match(&next), "{next}");
    for name in ["starting_after", "ending_before"] {
        assert_eq!(page(format!("{name}={next}")).await.status.as_u16(), 200);
        // one that fits it and is no entry of the account is not found
        let a = page(format!("{name}=999999999999999999")).await;
        assert_eq!((a.status.as_u16(), a.code()), (404, "entry_not_found".to_owned()));
        for bad in ["abc", "0", "-1"] {
            assert!(!cursor.is_match(bad), "{bad}");
            assert_eq!(page(format!("{name}={bad}")).await.code(), "invalid_parameter", "{bad}");
        }
    }
}

/// An integer field takes every number JSON Schema calls an integer: `5.0`
/// and `1e0` as well as `5` (schemathesis 4.32 sent `{"quantity": 34600.0}`
/// and got 400 `invalid_body`). `5.0` is the same request as `5`: a retry
/// spelled either way replays. A fraction is still refused.
#[actix_web::test]
async fn integer_fields_take_integral_json_numbers() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let restock =
        |body: &'static str| app.send("POST", "/v1/skus/mug/restocks", &key, Some("restock:1"), Some(body.as_bytes()));
    let first = restock(r#"{"quantity": 5.0}"#).await;
    assert_eq!(first.status.as_u16(), 201, "{first:?}");
    assert_eq!(first.json()["on_hand"], 5);
    let retry = restock(r#"{"quantity": 5}"#).await;
    assert_eq!((retry.status.as_u16(), retry.replayed, &retry.body), (201, true, &first.body), "the same request");

    let hold = app
        .send(
            "POST",
            "/v1/reservations",
            &key,
            Some("o1:mug"),
            Some(br#"{"order_id": "o1", "sku": "mug", "quantity": 2e0}"#),
        )
        .await;
    assert_eq!((hold.status.as_u16(), hold.json()["quantity"].clone()), (201, Value::from(2)), "{hold:?}");

    let buyer = app.funded(&key, "buyer", "50.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let charge = format!(
        r#"{{"order_id": "o1", "attempt": 1.0, "buyer_account_id": "{buyer}", "seller_account_id": "{seller}",
             "amount": "10.00", "currency": "USD"}}"#
    );
    let a = app.send("POST", "/v1/charges", &key, Some("o1:1"), Some(charge.as_bytes())).await;
    assert_eq!((a.status.as_u16(), a.json()["attempt"].clone()), (201, Value::from(1)), "{a:?}");

    for fraction in [r#"{"quantity": 2.5}"#, r#"{"quantity": 1e-1}"#] {
        let a = app.send("POST", "/v1/skus/mug/restocks", &key, Some(fraction), Some(fraction.as_bytes())).await;
        assert_eq!((a.status.as_u16(), a.code()), (400, "invalid_body".to_owned()), "{fraction}");
    }
    assert_eq!(app.db.count("stock_entries").await, 1);
}

/// `receipt_email` is documented with the rule the server applies
/// (schemathesis 4.32 sent a schema-valid string that was not an address
/// and got 422 `invalid_field`): every address the pattern allows is
/// accepted, and every one it refuses is refused.
#[actix_web::test]
async fn receipt_email_is_documented_with_the_rule_the_server_applies() {
    let spec: Value = serde_json::to_value(api::openapi::document()).unwrap();
    let schema = &spec["components"]["schemas"]["CreateCharge"]["properties"]["receipt_email"];
    let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "50.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let emails =
        ["buyer@example.com", "a@b.c", "x@.", "a+b@x.y.z", "", "buyer", "a@b", "@b.c", "a@@b.c", "a b@c.d", "é@x.y"];
    for (n, email) in emails.into_iter().enumerate() {
        let body = json!({"order_id": format!("o{n}"), "attempt": 1, "buyer_account_id": buyer,
                          "seller_account_id": seller, "amount": "1.00", "currency": "USD", "receipt_email": email});
        let a = app.post("/v1/charges", &key, &format!("o{n}:1"), body).await;
        let documented = pattern.is_match(email) && email.len() <= schema["maxLength"].as_u64().unwrap() as usize;
        let accepted = a.status.as_u16() == 201;
        assert_eq!(accepted, documented, "`{email}`: {a:?}");
        if !accepted {
            assert_eq!(a.code(), "invalid_field", "`{email}`");
        }
    }
}

/// Every authenticated operation documents 429 `rate_limited` with
/// `Retry-After`, and the Idempotency-Key has no one example value that
/// generated requests would all reuse.
#[actix_web::test]
async fn every_authenticated_operation_documents_429_and_no_key_example() {
    let spec: Value = serde_json::to_value(api::openapi::document()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let r = &op["responses"]["429"];
            if path.starts_with("/v1/") && !unauthenticated(op) {
                assert!(r["description"].as_str().unwrap().contains("rate_limited"), "{method} {path}");
                assert_eq!(r["headers"]["Retry-After"]["$ref"], "#/components/headers/Retry-After", "{method} {path}");
            } else {
                assert!(r.is_null(), "{method} {path} is not authenticated");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "Idempotency-Key" {
                    assert!(p.get("example").is_none() && p["schema"].get("example").is_none(), "{method} {path}");
                }
            }
        }
    }
}

/// A schema-valid request refused by a rule no schema states is 409, which
/// schemathesis's `positive_data_acceptance` expects out of the box, and is
/// documented there; 422 is left to fields that break their schema
/// (docs/contract.md, "Status codes").
#[actix_web::test]
async fn rules_beyond_the_schema_are_documented_and_answered_409() {
    const RULES: [&str; 17] = [
        "idempotency_key_reused",
        "conflicting_cursors",
        "as_of_too_recent",
        "invalid_period",
        "statement_too_large",
        "currency_mismatch",
        "same_account",
        "invalid_payment_source",
        "fee_exceeds_amount",
        "invalid_authorization",
        "refund_exceeds_charge",
        "capture_exceeds_authorization",
        "invalid_url",
        "private_destination",
        "amount_not_positive",
        "amount_too_precise",
        "amount_too_large",
    ];
    let spec = serde_json::to_value(api::openapi::document()).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let said = |status: &str| op["responses"][status]["description"].as_str().unwrap_or("").to_owned();
            for rule in RULES {
                let named = format!("`{rule}`");
                assert!(!said("422").contains(&named), "{method} {path}: {rule} under 422");
                assert!(!said("400").contains(&named), "{method} {path}: {rule} under 400");
                if said("409").contains(&named) {
                    documented.insert(rule);
                }
            }
        }
    }
    assert_eq!(documented.len(), RULES.len(), "each rule is documented under a 409: {documented:?}");

    // answered as documented: a rule across fields, one against the ledger's
    // state, and a key reused with another body, with nothing written
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.account(&key, "buyer", "USD", false).await;
    let seller = app.account(&key, "seller", "JPY", false).await;
    let charge = |amount: &str| {
        json!({"order_id": "o-1", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
               "amount": amount, "currency": "USD"})
    };
    let same =
        json!({"source_account_id": buyer, "destination_account_id": buyer, "amount": "1.00", "currency": "USD"});
    for (path, idem, body, code) in [
        ("/v1/transfers", "t1", same, "same_account"),
        ("/v1/charges", "c1", charge("1.00"), "currency_mismatch"),
        ("/v1/charges", "c2", charge("0.00"), "amount_not_positive"),
    ] {
        let a = app.post(path, &key, idem, body).await;
        assert_eq!((a.status.as_u16(), a.code()), (409, code.to_owned()), "{a:?}");
        assert_eq!(a.retry_after, None, "a rule is final: no Retry-After");
    }
    let first = app.post("/v1/accounts", &key, "k", json!({"reference": "a", "currency": "USD"})).await;
    assert_eq!(first.status.as_u16(), 201);
    let reused = app.post("/v1/accounts", &key, "k", json!({"reference": "b", "currency": "USD"})).await;
    assert_eq!((reused.status.as_u16(), reused.code()), (409, "idempotency_key_reused".to_owned()));
    assert_eq!(app.scalar("SELECT count(*) FROM accounts WHERE reference = 'b'").await, 0);
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 0);
}
