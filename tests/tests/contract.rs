//! Regressions found by fuzzing the server with its own OpenAPI document
//! (tests/contract/run.sh): each answer here is now what the spec documents.

use ledger_tests::spawn_app;
use serde_json::Value;

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
            if path.starts_with("/v1/") {
                assert!(responses.contains_key("401"), "{method} {path} documents 401");
            }
            let idempotent = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key" && p["required"] == true));
            assert_eq!(idempotent, method == "post", "{method} {path}: Idempotency-Key on every effectful POST");
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
    assert_eq!(idempotent_ops, 7, "every effectful POST");
}
