//! Authorize now, capture later: holds on wallets, and one winner among a
//! capture, a void and the expiry under every race. Each of the anchor
//! bugs named in the tests below was reported against a ledger with
//! two-phase transfers; here each is a test.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::broker::Broker;
use ledger_tests::shop::shop;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::{crash_worker, eventually, spawn_app, spawn_worker_process, start_workers, Role, TestApp};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A tenant with a buyer holding `funds`, a seller and a platform.
struct Wallets {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
    platform: String,
}

async fn wallets(funds: &str) -> Wallets {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", funds).await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    Wallets { app, key, buyer, seller, platform }
}

impl Wallets {
    /// Authorizes `amount` (fee 10% of it) for `order` attempt 1.
    async fn authorize(&self, order: &str, amount: &str) -> ledger_tests::Answer {
        let fee = (dec(amount) / Decimal::from(10)).round_dp(2).to_string();
        self.app
            .post(
                "/v1/charges",
                &self.key,
                &format!("{order}:1"),
                json!({"order_id": order, "attempt": 1, "buyer_account_id": self.buyer,
                       "seller_account_id": self.seller, "amount": amount, "currency": "USD",
                       "platform_fee": {"account_id": self.platform, "amount": fee}, "capture": false}),
            )
            .await
    }

    async fn capture(&self, charge: &str, idem: impl AsRef<str>, body: Value) -> ledger_tests::Answer {
        self.app.post(&format!("/v1/charges/{charge}/capture"), &self.key, idem.as_ref(), body).await
    }

    async fn void(&self, charge: &str, idem: impl AsRef<str>, reference: &str) -> ledger_tests::Answer {
        self.app
            .post(&format!("/v1/charges/{charge}/void"), &self.key, idem.as_ref(), json!({"reference": reference}))
            .await
    }

    async fn account(&self, id: &str) -> Value {
        self.app.get(&format!("/v1/accounts/{id}"), &self.key).await.json()
    }

    /// (balance = available, pending, posted) of an account.
    async fn balances(&self, id: &str) -> (Decimal, Decimal, Decimal) {
        let a = self.account(id).await;
        assert_eq!(a["balance"], a["available"], "{a}");
        let d = |f: &str| dec(a[f].as_str().unwrap());
        (d("available"), d("pending"), d("posted"))
    }

    async fn holds_balance(&self) -> Decimal {
        let client = self.app.db.client().await;
        let row = client
            .query_one(
                "SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id \
                  WHERE a.reference = 'holds:USD'",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    async fn events(&self, event_type: &str) -> i64 {
        self.app.scalar(&format!("SELECT count(*) FROM outbox WHERE event_type = '{event_type}'")).await
    }

    /// Moves an authorization's deadline `secs` from now (negative: past).
    async fn expire_in(&self, charge: &str, millis: i64) {
        let id: uuid::Uuid = charge.parse().unwrap();
        self.app
            .db
            .client()
            .await
            .execute(
                "UPDATE charge_authorizations SET expires_at = now() + make_interval(secs => $2::float8 / 1000) \
                  WHERE charge_id = $1",
                &[&id, &(millis as f64)],
            )
            .await
            .unwrap();
    }
}

#[actix_web::test]
async fn an_authorization_holds_then_a_partial_capture_pays_and_releases_the_rest() {
    let w = wallets("100.00").await;
    let a = w.authorize("o", "30.00").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let charge = a.json();
    assert_eq!(charge["status"], "authorized");
    assert_eq!(charge["amount"], "30.00");
    assert_eq!(charge["authorization"]["amount"], "30.00");
    assert!(charge["transaction_id"].is_null());
    let id = a.id();
    assert_eq!(w.balances(&w.buyer).await, (dec("70.00"), dec("30.00"), dec("100.00")));
    assert_eq!(w.balances(&w.seller).await.0, dec("0.00"));
    assert_eq!(w.holds_balance().await, dec("30.00"));
    // held money is not the seller's: nothing to refund yet
    let r = w.app.post(&format!("/v1/charges/{id}/refunds"), &w.key, "r0", json!({"reference": "r0"})).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "charge_not_paid".to_owned()), "{r:?}");

