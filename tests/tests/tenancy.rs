//! One tenant can never read, replay or move another's data, nor starve
//! another of requests; a tenant's keys can be rotated without downtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use ledger_tests::api_process::{api_binary, ApiProcess};
use ledger_tests::servers::PrivatePostgres;
use ledger_tests::{spawn_app, spawn_app_on, spawn_app_with, TestDb};
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

/// A wrong key costs the database as little as it can: one without the key
/// shape is refused without a lookup, and a well-formed one found unknown is
/// remembered as unknown for the cache period. Proven with the database
/// stopped: both are still refused 401, while a key never seen needs the
/// database (503).
#[actix_web::test]
async fn wrong_keys_are_refused_without_a_lookup_once_known_wrong() {
    let pg = PrivatePostgres::new().await.unwrap();
    let app = spawn_app_on(TestDb::on(&pg).await, |c| c.api_key_cache_ms = 60_000).await;
    let wrong = format!("lk_{}", "0".repeat(64));
    let r = app.get("/v1/charges?order_id=o1", &wrong).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "looked up once");

    pg.stop().await.unwrap();
    for bad in ["not-a-key", "lk_short", wrong.as_str()] {
        let r = app.get("/v1/charges?order_id=o1", bad).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{bad}: no lookup");
    }
    let unseen = format!("lk_{}", "1".repeat(64));
    let r = app.get("/v1/charges?order_id=o1", &unseen).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "a key never seen is looked up: {r:?}");
    pg.start().await.unwrap();
}

/// An app whose addresses may fail authentication 5 times at once, then
/// once a second; keys cached for a minute.
async fn limited_app() -> ledger_tests::TestApp {
    spawn_app_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 5;
        c.api_key_cache_ms = 60_000;
    })
    .await
}

/// A wrong key is refused before anything else of the request is read: a
/// malformed body, a missing Idempotency-Key or a bad query gets 401, not
/// the 400 a caller with a valid key gets, and each counts as a failed
/// authentication, so the address is refused further lookups (429) once
/// its burst is spent. (The key's lookup once ran beside the other
/// extractors, and lost to their errors: no failure was counted, and an
/// address sending such requests cost a lookup each, never limited.)
#[actix_web::test]
async fn a_wrong_key_is_refused_before_the_request_is_read_and_counts_as_a_failure() {
    let app = limited_app().await;
    let key = app.tenant("shop").await;
    type Request = (&'static str, &'static str, Option<&'static str>, Option<&'static [u8]>);
    let requests: [Request; 5] = [
        ("POST", "/v1/charges", None, Some(b"not json")),
        ("POST", "/v1/charges", Some("k1"), Some(b"{\"order_id\": 5}")),
        ("POST", "/v1/accounts", None, Some(b"{}")),
        ("GET", "/v1/accounts?limit=0", None, None),
        ("GET", "/v1/accounts/not-a-uuid/entries", None, None),
    ];
    // what a valid key gets for them
    for (method, path, idem, body) in requests {
        let r = app.send(method, path, &key, idem, body).await;
        assert!([400, 404].contains(&r.status.as_u16()), "{method} {path}: {r:?}");
    }
    for (i, (method, path, idem, body)) in requests.into_iter().enumerate() {
        let r = app.send(method, path, &format!("lk_{i:064x}"), idem, body).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{method} {path}: {r:?}");
    }
    let (method, path, idem, body) = requests[0];
    let r = app.send(method, path, &format!("lk_{:064x}", 99), idem, body).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "too_many_failed_authentications"));
    // the valid key still works from the same address
    assert_eq!(app.get("/v1/accounts", &key).await.status, StatusCode::OK);
}

/// An address that keeps sending wrong keys is refused further lookups
/// (429 `too_many_failed_authentications` with `Retry-After`) once its burst
/// of failures is spent, and nothing is looked up for it meanwhile; a key
/// already known keeps working from the same address, and another
/// address's requests are not refused.
#[actix_web::test]
async fn an_address_sending_wrong_keys_is_refused_lookups_and_a_known_key_still_works() {
    let app = limited_app().await;
    let key = app.tenant("shop").await;
    let account = app.account(&key, "a", "USD", false).await;
    let path = format!("/v1/accounts/{account}");
    for i in 0..5 {
        let wrong = format!("lk_{i:064x}");
        let r = app.get(&path, &wrong).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "failure {i}: {r:?}");
    }
    let r = app.get(&path, &format!("lk_{:064x}", 99)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "too_many_failed_authentications"));
    assert!(r.retry_after.is_some(), "{r:?}");
    assert_eq!(app.get(&path, &key).await.status, StatusCode::OK, "a known key from the same address works");
}

