//! Provider webhooks, delivered by the fake provider (a separate process)
//! to the real server: signatures verified, each event applied once by its
//! id, late, duplicate and out-of-order deliveries absorbed, a processing
//! charge completed, a contradiction flagged with no money moved.

use awc::http::StatusCode;
use ledger_tests::provider::{FakeProvider, WEBHOOK_SECRET};
use ledger_tests::{eventually, run_worker_command, spawn_app_with, TestApp};
use serde_json::{json, Value};

struct Shop {
    app: TestApp,
    fake: FakeProvider,
    key: String,
    seller: String,
}

async fn shop(fake_args: &[&str]) -> Shop {
    let fake = FakeProvider::start(fake_args);
    let app = spawn_app_with(|c| {
        fake.configure(&mut c.gateway);
        c.gateway.gateway_timeout_ms = 5_000;
        // no completer runs here, and the retries below come late: only webhooks complete
        c.gateway.card_lease_secs = 600;
    })
    .await;
    fake.set_webhook_endpoint(&format!("{}/v1/provider/webhooks", app.base)).await;
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    Shop { app, fake, key, seller }
}

impl Shop {
    fn card(&self, order: &str, attempt: i32, payment_method: &str) -> Value {
        json!({"order_id": order, "attempt": attempt, "payment_method": payment_method,
               "seller_account_id": self.seller, "amount": "9.99", "currency": "USD"})
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.app.db.client().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn statuses(&self) -> Vec<String> {
        let rows = self.app.db.client().await.query("SELECT status FROM charges ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Posts a payload signed at `at` (unix seconds) with `secret`.
    async fn deliver(&self, payload: &Value, secret: &str, at: i64) -> ledger_tests::Answer {
        let body = payload.to_string();
        let signature = gateway::webhook::sign(body.as_bytes(), secret, at);
        let mut res = self
            .app
            .http
            .post(format!("{}/v1/provider/webhooks", self.app.base))
            .insert_header(("Stripe-Signature", signature))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await
            .unwrap();
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = res.body().await.unwrap().to_vec();
        ledger_tests::Answer {
            status: res.status(),
            content_type,
            replayed: false,
            natural_key_replayed: false,
            retry_after: None,
            body,
        }
    }

    async fn all_delivered(&self) -> bool {
        let stats = self.fake.stats().await;
        stats["webhooks"]["pending"] == 0
    }

    async fn audit_clean(&self) {
        let report = ledger::audit::audit(&self.app.db.client().await, Default::default()).await.unwrap();
        assert!(report.is_clean(), "{report}");
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[actix_web::test]
async fn a_webhook_completes_a_charge_whose_answer_was_lost() {
    let s = shop(&[]).await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "w1"}})).await;
    // its webhook comes 3 s later: the API's second transaction, which finds
    // the answer lost, runs first (otherwise the webhook completes the charge
    // before the API looks, and the API answers 201 at once)
    s.fake.arm(json!({"kind": "webhook_late", "count": 1, "delay_ms": 3000, "metadata": {"order_id": "w1"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "w1:1", s.card("w1", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    // no retry, no completer: the provider's payment_intent.succeeded completes it
    eventually(20, "the webhook completes the charge", || async { s.statuses().await == ["succeeded"] }).await;
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'provider-webhooks'").await, 1);
    let retry = s.app.post("/v1/charges", &s.key, "w1:1", s.card("w1", 1, "pm_card_visa")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(s.fake.payments_of("w1").await.len(), 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn late_duplicate_and_out_of_order_webhooks_each_count_once() {
    let s = shop(&["--webhook-late-ms", "300", "--webhook-hold-max-ms", "1500"]).await;
    s.fake
        .random_faults(json!({"seed": 11, "webhook_late": 0.3, "webhook_twice": 0.5, "webhook_out_of_order": 0.3}))
        .await;
    // a mix: paid at once, declined then paid, answers lost (completed by their webhook)
    for n in 0..8 {
        let order = format!("m{n}");
        if n % 3 == 1 {
            let declined = s
                .app
                .post("/v1/charges", &s.key, &format!("{order}:1"), s.card(&order, 1, "pm_card_chargeDeclined"))
                .await;
            assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{declined:?}");
            let paid =
                s.app.post("/v1/charges", &s.key, &format!("{order}:2"), s.card(&order, 2, "pm_card_visa")).await;
            assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
        } else {
            if n % 3 == 2 {
                s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": order}})).await;
            }
            let charged =
                s.app.post("/v1/charges", &s.key, &format!("{order}:1"), s.card(&order, 1, "pm_card_visa")).await;
            assert!([StatusCode::CREATED, StatusCode::ACCEPTED].contains(&charged.status), "{charged:?}");
        }
    }
    eventually(30, "every webhook delivered", || async { s.all_delivered().await }).await;
    let deliveries = s.fake.webhooks().await["data"].as_array().unwrap().clone();
    let mut events: Vec<&str> = deliveries.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    let all = events.len();
    events.sort_unstable();
    events.dedup();
    assert!(all > events.len(), "some events were delivered twice ({all} deliveries, {} events)", events.len());
    assert!(deliveries.iter().any(|d| d["held"] == true), "some were held out of order");
    // every event recorded once; every charge final; money booked once per paid order
    assert_eq!(s.scalar("SELECT count(*) FROM inbox WHERE consumer = 'provider-webhooks'").await, events.len() as i64);
    eventually(10, "every charge final", || async { !s.statuses().await.iter().any(|st| st == "processing") }).await;
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'succeeded'").await, 8);
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'failed'").await, 3);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 8);
    assert_eq!(s.scalar("SELECT count(*) FROM provider_flags").await, 0, "nothing contradicts");
    assert_eq!(s.fake.max_payments_per_attempt().await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_bad_or_stale_signature_is_refused_and_writes_nothing() {
    let s = shop(&[]).await;
    let event = json!({"id": "evt_forged", "object": "event", "type": "payment_intent.succeeded", "created": now(),
                       "data": {"object": {"id": "pi_forged", "object": "payment_intent", "amount": 999,
                                           "currency": "usd", "status": "succeeded", "created": now()}}});
    let wrong = s.deliver(&event, "whsec_not_ours", now()).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{wrong:?}");
    assert_eq!(wrong.code(), "invalid_signature");
    let stale = s.deliver(&event, WEBHOOK_SECRET, now() - 3600).await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST, "{stale:?}");
    assert_eq!(stale.code(), "invalid_signature");
    let unsigned = s
        .app
        .http
        .post(format!("{}/v1/provider/webhooks", s.app.base))
        .insert_header(("Content-Type", "application/json"))
        .send_body(event.to_string())
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.scalar("SELECT count(*) FROM inbox").await, 0, "nothing written");
    // the same event, signed properly, is received (and ignored: no such payment here)
    let good = s.deliver(&event, WEBHOOK_SECRET, now()).await;
    assert_eq!(good.status, StatusCode::OK, "{good:?}");
    assert_eq!(good.json()["effect"], "ignored");
}

#[actix_web::test]
async fn a_repeat_is_a_no_op_and_a_contradiction_moves_no_money_and_is_flagged() {
    let s = shop(&[]).await;
    let paid = s.app.post("/v1/charges", &s.key, "c1:1", s.card("c1", 1, "pm_card_visa")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let charge = paid.json();
    let payment_id = charge["provider_payment_id"].as_str().unwrap();
    eventually(20, "the provider's own webhook arrives", || async { s.all_delivered().await }).await;
    let intent = |status: &str| {
        json!({"id": payment_id, "object": "payment_intent", "amount": 999, "currency": "usd", "status": status,
               "created": now(), "metadata": {"tenant_id": "x", "order_id": "c1", "attempt": "1"},
               "last_payment_error": if status == "succeeded" { Value::Null } else {
                   json!({"type": "card_error", "code": "card_declined", "message": "declined"}) }})
    };
    let event = |id: &str, kind: &str, status: &str| json!({"id": id, "object": "event", "type": kind, "created": now(), "data": {"object": intent(status)}});
    // the success again, under another event id: already recorded
    let repeat = s.deliver(&event("evt_repeat", "payment_intent.succeeded", "succeeded"), WEBHOOK_SECRET, now()).await;
    assert_eq!(repeat.json()["effect"], "already_recorded", "{repeat:?}");
    // a late failure of the same payment: contradicts the recorded success
    let balance = s.app.balance(&s.key, &s.seller).await;
    let failed = event("evt_contradiction", "payment_intent.payment_failed", "requires_payment_method");
    let flagged = s.deliver(&failed, WEBHOOK_SECRET, now()).await;
    assert_eq!(flagged.json()["effect"], "flagged", "{flagged:?}");
    let again = s.deliver(&failed, WEBHOOK_SECRET, now()).await;
    assert_eq!(again.json()["effect"], "duplicate", "the same event id twice");
    assert_eq!(s.statuses().await, ["succeeded"], "no money moved back");
    assert_eq!(s.app.balance(&s.key, &s.seller).await, balance);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM provider_flags WHERE kind = 'failed_after_succeeded'").await, 1);

    // an operator lists it
    let config = workers::config::Config::local(&s.app.db.url, "webhooks-test");
    let listed = run_worker_command(&config, &["provider-flags"]).await;
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.status.success(), "open flags exit 1: {out}");
    assert!(out.contains("failed_after_succeeded") && out.contains("evt_contradiction"), "{out}");
    assert!(out.contains(charge["id"].as_str().unwrap()), "{out}");
    s.audit_clean().await;
}