    let c = w.capture(&id, "cap", json!({"reference": "o:ship", "amount": "20.00"})).await;
    assert_eq!(c.status, StatusCode::OK, "{c:?}");
    let captured = c.json();
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount"], "20.00");
    assert_eq!(captured["authorization"]["amount"], "30.00");
    assert_eq!(captured["authorization"]["capture_reference"], "o:ship");
    assert!(captured["transaction_id"].is_string());
    // the fee whole to the platform, the rest of 20 to the seller, 10 back to the buyer
    assert_eq!(w.balances(&w.buyer).await, (dec("80.00"), dec("0.00"), dec("80.00")));
    assert_eq!(w.balances(&w.seller).await.0, dec("17.00"));
    assert_eq!(w.balances(&w.platform).await.0, dec("3.00"));
    assert_eq!(w.holds_balance().await, dec("0.00"));

    // refunds apply to what was captured, no more
    let over = w
        .app
        .post(&format!("/v1/charges/{id}/refunds"), &w.key, "r1", json!({"reference": "r1", "amount": "20.01"}))
        .await;
    assert_eq!(over.code(), "refund_exceeds_charge", "{over:?}");
    let all = w.app.post(&format!("/v1/charges/{id}/refunds"), &w.key, "r2", json!({"reference": "r2"})).await;
    assert_eq!(all.status, StatusCode::CREATED, "{all:?}");
    assert_eq!(all.json()["amount"], "20.00");
    assert_eq!(w.balances(&w.buyer).await.0, dec("100.00"));

    assert_eq!((w.events("charge.authorized").await, w.events("charge.captured").await), (1, 1));
    assert_eq!(w.events("charge.succeeded").await, 0);
    let payload: Value = w
        .app
        .db
        .client()
        .await
        .query_one("SELECT payload FROM outbox WHERE event_type = 'charge.captured'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["data"]["amount_released"], "10.00");
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn entries_show_the_hold_and_its_release() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "30.00").await.id();
    assert_eq!(w.void(&id, "v", "o:cancel").await.status, StatusCode::OK);
    let entries = w.app.get(&format!("/v1/accounts/{}/entries", w.buyer), &w.key).await;
    assert_eq!(entries.status, StatusCode::OK, "{entries:?}");
    let kinds: Vec<(String, String)> = entries.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["amount"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        kinds[..2],
        [("release".to_owned(), "30.00".to_owned()), ("authorization".to_owned(), "-30.00".to_owned())]
    );
}

/// Blnk #181: holds not counted against the available balance let two
/// holds spend the same money.
#[actix_web::test]
async fn holds_count_against_the_available_balance_50_authorizations_on_a_wallet_that_can_hold_10() {
    let w = wallets("100.00").await;
    let answers = join_all((0..50).map(|i| {
        let w = &w;
        async move { w.authorize(&format!("o{i}"), "10.00").await }
    }))
    .await;
    let held = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let declined =
        answers.iter().filter(|a| a.status == StatusCode::PAYMENT_REQUIRED && a.code() == "insufficient_funds").count();
    assert_eq!((held, declined), (10, 40), "{answers:?}");
    assert_eq!(w.balances(&w.buyer).await, (dec("0.00"), dec("100.00"), dec("100.00")));
    // nothing else may spend what is held
    let spend = w
        .app
        .post(
            "/v1/charges",
            &w.key,
            "now:1",
            json!({"order_id": "now", "attempt": 1, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
                   "amount": "0.01", "currency": "USD"}),
        )
        .await;
    assert_eq!(spend.code(), "insufficient_funds", "{spend:?}");
    let out = w
        .app
        .post(
            "/v1/transfers",
            &w.key,
            "out",
            json!({"source_account_id": w.buyer, "destination_account_id": w.seller, "amount": "0.01", "currency": "USD"}),
        )
        .await;
    assert_eq!(out.code(), "insufficient_funds", "{out:?}");
    assert_eq!(w.holds_balance().await, dec("100.00"));
    w.app.audit_clean().await;
}