/// A key found live before is looked up again when its cache period ends,
/// also from an address whose wrong keys spent its failures: a legitimate
/// client behind the same address as an attacker keeps working.
#[actix_web::test]
async fn a_known_key_is_looked_up_again_whatever_its_address_failures() {
    let app = spawn_app_with(|c| {
        c.auth_failures_per_sec = 1;
        c.auth_failures_burst = 3;
        c.api_key_cache_ms = 300;
    })
    .await;
    let key = app.tenant("shop").await;
    let account = app.account(&key, "a", "USD", false).await;
    let path = format!("/v1/accounts/{account}");
    for i in 0..3 {
        app.get(&path, &format!("lk_{i:064x}")).await;
    }
    let refused = app.get(&path, &format!("lk_{:064x}", 99)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "the address's failures are spent");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // the cache period is over: this is a new lookup
    assert_eq!(app.get(&path, &key).await.status, StatusCode::OK);
    let refused = app.get(&path, &format!("lk_{:064x}", 98)).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "strangers' keys still are not looked up");
}

// ------------------------------------------------------------------ rate limits

/// A GET as a tenant, with how long it took.
async fn timed_get(app: &ledger_tests::TestApp, key: &str, path: &str) -> (ledger_tests::Answer, Duration) {
    let started = Instant::now();
    let answer = app.get(path, key).await;
    (answer, started.elapsed())
}

/// 40 reads at 10 per second, each timed; every one must be answered 200.
async fn paced_reads(app: &ledger_tests::TestApp, key: &str, path: &str) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let (a, took) = timed_get(app, key, path).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(took)).await;
    }
    latencies
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[actix_web::test]
async fn a_tenant_over_its_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 5;
        c.rate_limit_burst = 10;
    })
    .await;
    let key = app.tenant("shop").await;
    let started = Instant::now();
    let mut admitted = 0;
    let refused = loop {
        let a = app.get("/v1/charges?order_id=o1", &key).await;
        if a.status != StatusCode::OK {
            break a;
        }
        admitted += 1;
        assert!(admitted < 100, "never limited");
    };
    // the burst, plus what the rate refilled meanwhile
    let allowance = 10.0 + 5.0 * started.elapsed().as_secs_f64();
    assert!(admitted >= 10 && admitted as f64 <= allowance + 1.0, "{admitted} admitted, allowance {allowance:.1}");
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{refused:?}");
    assert_eq!(refused.content_type, "application/problem+json");
    let problem = refused.json();
    assert_eq!((problem["code"].as_str(), problem["status"].as_u64()), (Some("rate_limited"), Some(429)));
    let wait: u64 = refused.retry_after.as_deref().expect("Retry-After").parse().unwrap();
    assert_eq!(wait, 1, "5 per second: a token is back within a second");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = app.get("/v1/charges?order_id=o1", &key).await;
    assert_eq!(again.status, StatusCode::OK, "after Retry-After: {again:?}");
}

/// A 429 is decided before anything is read or written: the refused POST
/// leaves no Idempotency-Key behind, and its retry after `Retry-After` runs
/// the effect, once.
#[actix_web::test]
async fn a_refused_post_writes_nothing_and_its_retry_runs_once() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 6;
    })
    .await;
    let key = app.tenant("shop").await;
    let ext = app.account(&key, "ext", "USD", true).await;
    let buyer = app.account(&key, "buyer", "USD", false).await;
    let body = json!({"source_account_id": ext, "destination_account_id": buyer, "amount": "10.00", "currency": "USD"});
    // spend what is left of the bucket
    while app.get("/v1/charges?order_id=o1", &key).await.status == StatusCode::OK {}
    let before = app.db.counts().await;
    let refused = app.post("/v1/transfers", &key, "fund:1", body.clone()).await;
    assert_eq!((refused.status, refused.code().as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert_eq!(app.db.counts().await, before, "a 429 writes nothing, not even its Idempotency-Key");

    tokio::time::sleep(Duration::from_secs(refused.retry_after.unwrap().parse().unwrap())).await;
    let first = app.post("/v1/transfers", &key, "fund:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert!(!first.replayed, "the retry after a 429 is the first run, not a replay");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retry = app.post("/v1/transfers", &key, "fund:1", body).await;
    assert_eq!((retry.status, retry.replayed, &retry.body), (StatusCode::CREATED, true, &first.body));
    assert_eq!(app.db.count("transfers").await, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.balance(&key, &buyer).await, "10.00");
}

/// A replay of a completed key costs a tenth of a request: fifty replays
/// pass where a bucket of nine tokens would let nine new requests through,
/// and they leave about five tokens spent.
#[actix_web::test]
async fn replays_of_completed_keys_cost_a_tenth_of_a_request() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 10;
    })
    .await;
    let key = app.tenant("shop").await;
    let body = json!({"quantity": 3});
    let first = app.post("/v1/skus/mug/restocks", &key, "restock:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let started = Instant::now();
    for i in 0..50 {
        let again = app.post("/v1/skus/mug/restocks", &key, "restock:1", body.clone()).await;
        assert_eq!((again.status, again.replayed), (StatusCode::CREATED, true), "replay {i}: {again:?}");
    }
    let mut admitted = 0;
    while app.get("/v1/skus/mug", &key).await.status == StatusCode::OK {
        admitted += 1;
        assert!(admitted < 20, "never limited");
    }
    // 10 - 1 (the restock) - 50 × 0.1 (the replays) + what refilled meanwhile
    let left = 10.0 - 1.0 - 5.0 + started.elapsed().as_secs_f64();
    assert!(
        (3..=(left as i64 + 1)).contains(&admitted),
        "{admitted} requests admitted after the replays, {left:.1} left"
    );
    assert_eq!(app.db.count("stock_entries").await, 1);
}

