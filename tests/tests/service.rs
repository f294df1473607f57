//! The service around the API: health, the spec it serves, the docs page,
//! migrations that go down and up, a retry that meets an in-flight request.

use awc::http::StatusCode;
use ledger_tests::{spawn_app, spawn_app_with};
use serde_json::json;

#[actix_web::test]
async fn health_readiness_spec_and_docs_are_served() {
    let app = spawn_app().await;
    let key = "";
    assert_eq!(app.get("/healthz", key).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", key).await.status, StatusCode::OK);
    let served = app.get("/openapi.json", key).await.json();
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).expect("the committed spec is JSON");
    assert_eq!(served, committed, "the committed spec is what the server serves: run `make openapi`");
    assert!(served["paths"]["/v1/charges"]["post"].is_object());
    let docs = app.get("/docs/", key).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&docs.body).contains("swagger-ui"));
    // the assets are served by the binary, not a CDN
    let page = String::from_utf8_lossy(&docs.body).to_string();
    assert!(!page.contains("https://"), "the docs page loads nothing from the network");
    let js = app.get("/docs/swagger-ui-bundle.js", key).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.len() > 100_000);
}

#[actix_web::test]
async fn readiness_recovers_after_the_database_drops_its_connections() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz", "").await.status, StatusCode::OK);
    app.db
        .client()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&app.db.name],
        )
        .await
        .unwrap();
    // Each killed pooled connection answers one clean 503 (never a 500) and
    // is discarded; readiness comes back once the pool holds live ones again.
    let mut statuses = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = app.get("/readyz", "").await.status;
        statuses.push(status);
        if status == StatusCode::OK || std::time::Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");
}

#[actix_web::test]
async fn a_retry_while_the_first_request_holds_the_key_gets_409_with_retry_after() {
    let app = spawn_app_with(|c| c.database.db_lock_timeout_ms = 300).await;
    let key = app.tenant("shop").await;
    let tenant: uuid::Uuid = app.db.client().await.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);
    // Play the first request: claim the key in an open transaction and keep it open.
    let mut first = app.db.client().await;
    let tx = first.transaction().await.unwrap();
    tx.execute("INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, 'busy', '\\x00')", &[&tenant])
        .await
        .unwrap();
    let retry = app.post("/v1/accounts", &key, "busy", json!({"reference": "a", "currency": "USD"})).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "{retry:?}");
    assert_eq!(retry.code(), "request_in_progress");
    tx.rollback().await.unwrap();
    // the first one gave up: the retry now runs
    let again = app.post("/v1/accounts", &key, "busy", json!({"reference": "a", "currency": "USD"})).await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    assert_eq!(app.db.count("accounts").await, 1);
}

#[actix_web::test]
async fn a_retry_waits_for_the_first_request_and_replays_it() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let tenant: uuid::Uuid = app.db.client().await.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);
    let mut first = app.db.client().await;
    let tx = first.transaction().await.unwrap();
    tx.execute("INSERT INTO idempotency_keys (tenant_id, key, fingerprint) VALUES ($1, 'slow', '\\x00')", &[&tenant])
        .await
        .unwrap();
    let retry = app.post("/v1/accounts", &key, "slow", json!({"reference": "a", "currency": "USD"}));
    let finish = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // the first request completes with its stored answer
        tx.execute(
            "UPDATE idempotency_keys SET fingerprint = $2, status_code = 201, content_type = 'application/json', \
             response_body = '\\x7b7d' WHERE tenant_id = $1 AND key = 'slow'",
            &[&tenant, &account_request_fingerprint()],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    };
    let (answer, ()) = futures::join!(retry, finish);
    assert!(answer.replayed, "{answer:?}");
    assert_eq!((answer.status, answer.body.as_slice()), (StatusCode::CREATED, b"{}".as_slice()));
}

/// The fingerprint the server computes for the account request above:
/// SHA-256 of method, path and canonical body.
fn account_request_fingerprint() -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"POST\n/v1/accounts\n");
    h.update(br#"{"currency":"USD","reference":"a"}"#);
    h.finalize().to_vec()
}

#[actix_web::test]
async fn migrations_revert_and_reapply_cleanly() {
    let db = ledger_tests::TestDb::new().await;
    let url = db.url.clone();
    let (reverted, reapplied) = tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
        use diesel_async::AsyncPgConnection;
        use diesel_migrations::MigrationHarness;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url).unwrap();
        let reverted = conn.revert_all_migrations(ledger::db::MIGRATIONS).unwrap().len();
        let reapplied = conn.run_pending_migrations(ledger::db::MIGRATIONS).unwrap().len();
        (reverted, reapplied)
    })
    .await
    .unwrap();
    assert!(reverted >= 1);
    assert_eq!(reverted, reapplied);
    let tables: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(tables >= 12);
}

/// The fake provider's published development secrets are refused against a
/// provider that is not on this machine: a deployment that forgot
/// GATEWAY_WEBHOOK_SECRET would otherwise accept webhooks anyone can sign.
#[actix_web::test]
async fn the_published_development_secrets_are_refused_against_a_remote_provider() {
    let app = spawn_app().await;
    let remote = "https://payments.example.com";
    let api = std::process::Command::new(ledger_tests::api_process::api_binary())
        .arg("serve")
        .env("DATABASE_URL", &app.db.url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("GATEWAY_URL", remote)
        .env("GATEWAY_SECRET_KEY", "sk_live_real")
        .env_remove("GATEWAY_WEBHOOK_SECRET")
        .env_remove("GATEWAY_ALLOW_DEVELOPMENT_SECRETS")
        .output()
        .expect("the API binary runs");
    let said = String::from_utf8_lossy(&api.stderr).to_string() + &String::from_utf8_lossy(&api.stdout);
    assert!(!api.status.success(), "{said}");
    assert!(said.contains("GATEWAY_WEBHOOK_SECRET is the fake provider's published development secret"), "{said}");

    let mut config = workers::config::Config::local(&app.db.url, "dev-secrets");
    config.gateway.gateway_url = remote.to_owned();
    let completer = ledger_tests::run_worker_command(&config, &["completer"]).await;
    let said = String::from_utf8_lossy(&completer.stderr).to_string();
    assert!(!completer.status.success(), "{said}");
    assert!(said.contains("is the fake provider's published development secret"), "{said}");

    // allowed on purpose (a shared development provider): the check passes
    config.gateway.gateway_allow_development_secrets = true;
    assert!(config.gateway.check_secrets().is_ok());
}