/// Midaz #2317, #2437: a cancel drove an account into overdraft.
#[actix_web::test]
async fn a_void_gives_back_exactly_what_was_held_and_never_overdraws() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "60.00").await.id();
    // the rest is spent meanwhile
    let spend = w
        .app
        .post(
            "/v1/charges",
            &w.key,
            "now:1",
            json!({"order_id": "now", "attempt": 1, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
                   "amount": "40.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(spend.status, StatusCode::CREATED, "{spend:?}");
    assert_eq!(w.balances(&w.buyer).await, (dec("0.00"), dec("60.00"), dec("60.00")));
    let v = w.void(&id, "v1", "o:cancel").await;
    assert_eq!(v.status, StatusCode::OK, "{v:?}");
    assert_eq!(v.json()["status"], "voided");
    assert_eq!(v.json()["authorization"]["void_reason"], "requested");
    assert_eq!(w.balances(&w.buyer).await, (dec("60.00"), dec("0.00"), dec("60.00")));
    assert_eq!(w.holds_balance().await, dec("0.00"));
    // the same void again, under another key: the same answer, nothing moves
    let again = w.void(&id, "v2", "o:cancel").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(again.natural_key_replayed);
    let other = w.void(&id, "v3", "o:cancel-2").await;
    assert_eq!((other.status, other.code()), (StatusCode::CONFLICT, "charge_not_authorized".to_owned()));
    assert_eq!(w.balances(&w.buyer).await, (dec("60.00"), dec("0.00"), dec("60.00")));
    assert_eq!(w.events("charge.voided").await, 1);
    w.app.audit_clean().await;
}

/// Midaz #1519: the same pending transaction committed twice.
#[actix_web::test]
async fn two_captures_under_different_keys_capture_once() {
    let w = wallets("1000.00").await;
    for round in 0..10 {
        let id = w.authorize(&format!("o{round}"), "50.00").await.id();
        let (a, b) = futures::join!(
            w.capture(&id, format!("a{round}"), json!({"reference": format!("ship-a{round}")})),
            w.capture(&id, format!("b{round}"), json!({"reference": format!("ship-b{round}")})),
        );
        let won = [&a, &b].iter().filter(|x| x.status == StatusCode::OK).count();
        let lost =
            [&a, &b].iter().filter(|x| x.status == StatusCode::CONFLICT && x.code() == "charge_not_authorized").count();
        assert_eq!((won, lost), (1, 1), "{a:?} {b:?}");
        // the same reference under two keys is one capture, answered twice
        let (c, d) = futures::join!(
            w.capture(&id, format!("c{round}"), json!({"reference": format!("ship-a{round}")})),
            w.capture(&id, format!("d{round}"), json!({"reference": format!("ship-a{round}")})),
        );
        if a.status == StatusCode::OK {
            assert!(c.natural_key_replayed && d.natural_key_replayed, "{c:?} {d:?}");
        }
    }
    assert_eq!(w.events("charge.captured").await, 10);
    assert_eq!(w.app.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 10);
    assert_eq!(w.balances(&w.buyer).await, (dec("500.00"), dec("0.00"), dec("500.00")));
    assert_eq!(w.balances(&w.seller).await.0, dec("450.00"));
    w.app.audit_clean().await;
}

/// Midaz #1265: a revert after a commit answered 500.
#[actix_web::test]
async fn a_void_after_a_capture_is_a_409_not_a_500() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "30.00").await.id();
    assert_eq!(w.capture(&id, "c", json!({"reference": "ship"})).await.status, StatusCode::OK);
    let v = w.void(&id, "v", "cancel").await;
    assert_eq!((v.status, v.code()), (StatusCode::CONFLICT, "charge_not_authorized".to_owned()), "{v:?}");
    assert!(v.json()["detail"].as_str().unwrap().contains("succeeded"));
    // and a capture after a void
    let id2 = w.authorize("o2", "30.00").await.id();
    assert_eq!(w.void(&id2, "v2", "cancel").await.status, StatusCode::OK);
    let c = w.capture(&id2, "c2", json!({"reference": "ship"})).await;
    assert_eq!((c.status, c.code()), (StatusCode::CONFLICT, "charge_not_authorized".to_owned()), "{c:?}");
    // a charge made at once is no authorization
    let now = w
        .app
        .post(
            "/v1/charges",
            &w.key,
            "now:1",
            json!({"order_id": "now", "attempt": 1, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
                   "amount": "1.00", "currency": "USD"}),
        )
        .await;
    let c = w.capture(&now.id(), "c3", json!({"reference": "ship"})).await;
    assert_eq!((c.status, c.code()), (StatusCode::CONFLICT, "charge_not_authorized".to_owned()), "{c:?}");
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn capture_races_void_and_exactly_one_wins() {
    let w = wallets("1000.00").await;
    let mut captured = 0;
    for round in 0..20 {
        let id = w.authorize(&format!("o{round}"), "40.00").await.id();
        let (c, v) = futures::join!(
            w.capture(&id, format!("c{round}"), json!({"reference": "ship", "amount": "25.00"})),
            w.void(&id, format!("v{round}"), "cancel"),
        );
        match (c.status, v.status) {
            (StatusCode::OK, StatusCode::CONFLICT) => captured += 1,
            (StatusCode::CONFLICT, StatusCode::OK) => {}
            other => panic!("one winner, not {other:?}: {c:?} {v:?}"),
        }
    }
    let voided = 20 - captured;
    assert_eq!(w.events("charge.captured").await, captured);
    assert_eq!(w.events("charge.voided").await, voided);
    let spent = dec("25.00") * Decimal::from(captured);
    assert_eq!(w.balances(&w.buyer).await, (dec("1000.00") - spent, dec("0.00"), dec("1000.00") - spent));
    assert_eq!(w.holds_balance().await, dec("0.00"));
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn void_races_refund_and_held_money_is_never_refunded() {
    let w = wallets("1000.00").await;
    for round in 0..10 {
        let id = w.authorize(&format!("o{round}"), "40.00").await.id();
        let (path, idem) = (format!("/v1/charges/{id}/refunds"), format!("r{round}"));
        let (v, r) = futures::join!(
            w.void(&id, format!("v{round}"), "cancel"),
            w.app.post(&path, &w.key, &idem, json!({"reference": "r"})),
        );
        assert_eq!(v.status, StatusCode::OK, "{v:?}");
        assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "charge_not_paid".to_owned()), "{r:?}");
    }
    assert_eq!(w.app.db.count("refunds").await, 0);
    assert_eq!(w.balances(&w.buyer).await, (dec("1000.00"), dec("0.00"), dec("1000.00")));
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn capture_races_expiry_and_exactly_one_wins() {
    let w = wallets("1000.00").await;
    let pool = ledger::db::pool(&w.app.db.url, &Default::default()).unwrap();
    let (mut captured, mut expired) = (0, 0);
    for round in 0..20 {
        let id = w.authorize(&format!("o{round}"), "40.00").await.id();
        // the deadline falls while both run
        w.expire_in(&id, 30).await;
        let expirer = async {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            workers::expirer::once(&pool, None).await.unwrap()
        };
        let (c, _) = futures::join!(w.capture(&id, format!("c{round}"), json!({"reference": "ship"})), expirer);
        let status = w.app.get(&format!("/v1/charges/{id}"), &w.key).await.json()["status"].clone();
        if c.status == StatusCode::OK {
            captured += 1;
            assert_eq!(status, "succeeded");
        } else {
            // past the deadline, or voided already by the expirer
            assert_eq!(c.status, StatusCode::CONFLICT, "{c:?}");
            assert!(["authorization_expired", "charge_not_authorized"].contains(&c.code().as_str()), "{c:?}");
            // the expirer may not have got to it yet: its next scan does
            workers::expirer::once(&pool, None).await.unwrap();
            let status = w.app.get(&format!("/v1/charges/{id}"), &w.key).await.json();
            assert_eq!(
                (status["status"].as_str(), status["authorization"]["void_reason"].as_str()),
                (Some("voided"), Some("expired"))
            );
            expired += 1;
        }
    }
    assert_eq!(captured + expired, 20);
    assert_eq!(w.events("charge.captured").await, captured);
    assert_eq!(w.events("charge.voided").await, expired);
    let spent = dec("40.00") * Decimal::from(captured);
    assert_eq!(w.balances(&w.buyer).await, (dec("1000.00") - spent, dec("0.00"), dec("1000.00") - spent));
    w.app.audit_clean().await;
    assert_eq!(expiry_violations(&w.app).await, 0);
}

#[actix_web::test]
async fn two_expirers_void_an_expired_authorization_once() {
    let w = wallets("100.00").await;
    let ids: Vec<String> = join_all((0..5).map(|i| {
        let w = &w;
        async move { w.authorize(&format!("o{i}"), "10.00").await.id() }
    }))
    .await;
    for id in &ids {
        w.expire_in(id, -1000).await;
    }
    let pool = ledger::db::pool(&w.app.db.url, &Default::default()).unwrap();
    let (a, b) = futures::join!(workers::expirer::once(&pool, None), workers::expirer::once(&pool, None));
    assert!(a.unwrap() + b.unwrap() >= 5);
    assert_eq!(w.events("charge.voided").await, 5);
    assert_eq!(w.app.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'release'").await, 5);
    assert_eq!(w.balances(&w.buyer).await, (dec("100.00"), dec("0.00"), dec("100.00")));
    // a capture now is refused, and a later scan finds nothing due
    let c = w.capture(&ids[0], "c", json!({"reference": "ship"})).await;
    assert_eq!(c.code(), "charge_not_authorized", "{c:?}");
    assert_eq!(workers::expirer::once(&pool, None).await.unwrap(), 0);
    w.app.audit_clean().await;
    assert_eq!(expiry_violations(&w.app).await, 0);
}

/// Killed right after it voided one, the expirer leaves the rest to its
/// restart, and no authorization is voided twice.
#[actix_web::test]
async fn an_expirer_killed_after_a_void_leaves_the_rest_to_its_restart_and_voids_each_once() {
    let w = wallets("100.00").await;
    for i in 0..3 {
        let id = w.authorize(&format!("o{i}"), "10.00").await.id();
        w.expire_in(&id, -1000).await;
    }
    let config = workers::config::Config::local(&w.app.db.worker_url, "expirer-crash");
    crash_worker(&config, "expirer", "expirer-after-void").await;
    assert_eq!(w.app.scalar("SELECT count(*) FROM charges WHERE status = 'voided'").await, 1);
    let mut restarted = spawn_worker_process(&config, "expirer", None);
    eventually(20, "the restarted expirer voids the rest", || async {
        w.app.scalar("SELECT count(*) FROM charges WHERE status = 'voided'").await == 3
    })
    .await;
    let _ = restarted.kill();
    let _ = restarted.wait();
    assert_eq!(w.events("charge.voided").await, 3);
    assert_eq!(w.app.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'release'").await, 3);
    assert_eq!(w.balances(&w.buyer).await, (dec("100.00"), dec("0.00"), dec("100.00")));
    w.app.audit_clean().await;
    assert_eq!(expiry_violations(&w.app).await, 0);
}

#[actix_web::test]
async fn an_authorization_left_open_past_its_deadline_breaks_the_quiesced_audit() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "10.00").await.id();
    w.expire_in(&id, -60_000).await;
    assert_eq!(expiry_violations(&w.app).await, 1);
    workers::expirer::once(&ledger::db::pool(&w.app.db.url, &Default::default()).unwrap(), None).await.unwrap();
    assert_eq!(expiry_violations(&w.app).await, 0);
    w.app.audit_clean().await;
}

/// What the quiesced audit finds open past its deadline.
async fn expiry_violations(app: &TestApp) -> usize {
    let client = app.db.client().await;
    ledger::audit::violations(&client, &["no_open_authorization_past_expiry"]).await.unwrap().len()
}

#[actix_web::test]
async fn partial_capture_then_void_is_refused_and_balances_stay_exact() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "50.00").await.id();
    assert_eq!(w.capture(&id, "c", json!({"reference": "ship", "amount": "20.00"})).await.status, StatusCode::OK);
    let v = w.void(&id, "v", "cancel").await;
    assert_eq!(v.code(), "charge_not_authorized");
    assert_eq!(w.balances(&w.buyer).await, (dec("80.00"), dec("0.00"), dec("80.00")));
    assert_eq!(w.balances(&w.seller).await.0, dec("15.00"));
    assert_eq!(w.balances(&w.platform).await.0, dec("5.00"));
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn a_capture_retried_after_its_answer_was_lost_is_the_same_capture() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "50.00").await.id();
    let first = w.capture(&id, "cap-1", json!({"reference": "ship", "amount": "20.00"})).await;
    assert_eq!(first.status, StatusCode::OK);
    // the same key: the first answer, byte for byte
    let same_key = w.capture(&id, "cap-1", json!({"reference": "ship", "amount": "20.00"})).await;
    assert!(same_key.replayed);
    assert_eq!(same_key.body, first.body);
    // a new key (the first one expired, or the client lost it): the same capture by its reference
    let new_key = w.capture(&id, "cap-2", json!({"reference": "ship", "amount": "20.00"})).await;
    assert_eq!(new_key.status, StatusCode::OK);
    assert!(new_key.natural_key_replayed);
    assert_eq!(new_key.json()["transaction_id"], first.json()["transaction_id"]);
    // the same reference for another amount is another capture: refused
    let other = w.capture(&id, "cap-3", json!({"reference": "ship", "amount": "25.00"})).await;
    assert_eq!(other.code(), "natural_key_conflict");
    assert_eq!(w.events("charge.captured").await, 1);
    assert_eq!(w.balances(&w.buyer).await.0, dec("80.00"));
}