#[actix_web::test]
async fn a_tenants_own_limit_replaces_the_default_on_a_running_server() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1000;
        c.rate_limit_burst = 1000;
        c.api_key_cache_ms = 300;
    })
    .await;
    let small = app.tenant("small").await;
    let other = app.tenant("other").await;
    assert_eq!(app.get("/v1/charges?order_id=o", &small).await.status, StatusCode::OK);
    let set = admin(&app.db.url, &["set-rate-limit", "small", "--per-sec", "1", "--burst", "3"]);
    assert_eq!(set, "tenant small: 1 per second, burst 3");
    let mut conn = ledger::tenants::connect(&app.db.url).await.unwrap();
    let id = ledger::tenants::find(&mut conn, "small").await.unwrap().id;
    let own = ledger::tenants::RateLimit { per_sec: 1, burst: 3 };
    assert_eq!(ledger::tenants::rate_limit(&mut conn, id).await.unwrap(), Some(own));
    // applied once the key's cached lookup is older than API_KEY_CACHE_MS
    tokio::time::sleep(Duration::from_millis(400)).await;
    let statuses: Vec<u16> = futures::future::join_all((0..8).map(|_| app.get("/v1/charges?order_id=o", &small)))
        .await
        .iter()
        .map(|a| a.status.as_u16())
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=4).contains(&admitted), "burst 3 (and one refilled at most): {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    for _ in 0..20 {
        assert_eq!(app.get("/v1/charges?order_id=o", &other).await.status, StatusCode::OK, "the default still");
    }
    // back to the default
    assert_eq!(admin(&app.db.url, &["set-rate-limit", "small", "--default"]), "tenant small: the default rate limit");
    assert_eq!(ledger::tenants::rate_limit(&mut conn, id).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..20 {
        assert_eq!(app.get("/v1/charges?order_id=o", &small).await.status, StatusCode::OK);
    }
}

/// A client flooding the API with reads as `key` at `per_sec` requests a
/// second (open loop: whatever the answers), from 4 connections, on a thread
/// and an event loop of its own (as another client would be), so that the
/// test's own timings are the server's and not its own queue.
struct Flood {
    stop: Arc<AtomicBool>,
    /// answers: 200, 429, anything else
    counts: Arc<[AtomicU64; 3]>,
    thread: std::thread::JoinHandle<()>,
}

