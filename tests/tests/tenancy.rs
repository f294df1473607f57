//! One tenant can never read, replay or move another's data; a tenant's keys
//! can be rotated without downtime.

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use ledger_tests::api_process::{api_binary, ApiProcess};
use ledger_tests::{spawn_app, spawn_app_with, TestDb};
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

// ------------------------------------------------------------------ API keys

/// `ledger-api <args>` against `db_url`; its standard output, trimmed.
fn admin(db_url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(api_binary())
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "error")
        .output()
        .expect("ledger-api runs");
    assert!(out.status.success(), "ledger-api {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn status_of(http: &awc::Client, url: &str, key: &str) -> u16 {
    let res = http.get(url).insert_header(("Authorization", format!("Bearer {key}"))).send().await;
    res.expect("the API answers").status().as_u16()
}

/// Rotation without downtime across two API processes on one database: a
/// new key works on both from its first request while the old one still
/// does; a revoked key is refused by both within API_KEY_CACHE_MS (the
/// default, 2 s), measured from the moment `revoke-key` returned.
#[actix_web::test]
async fn keys_rotate_without_downtime_and_a_revoked_key_stops_within_the_cache_period() {
    let db = TestDb::new().await;
    let old = admin(&db.url, &["create-tenant", "shop"]);
    let apis = [ApiProcess::start(&db.url, &[]).await, ApiProcess::start(&db.url, &[]).await];
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let urls: Vec<String> = apis.iter().map(|a| a.url("/v1/charges?order_id=o")).collect();
    for url in &urls {
        assert_eq!(status_of(&http, url, &old).await, 200);
    }

    let new = admin(&db.url, &["create-key", "shop"]);
    assert_ne!(new, old);
    for url in &urls {
        assert_eq!(status_of(&http, url, &new).await, 200, "a new key works at once");
        assert_eq!(status_of(&http, url, &old).await, 200, "and the old one still does");
    }

    // the old key, looked up just now by both processes, is revoked
    for url in &urls {
        assert_eq!(status_of(&http, url, &old).await, 200);
    }
    assert_eq!(admin(&db.url, &["revoke-key", &old[..11]]), "1 key(s) revoked");
    let revoked = Instant::now();
    for url in &urls {
        // still cached: no lookup per request
        assert_eq!(status_of(&http, url, &old).await, 200, "served from the cache right after the revocation");
    }
    let mut delays = Vec::new();
    for url in &urls {
        loop {
            if status_of(&http, url, &old).await == 401 {
                delays.push(revoked.elapsed());
                break;
            }
            assert!(revoked.elapsed() < Duration::from_secs(10), "the revoked key kept working");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!("revocation: refused after {:?} and {:?} (API_KEY_CACHE_MS 2000)", delays[0], delays[1]);
    for d in &delays {
        // the cache period, plus one poll and one request on a busy machine
        assert!(*d <= Duration::from_millis(2000 + 300), "revoked key refused after {d:?}");
    }
    for url in &urls {
        assert_eq!(status_of(&http, url, &new).await, 200, "the other key is untouched");
    }

    let listing = admin(&db.url, &["list-keys", "shop"]);
    let rows: Vec<&str> = listing.lines().filter(|l| l.starts_with("lk_")).collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(rows.iter().any(|r| r.starts_with(&old[..11]) && !r.trim_end().ends_with('-')), "old revoked: {listing}");
    assert!(rows.iter().any(|r| r.starts_with(&new[..11]) && r.trim_end().ends_with('-')), "new live: {listing}");
}

/// `last_used_at` is written in batches, not per request: hundreds of
/// requests over a few flush intervals make one statement per interval.
#[actix_web::test]
async fn last_use_is_recorded_in_one_statement_per_interval() {
    let app = spawn_app_with(|c| c.api_key_last_used_flush_secs = 1).await;
    let used = app.tenant("shop").await;
    let mut conn = ledger::tenants::connect(&app.db.url).await.unwrap();
    let tenant = ledger::tenants::find(&mut conn, "shop").await.unwrap().id;
    let idle = ledger::tenants::issue_key(&mut conn, tenant).await.unwrap();
    let client = app.db.client().await;
    client
        .batch_execute(
            "CREATE TABLE key_writes (n bigint NOT NULL); INSERT INTO key_writes VALUES (0);
             CREATE FUNCTION count_key_writes() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN UPDATE key_writes SET n = n + 1; RETURN NULL; END $$;
             CREATE TRIGGER count_key_writes AFTER UPDATE ON api_keys
               FOR EACH STATEMENT EXECUTE FUNCTION count_key_writes();",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let answers = futures::future::join_all((0..10).map(|_| app.get("/v1/charges?order_id=o", &used))).await;
        assert!(answers.iter().all(|a| a.status == StatusCode::OK));
        requests += 10;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let last_used = |prefix: String| {
        let client = &client;
        async move {
            let row =
                client.query_one("SELECT last_used_at FROM api_keys WHERE prefix = $1", &[&prefix]).await.unwrap();
            row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
        }
    };
    ledger_tests::eventually(5, "the used key's last use is written", || async {
        last_used(used[..11].to_owned()).await.is_some()
    })
    .await;
    let at = last_used(used[..11].to_owned()).await.unwrap();
    assert!(chrono::Utc::now() - at < chrono::TimeDelta::seconds(5), "{at}");
    assert_eq!(last_used(idle[..11].to_owned()).await, None, "an unused key has no last use");
    let secs = started.elapsed().as_secs_f64();
    let writes: i64 = client.query_one("SELECT n FROM key_writes", &[]).await.unwrap().get(0);
    eprintln!("last used: {requests} requests in {secs:.1} s, {writes} statement(s) on api_keys");
    assert!(writes >= 1 && writes as f64 <= secs + 2.0, "{writes} writes for {requests} requests in {secs:.1} s");
}

/// The last uses not yet written are written when the API stops (SIGTERM),
/// well before the next interval (60 s by default).
#[actix_web::test]
async fn last_use_is_written_at_shutdown() {
    let db = TestDb::new().await;
    let key = admin(&db.url, &["create-tenant", "shop"]);
    let mut api = ApiProcess::start(&db.url, &[]).await;
    let http = awc::Client::default();
    assert_eq!(status_of(&http, &api.url("/v1/charges?order_id=o"), &key).await, 200);
    let client = db.client().await;
    let last_used = || async {
        let row = client.query_one("SELECT last_used_at FROM api_keys", &[]).await.unwrap();
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0)
    };
    assert_eq!(last_used().await, None, "not written per request");
    api.signal(libc::SIGTERM);
    let status = api.exited(Duration::from_secs(10)).await.expect("the API stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(last_used().await.is_some(), "written before the process ended");
}