#[actix_web::test]
async fn a_retried_authorization_under_a_new_key_is_the_same_authorization() {
    let w = wallets("100.00").await;
    let body = json!({"order_id": "o", "attempt": 1, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
                      "amount": "30.00", "currency": "USD", "capture": false});
    let first = w.app.post("/v1/charges", &w.key, "k1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = w.app.post("/v1/charges", &w.key, "k2", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert!(again.natural_key_replayed);
    assert_eq!(again.id(), first.id());
    // the same attempt charged at once is other terms
    let mut now = body.clone();
    now["capture"] = json!(true);
    assert_eq!(w.app.post("/v1/charges", &w.key, "k3", now).await.code(), "natural_key_conflict");
    // still the same once captured for less
    let id = first.id();
    assert_eq!(w.capture(&id, "c", json!({"reference": "ship", "amount": "10.00"})).await.status, StatusCode::OK);
    let after = w.app.post("/v1/charges", &w.key, "k4", body).await;
    assert_eq!((after.status, after.id()), (StatusCode::OK, id));
    assert_eq!(w.balances(&w.buyer).await.0, dec("90.00"));
}

#[actix_web::test]
async fn a_voided_authorization_frees_its_order_for_the_next_attempt() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "30.00").await.id();
    let second = |attempt: i32| {
        json!({"order_id": "o", "attempt": attempt, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
               "amount": "30.00", "currency": "USD"})
    };
    let held = w.app.post("/v1/charges", &w.key, "o:2", second(2)).await;
    assert_eq!(held.code(), "order_already_charged", "{held:?}");
    assert_eq!(w.void(&id, "v", "cancel").await.status, StatusCode::OK);
    let paid = w.app.post("/v1/charges", &w.key, "o:2b", second(2)).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    assert_eq!(w.balances(&w.buyer).await.0, dec("70.00"));
    w.app.audit_clean().await;
}