impl Flood {
    fn start(app: &ledger_tests::TestApp, key: &str, per_sec: u32) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let (url, auth) = (format!("{}/v1/charges?order_id=o", app.base), format!("Bearer {key}"));
        let thread = {
            let (stop, counts) = (stop.clone(), counts.clone());
            std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let http = awc::Client::default();
                    let every = Duration::from_secs(4) / per_sec;
                    futures::future::join_all((0..4).map(|_| async {
                        let mut ticks = tokio::time::interval(every);
                        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        while !stop.load(Ordering::Relaxed) {
                            ticks.tick().await;
                            let sent = http.get(&url).insert_header(("Authorization", auth.as_str())).send();
                            let mut res = sent.await.unwrap();
                            let _ = res.body().await;
                            let slot = match res.status().as_u16() {
                                200 => 0,
                                429 => 1,
                                _ => 2,
                            };
                            counts[slot].fetch_add(1, Ordering::Relaxed);
                        }
                    }))
                    .await;
                })
            })
        };
        Flood { stop, counts, thread }
    }

    /// Stops it; how many requests were admitted, refused, anything else.
    /// Waits without blocking this thread: the server's pooled connections
    /// may be driven by this thread's event loop (the purge loop opens some).
    async fn stop(self) -> [u64; 3] {
        self.stop.store(true, Ordering::Relaxed);
        while !self.thread.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.thread.join().expect("the flood ran");
        self.counts.each_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

/// Twenty times the noisy tenant's limit.
const FLOOD_PER_SEC: u32 = 400;

/// One tenant flooding the API far past its limit: another tenant, within
/// its own, is never refused, and its reads stay in the same range.
/// Measured: the quiet tenant's latency alone, during the refused flood,
/// and (for comparison) during the same flood with the noisy tenant
/// unlimited.
#[actix_web::test]
async fn a_tenant_over_its_limit_neither_refuses_nor_slows_another() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 20;
        c.rate_limit_burst = 20;
        c.api_key_cache_ms = 200;
    })
    .await;
    let noisy = app.tenant("noisy").await;
    let quiet = app.tenant("quiet").await;
    let account = app.account(&quiet, "a", "USD", false).await;
    let path = format!("/v1/accounts/{account}");
    let alone = paced_reads(&app, &quiet, &path).await;

    let flood = Flood::start(&app, &noisy, FLOOD_PER_SEC);
    // once the flood has spent the noisy tenant's bucket
    while flood.counts[1].load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let limited = paced_reads(&app, &quiet, &path).await;
    let secs = started.elapsed().as_secs_f64();
    let [admitted, refused, other] = flood.stop().await;

    // the same flood, the noisy tenant unlimited (its own limit: 0)
    let mut conn = ledger::tenants::connect(&app.db.url).await.unwrap();
    let id = ledger::tenants::find(&mut conn, "noisy").await.unwrap().id;
    let unlimited = ledger::tenants::RateLimit { per_sec: 0, burst: 1 };
    ledger::tenants::set_rate_limit(&mut conn, id, Some(unlimited)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flood = Flood::start(&app, &noisy, FLOOD_PER_SEC);
    let started = Instant::now();
    let unlimited = paced_reads(&app, &quiet, &path).await;
    let unlimited_secs = started.elapsed().as_secs_f64();
    let flood_unlimited = flood.stop().await;
    let unlimited_rate = flood_unlimited.iter().sum::<u64>() as f64 / unlimited_secs;

    let p50 = |v: &[Duration]| median(v.to_vec());
    let max = |v: &[Duration]| *v.iter().max().unwrap();
    eprintln!(
        "isolation: the noisy tenant {admitted} admitted, {refused} refused ({:.0} req/s); the quiet tenant 0 of 120 \
         refused, p50 {:?} alone, {:?} during the refused flood, {:?} during the same flood unlimited ({unlimited_rate:.0} \
         req/s, all admitted); max {:?}, {:?}, {:?}",
        (admitted + refused) as f64 / secs,
        p50(&alone),
        p50(&limited),
        p50(&unlimited),
        max(&alone),
        max(&limited),
        max(&unlimited),
    );
    assert_eq!(other, 0, "the noisy tenant got only 200 and 429");
    assert!(refused > 100, "the flood was refused: {refused}");
    // the burst, then 20 per second (the flood ran a little longer than the reads)
    assert!(admitted as f64 <= 20.0 + 20.0 * (secs + 1.0), "the noisy tenant kept to its limit: {admitted}");
    assert_eq!(flood_unlimited[1..], [0, 0], "unlimited: every request admitted");
    // A refused request costs no database work, only the HTTP layer's: the
    // refused flood slows the quiet tenant no more than the same flood
    // admitted. Measured side by side under the same load, not against a
    // fixed time (the machine's other work moves both alike).
    assert!(
        p50(&limited) <= p50(&unlimited) * 3 / 2 + Duration::from_millis(10),
        "p50 {:?} during the refused flood, {:?} during the admitted one",
        p50(&limited),
        p50(&unlimited)
    );
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
    let app = spawn_app_with(|c| {
        c.api_key_last_used_flush_secs = 1;
        // This test counts writes, not admissions: at full speed it sends more
        // than the default rate limit allows.
        c.rate_limit_per_sec = 0;
    })
    .await;
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
        assert!(answers.iter().all(|a| a.status == StatusCode::OK), "{answers:?}");
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