#[actix_web::test]
async fn bad_captures_and_authorizations_are_clear_problems_that_write_nothing() {
    let w = wallets("100.00").await;
    let id = w.authorize("o", "30.00").await.id();
    let over = w.capture(&id, "c1", json!({"reference": "ship", "amount": "30.01"})).await;
    assert_eq!((over.status, over.code()), (StatusCode::CONFLICT, "capture_exceeds_authorization".to_owned()));
    let under_fee = w.capture(&id, "c2", json!({"reference": "ship", "amount": "2.00"})).await;
    assert_eq!((under_fee.status, under_fee.code()), (StatusCode::CONFLICT, "fee_exceeds_amount".to_owned()));
    let bad_amount = w.capture(&id, "c3", json!({"reference": "ship", "amount": "1.001"})).await;
    assert_eq!((bad_amount.status, bad_amount.code()), (StatusCode::CONFLICT, "amount_too_precise".to_owned()));
    let no_reference = w.capture(&id, "c4", json!({"reference": " "})).await;
    assert_eq!(no_reference.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = w.capture(&uuid::Uuid::now_v7().to_string(), "c5", json!({"reference": "ship"})).await;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::NOT_FOUND, "charge_not_found".to_owned()));
    w.expire_in(&id, -1000).await;
    let late = w.capture(&id, "c6", json!({"reference": "ship"})).await;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "authorization_expired".to_owned()));
    assert_eq!(w.events("charge.captured").await, 0);
    assert_eq!(w.balances(&w.buyer).await, (dec("70.00"), dec("30.00"), dec("100.00")));

    let charge = |extra: Value| {
        let mut b = json!({"order_id": "p", "attempt": 1, "buyer_account_id": w.buyer, "seller_account_id": w.seller,
                           "amount": "1.00", "currency": "USD"});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (i, (extra, code)) in [
        (json!({"expires_in": 3600}), "invalid_authorization"),
        (json!({"capture": false, "expires_in": 59}), "invalid_field"),
        (json!({"capture": false, "expires_in": 2592001}), "invalid_field"),
        (
            // a card authorization holds at most the networks' 7 days
            json!({"capture": false, "expires_in": 604801, "buyer_account_id": null, "payment_method": "pm_card_visa"}),
            "invalid_authorization",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let a = w.app.post("/v1/charges", &w.key, &format!("bad{i}"), charge(extra)).await;
        let status = if code == "invalid_field" { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::CONFLICT };
        assert_eq!((a.status, a.code()), (status, code.to_owned()), "{a:?}");
    }
    let ok = w.app.post("/v1/charges", &w.key, "ok", charge(json!({"capture": false, "expires_in": 60}))).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    assert_eq!(w.app.scalar("SELECT count(*) FROM charges").await, 2);
}

/// Stock held for a checkout that is never paid comes back at its deadline;
/// stock of an order a charge paid, or an authorization holds, stays.
#[actix_web::test]
async fn an_unpaid_reservation_past_its_deadline_is_released_and_a_paid_or_authorized_one_is_not() {
    let s = shop().await;
    let reserve = |order: &'static str, extra: Value| {
        let s = &s;
        async move {
            let mut body = json!({"order_id": order, "sku": "mug", "quantity": 1});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            s.app.post("/v1/reservations", &s.key, &format!("{order}:mug"), body).await
        }
    };
    let unpaid = reserve("unpaid", json!({"expires_in": 60})).await;
    assert_eq!(unpaid.status, StatusCode::CREATED, "{unpaid:?}");
    let default_deadline: chrono::DateTime<chrono::Utc> =
        reserve("paid", json!({})).await.json()["expires_at"].as_str().unwrap().parse().unwrap();
    let week = chrono::Utc::now() + chrono::Duration::days(7);
    assert!((week - default_deadline).num_seconds().abs() < 60, "7 days by default: {default_deadline}");
    let charge = |order: &str, capture: bool| {
        json!({"order_id": order, "attempt": 1, "buyer_account_id": s.buyer, "seller_account_id": s.seller,
               "amount": "12.00", "currency": "USD", "capture": capture})
    };
    assert_eq!(s.app.post("/v1/charges", &s.key, "paid:1", charge("paid", true)).await.status, StatusCode::CREATED);
    assert_eq!(reserve("held", json!({})).await.status, StatusCode::CREATED);
    assert_eq!(s.app.post("/v1/charges", &s.key, "held:1", charge("held", false)).await.status, StatusCode::CREATED);
    for bad in [59, 2_592_001] {
        let r = reserve("bad", json!({"expires_in": bad})).await;
        assert_eq!((r.status, r.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".to_owned()), "{r:?}");
    }
    assert_eq!(s.app.get("/v1/skus/mug", &s.key).await.json()["reserved"], 3);

    // a week later: every deadline passed, the expirer runs (no inventory worker yet)
    s.app
        .db
        .client()
        .await
        .execute("UPDATE reservations SET expires_at = now() - interval '1 minute'", &[])
        .await
        .unwrap();
    let violations = |names: &'static [&'static str]| {
        let s = &s;
        async move { ledger::audit::violations(&s.app.db.client().await, names).await.unwrap().len() }
    };
    assert_eq!(violations(&["no_unpaid_reservation_past_expiry"]).await, 1);
    let pool = ledger::db::pool(&s.app.db.url, &Default::default()).unwrap();
    workers::expirer::once(&pool, None).await.unwrap();
    let by_order = |order: &'static str| {
        let s = &s;
        async move {
            let list = s.app.get(&format!("/v1/reservations?order_id={order}"), &s.key).await.json();
            list["data"][0]["status"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        (by_order("unpaid").await, by_order("paid").await, by_order("held").await),
        ("released".to_owned(), "held".to_owned(), "held".to_owned())
    );
    assert_eq!(s.app.get("/v1/skus/mug", &s.key).await.json()["reserved"], 2);
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'reservation.released'").await, 1);
    // a second scan releases nothing more
    workers::expirer::once(&pool, None).await.unwrap();
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'reservation.released'").await, 1);
    assert_eq!(violations(&["no_unpaid_reservation_past_expiry"]).await, 0);
    s.audit_clean(false).await;
}

/// Checkout holds stock and money; shipment captures (the stock leaves the
/// shelf); a cancelled or abandoned checkout voids (the stock comes back),
/// through the relay, RabbitMQ and the inventory worker.
#[actix_web::test]
async fn captured_orders_commit_their_stock_and_voided_ones_release_it() {
    let s = shop().await;
    let broker = Broker::new();
    let smtp = SmtpServer::start().await;
    let config = s.config(&broker, &smtp);
    let _workers = start_workers(&config, &[Role::Relay, Role::Inventory, Role::Email, Role::Expirer]);
    let checkout = |order: &'static str| {
        let s = &s;
        async move {
            let hold = s
                .app
                .post(
                    "/v1/reservations",
                    &s.key,
                    &format!("{order}:mug"),
                    json!({"order_id": order, "sku": "mug", "quantity": 2}),
                )
                .await;
            assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
            let auth = s
                .app
                .post(
                    "/v1/charges",
                    &s.key,
                    &format!("{order}:1"),
                    json!({"order_id": order, "attempt": 1, "buyer_account_id": s.buyer, "seller_account_id": s.seller,
                           "amount": "24.00", "currency": "USD", "capture": false,
                           "receipt_email": format!("{order}@example.com")}),
                )
                .await;
            assert_eq!(auth.status, StatusCode::CREATED, "{auth:?}");
            (hold.id(), auth.id())
        }
    };
    let (shipped_hold, shipped) = checkout("shipped").await;
    let (cancelled_hold, cancelled) = checkout("cancelled").await;
    let (abandoned_hold, abandoned) = checkout("abandoned").await;
    let c = s.app.post(&format!("/v1/charges/{shipped}/capture"), &s.key, "ship", json!({"reference": "ship"})).await;
    assert_eq!(c.status, StatusCode::OK, "{c:?}");
    let v =
        s.app.post(&format!("/v1/charges/{cancelled}/void"), &s.key, "cancel", json!({"reference": "cancel"})).await;
    assert_eq!(v.status, StatusCode::OK, "{v:?}");
    let id: uuid::Uuid = abandoned.parse().unwrap();
    s.app
        .db
        .client()
        .await
        .execute(
            "UPDATE charge_authorizations SET expires_at = now() - interval '1 second' WHERE charge_id = $1",
            &[&id],
        )
        .await
        .unwrap();

    eventually(20, "every order's stock settles", || async {
        s.status(&shipped_hold).await == "committed"
            && s.status(&cancelled_hold).await == "released"
            && s.status(&abandoned_hold).await == "released"
    })
    .await;
    assert_eq!(s.on_hand().await, 8);
    let sku = s.app.get("/v1/skus/mug", &s.key).await.json();
    assert_eq!(sku["reserved"], 0, "{sku}");
    let abandoned = s.app.get(&format!("/v1/charges/{abandoned}"), &s.key).await.json();
    assert_eq!(abandoned["authorization"]["void_reason"], "expired");
    // the shipped order's confirmation, on its capture; none for the others
    eventually(20, "the shipped order's email arrives", || async { smtp.mails().len() == 1 }).await;
    eventually(20, "the pipeline settles", || s.settled(&broker)).await;
    assert_eq!(smtp.mails().len(), 1);
    assert_eq!(smtp.mails()[0].to, ["shipped@example.com"]);
    assert!(smtp.mails()[0].data.contains("24.00"), "{}", smtp.mails()[0].data);
    // the expirer's role also moves the history horizon: every entry so far
    // gets its balance_after
    eventually(20, "the history horizon passes every entry", || async {
        s.scalar("SELECT count(*) FROM ledger_entries WHERE created_at > (SELECT settled_to FROM history_horizon)")
            .await
            == 0
    })
    .await;
    let entries = s.app.get(&format!("/v1/accounts/{}/entries", s.buyer), &s.key).await.json();
    assert!(entries["data"].as_array().unwrap().iter().all(|e| e["balance_after"].is_string()), "{entries}");
    s.audit_clean(true).await;
}
