//! Card charges through the fake payment provider, started as a separate
//! process: success, decline, a lost provider answer resumed by the retry,
//! refunds at the provider, and the choice between a wallet and a card.

use std::ops::Deref;

use awc::http::StatusCode;
use ledger_tests::card_shop::CardShop;
use ledger_tests::{eventually, start_workers, Role};
use serde_json::{json, Value};

struct Shop(CardShop);

impl Deref for Shop {
    type Target = CardShop;
    fn deref(&self) -> &CardShop {
        &self.0
    }
}

async fn shop() -> Shop {
    shop_with(&[], |_| {}).await
}

/// A shop whose fake provider runs with `fake_args`, its API's provider
/// settings tweaked.
async fn shop_with(fake_args: &[&str], tweak: impl FnOnce(&mut service::settings::Gateway)) -> Shop {
    Shop(CardShop::with(fake_args, false, tweak).await)
}

impl Shop {
    /// The status of the order's latest attempt (`none` before its first).
    async fn status_of(&self, order: &str) -> String {
        let listed = self.app.get(&format!("/v1/charges?order_id={order}"), &self.key).await.json();
        listed["data"][0]["status"].as_str().unwrap_or("none").to_owned()
    }

    fn card(&self, order: &str, attempt: i32, payment_method: &str) -> Value {
        json!({"order_id": order, "attempt": attempt, "payment_method": payment_method,
               "seller_account_id": self.seller, "amount": "25.00", "currency": "USD",
               "platform_fee": {"account_id": self.platform, "amount": "2.50"},
               "receipt_email": "buyer@example.com"})
    }

    /// The provider clearing account's balance, as `GET /v1/accounts/{id}`
    /// reports it (the ledger sums its slot rows).
    async fn clearing_balance(&self) -> String {
        let id: uuid::Uuid = self
            .app
            .db
            .client()
            .await
            .query_one("SELECT id FROM accounts WHERE reference = 'provider-clearing:USD'", &[])
            .await
            .unwrap()
            .get(0);
        let balance = self.app.balance(&self.key, &id.to_string()).await;
        balance.parse::<rust_decimal::Decimal>().unwrap().normalize().to_string()
    }
}

#[actix_web::test]
async fn a_card_charge_takes_the_money_at_the_provider_and_books_it_once() {
    let s = shop().await;
    let first = s.app.post("/v1/charges", &s.key, "o1:1", s.card("o1", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let charge = first.json();
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["payment_method"], "pm_card_visa");
    assert_eq!(charge["buyer_account_id"], Value::Null);
    let payment_id = charge["provider_payment_id"].as_str().unwrap().to_owned();
    assert!(payment_id.starts_with("pi_"), "{charge}");

    // the provider holds one payment for the attempt, of 2500 cents, with our metadata
    let payments = s.fake.payments_of("o1").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["id"], payment_id.as_str());
    assert_eq!(payments[0]["amount"], 2500);
    assert_eq!(payments[0]["metadata"]["attempt"], "1");

    // one ledger transaction: clearing -25.00, seller +22.50, platform +2.50
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.clearing_balance().await, "-25");
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "22.50");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "2.50");
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);

    // the retry replays; another key for the same attempt finds the charge
    let again = s.app.post("/v1/charges", &s.key, "o1:1", s.card("o1", 1, "pm_card_visa")).await;
    assert!(again.replayed);
    assert_eq!(again.body, first.body);
    let other_key = s.app.post("/v1/charges", &s.key, "o1:1:again", s.card("o1", 1, "pm_card_visa")).await;
    assert_eq!(other_key.status, StatusCode::OK, "{other_key:?}");
    assert!(other_key.natural_key_replayed);
    // and another attempt of the paid order is refused
    let bumped = s.app.post("/v1/charges", &s.key, "o1:2", s.card("o1", 2, "pm_card_visa")).await;
    assert_eq!(bumped.status, StatusCode::CONFLICT);
    assert_eq!(bumped.code(), "order_already_charged");
    assert_eq!(s.fake.payments_of("o1").await.len(), 1, "never a second payment");
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_declined_card_is_a_stored_402_and_the_next_attempt_may_pay() {
    let s = shop().await;
    let declined = s.app.post("/v1/charges", &s.key, "o2:1", s.card("o2", 1, "pm_card_chargeDeclined")).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{declined:?}");
    assert_eq!(declined.code(), "card_declined");
    let replay = s.app.post("/v1/charges", &s.key, "o2:1", s.card("o2", 1, "pm_card_chargeDeclined")).await;
    assert!(replay.replayed);
    assert_eq!((replay.status, &replay.body), (declined.status, &declined.body));
    // nothing moved, the attempt is recorded as failed
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions").await, 0);
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'failed'").await, 1);

    let paid = s.app.post("/v1/charges", &s.key, "o2:2", s.card("o2", 2, "pm_card_visa")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    let listed = s.app.get("/v1/charges?order_id=o2", &s.key).await.json();
    let statuses: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "failed"], "the order's attempts, the latest first");
    assert_eq!(s.fake.payments_of("o2").await.len(), 2, "one payment per attempt");
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_lost_provider_answer_is_202_processing_and_the_retry_ends_in_one_payment() {
    let s = shop().await;
    // the provider charges and then drops the connection without answering
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o3"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "o3:1", s.card("o3", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(first.json()["status"], "processing");
    assert_eq!(first.json()["transaction_id"], Value::Null);
    assert_eq!(first.retry_after.as_deref(), Some("1"));
    assert!(!first.replayed);
    assert_eq!(s.fake.payments_of("o3").await.len(), 1, "the provider did charge");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions").await, 0, "nothing booked yet");
    s.audit_clean().await;

    // the storefront retries with the same key: same provider key, the provider replays
    let retry = s.app.post("/v1/charges", &s.key, "o3:1", s.card("o3", 1, "pm_card_visa")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.json()["status"], "succeeded");
    let again = s.app.post("/v1/charges", &s.key, "o3:1", s.card("o3", 1, "pm_card_visa")).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body, "the one final answer");
    let payments = s.fake.payments_of("o3").await;
    assert_eq!(payments.len(), 1, "one provider payment: {payments:?}");
    assert_eq!(retry.json()["provider_payment_id"], payments[0]["id"]);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.fake.max_payments_per_attempt().await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_card_refund_goes_to_the_provider_once() {
    let s = shop().await;
    let charge = s.app.post("/v1/charges", &s.key, "o4:1", s.card("o4", 1, "pm_card_visa")).await;
    assert_eq!(charge.status, StatusCode::CREATED, "{charge:?}");
    let id = charge.id();
    let body = json!({"reference": "o4:refund:1", "amount": "10.00"});
    let refund = s.app.post(&format!("/v1/charges/{id}/refunds"), &s.key, "o4:refund:1", body.clone()).await;
    assert_eq!(refund.status, StatusCode::CREATED, "{refund:?}");
    // under another key, the same reference is the same refund, and the provider refunds once
    let again = s.app.post(&format!("/v1/charges/{id}/refunds"), &s.key, "o4:refund:1:again", body).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.id(), refund.id());
    assert_eq!(s.fake.stats().await["refunds"], 1, "{}", s.fake.stats().await);
    let payment = &s.fake.payments_of("o4").await[0];
    assert_eq!(payment["amount_refunded"], 1000, "{payment}");
    // the clearing account got the 10.00 back; the seller and platform gave their shares
    assert_eq!(s.clearing_balance().await, "-15");
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "13.50");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "1.50");
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_charge_names_exactly_one_way_to_pay() {
    let s = shop().await;
    let buyer = s.app.funded(&s.key, "buyer", "100.00").await;
    let mut both = s.card("o5", 1, "pm_card_visa");
    both["buyer_account_id"] = json!(buyer);
    let mut neither = s.card("o5", 1, "pm_card_visa");
    neither.as_object_mut().unwrap().remove("payment_method");
    for body in [both, neither] {
        let refused = s.app.post("/v1/charges", &s.key, "o5:1", body).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
        assert_eq!(refused.code(), "invalid_payment_source");
    }
    let bad = s.app.post("/v1/charges", &s.key, "o5:1", s.card("o5", 1, "pm card")).await;
    assert_eq!(bad.code(), "invalid_field");
    assert_eq!(s.app.db.count("charges").await, 0);
    assert!(s.fake.payments().await.is_empty());
}

#[actix_web::test]
async fn the_completer_finishes_a_charge_whose_client_never_came_back() {
    let s = shop_with(&[], |g| g.card_lease_secs = 1).await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o6"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "o6:1", s.card("o6", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let _completer = s.completer(1, 86_400);
    eventually(20, "the completer completes the charge", || async { s.status_of("o6").await == "succeeded" }).await;
    assert_eq!(s.fake.payments_of("o6").await.len(), 1, "the same provider key: one payment");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
    // the client's late retry gets the final answer, stored from then on
    let retry = s.app.post("/v1/charges", &s.key, "o6:1", s.card("o6", 1, "pm_card_visa")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    let again = s.app.post("/v1/charges", &s.key, "o6:1", s.card("o6", 1, "pm_card_visa")).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_client_and_the_completer_racing_make_one_payment_and_one_transaction() {
    let s = shop_with(&[], |g| g.card_lease_secs = 1).await;
    // the provider charges, then holds the connection 1.5 s and closes it unanswered;
    // its key replays meanwhile, so the completer (after the 1 s lease) gets the answer
    s.fake
        .arm(json!({"kind": "hang_after_charge", "count": 1, "delay_ms": 1500, "metadata": {"order_id": "o7"}}))
        .await;
    let _completer = s.completer(1, 86_400);
    let body = s.card("o7", 1, "pm_card_visa");
    let first = s.app.post("/v1/charges", &s.key, "o7:1", body.clone()).await;
    assert!([StatusCode::ACCEPTED, StatusCode::CREATED].contains(&first.status), "{first:?}");
    // several retries at once beside the completer, until the final answer
    let mut finals = Vec::new();
    for _ in 0..20 {
        let answers =
            futures::future::join_all((0..4).map(|_| s.app.post("/v1/charges", &s.key, "o7:1", body.clone()))).await;
        for a in answers {
            assert!([StatusCode::ACCEPTED, StatusCode::CREATED, StatusCode::CONFLICT].contains(&a.status), "{a:?}");
            if a.status == StatusCode::CREATED {
                finals.push(a.body);
            }
        }
        if !finals.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!finals.is_empty(), "a final answer");
    assert!(finals.windows(2).all(|w| w[0] == w[1]), "one final answer");
    assert_eq!(s.fake.payments_of("o7").await.len(), 1, "one provider payment");
    assert_eq!(s.fake.max_payments_per_attempt().await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn past_the_key_window_the_payment_is_looked_up_before_anything_is_sent_again() {
    // the provider forgets keys after 0.2 s: resending the key then would charge again
    let s = shop_with(&["--idempotency-ttl-secs", "0.2"], |g| g.card_lease_secs = 1).await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o8"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "o8:1", s.card("o8", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // a key window of 0: every charge is past it, so the completer searches first
    let _completer = s.completer(1, 0);
    eventually(20, "the completer records the payment it found", || async { s.status_of("o8").await == "succeeded" })
        .await;
    let payments = s.fake.payments_of("o8").await;
    assert_eq!(payments.len(), 1, "found, not sent again: {payments:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn reconcile_payments_is_clean_then_names_each_planted_difference() {
    let s = shop().await;
    for n in 1..=3 {
        let order = format!("r{n}");
        let paid = s.app.post("/v1/charges", &s.key, &format!("{order}:1"), s.card(&order, 1, "pm_card_visa")).await;
        assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    }
    let declined = s.app.post("/v1/charges", &s.key, "r4:1", s.card("r4", 1, "pm_card_chargeDeclined")).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    let config = s.worker_config();
    let clean = ledger_tests::run_worker_command(&config, &["reconcile-payments"]).await;
    let out = String::from_utf8_lossy(&clean.stdout).to_string();
    assert!(clean.status.success(), "{out}{}", String::from_utf8_lossy(&clean.stderr));
    assert!(out.contains("0 difference(s)"), "{out}");

    // planted: a payment the ledger never heard of, a charge whose amount
    // differs, a charge whose recorded payment the provider does not have
    let client = gateway::Client::new(&config.gateway.client_config()).unwrap();
    let stray = gateway::PaymentRequest {
        amount: 777,
        currency: "USD".into(),
        payment_method: "pm_card_visa".into(),
        metadata: [("order_id".to_owned(), "stray".to_owned())].into(),
    };
    let gateway::PaymentOutcome::Succeeded(stray) = client.create_payment(&stray, "stray-1").await.unwrap() else {
        panic!("the stray payment succeeds")
    };
    let db = s.app.db.client().await;
    db.batch_execute(
        "SET session_replication_role = replica; \
         UPDATE charges SET amount = amount + 1 WHERE order_id = 'r2'; \
         UPDATE card_charges SET provider_payment_id = 'pi_gone' \
          WHERE charge_id = (SELECT id FROM charges WHERE order_id = 'r3');",
    )
    .await
    .unwrap();
    let found = ledger_tests::run_worker_command(&config, &["reconcile-payments"]).await;
    let out = String::from_utf8_lossy(&found.stdout).to_string();
    assert_eq!(found.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.contains("difference(s)")).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines.iter().any(|l| l.starts_with("payment_without_charge") && l.contains(&stray.id)), "{out}");
    let r3_payment = s.fake.payments_of("r3").await[0]["id"].as_str().unwrap().to_owned();
    assert!(lines.iter().any(|l| l.starts_with("payment_without_charge") && l.contains(&r3_payment)), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("amount_differs") && l.contains("26.00")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("charge_without_payment") && l.contains("pi_gone")), "{out}");
}

#[actix_web::test]
async fn a_completion_that_waited_for_another_reads_the_charge_that_one_left() {
    // a charge left processing: the provider charged, its answer was lost
    let s = shop().await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o9"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "o9:1", s.card("o9", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let id: uuid::Uuid = first.json()["id"].as_str().unwrap().parse().unwrap();
    let payment = s.fake.payments_of("o9").await[0]["id"].as_str().unwrap().to_owned();
    let watcher = s.app.db.client().await;
    let tenant = ledger::TenantId(
        watcher.query_one("SELECT tenant_id FROM charges WHERE id = $1", &[&id]).await.unwrap().get(0),
    );
    let answer = ledger::cards::ProviderAnswer::Succeeded {
        payment_id: payment.clone(),
        amount_minor: 2500,
        currency: "usd".to_owned(),
    };

    // one completion (a webhook, say) holds the charge; another waits for it
    let pool = ledger::db::pool(&s.app.db.url, &Default::default()).unwrap();
    let mut holder = pool.get().await.unwrap();
    let mut waiter = pool.get().await.unwrap();
    let waiter_pid: i32 = waiter.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let held = holder.transaction().await.unwrap();
    let done = ledger::cards::complete(&held, tenant, id, Some(&answer)).await.unwrap();
    assert!(matches!(done, ledger::cards::Completion::Final(ledger::Outcome::Applied(_))), "{done:?}");
    let waiting = async {
        let tx = waiter.transaction().await.unwrap();
        let seen = ledger::cards::complete(&tx, tenant, id, Some(&answer)).await.unwrap();
        tx.commit().await.unwrap();
        seen
    };
    let release = async {
        eventually(20, "the second completion waits for the first's lock", || async {
            let waits: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    &[&waiter_pid],
                )
                .await
                .unwrap()
                .get(0);
            waits == 1
        })
        .await;
        held.commit().await.unwrap();
    };
    let (seen, ()) = futures::join!(waiting, release);

    // the waiter answers with the whole charge the first completion left
    let ledger::cards::Completion::Final(ledger::Outcome::Applied(charge)) = seen else {
        panic!("the waiter sees the charge final: {seen:?}")
    };
    assert_eq!(charge.provider_payment_id.as_deref(), Some(payment.as_str()), "{charge:?}");
    assert!(charge.transaction_id.is_some(), "{charge:?}");
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_payment_that_needs_authentication_waits_for_the_buyer_then_the_retry_pays_once() {
    let s = shop().await;
    let body = s.card("t1", 1, "pm_card_threeDSecure2Required");
    let first = s.app.post("/v1/charges", &s.key, "t1:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let charge = first.json();
    assert_eq!(charge["status"], "requires_action", "{charge}");
    assert_eq!(charge["next_action"]["type"], "use_stripe_sdk", "{charge}");
    assert!(charge["client_secret"].as_str().unwrap().contains("_secret_"), "{charge}");
    let payment = charge["provider_payment_id"].as_str().unwrap().to_owned();
    // nothing moved, and the order is held: no other attempt meanwhile
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions").await, 0);
    let other = s.app.post("/v1/charges", &s.key, "t1:2", s.card("t1", 2, "pm_card_visa")).await;
    assert_eq!(other.code(), "order_already_charged", "{other:?}");
    // a retry before the buyer authenticated is the same 202
    let waiting = s.app.post("/v1/charges", &s.key, "t1:1", body.clone()).await;
    assert_eq!((waiting.status, waiting.json()["status"].clone()), (StatusCode::ACCEPTED, json!("requires_action")));

    s.fake.admin("POST", &format!("/payment_intents/{payment}/authenticate"), Some(json!({"result": "succeed"}))).await;
    let paid = s.app.post("/v1/charges", &s.key, "t1:1", body.clone()).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{paid:?}");
    assert_eq!(paid.json()["status"], "succeeded");
    let again = s.app.post("/v1/charges", &s.key, "t1:1", body).await;
    assert!(again.replayed);
    assert_eq!(s.fake.payments_of("t1").await.len(), 1);
    assert_eq!(s.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 1);
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "22.50");
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_failed_authentication_is_a_decline_and_the_next_attempt_may_pay() {
    let s = shop().await;
    let body = s.card("t2", 1, "pm_card_threeDSecure2Required");
    let first = s.app.post("/v1/charges", &s.key, "t2:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let payment = first.json()["provider_payment_id"].as_str().unwrap().to_owned();
    s.fake.admin("POST", &format!("/payment_intents/{payment}/authenticate"), Some(json!({"result": "fail"}))).await;
    let declined = s.app.post("/v1/charges", &s.key, "t2:1", body).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED, "{declined:?}");
    assert_eq!(declined.code(), "card_declined");
    let next = s.app.post("/v1/charges", &s.key, "t2:2", s.card("t2", 2, "pm_card_visa")).await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
    s.audit_clean().await;
}

#[actix_web::test]
async fn an_unauthenticated_payment_is_cancelled_once_past_its_window_and_the_order_freed() {
    let s = shop_with(&[], |g| {
        g.card_lease_secs = 1;
        g.gateway_action_window_secs = 1;
    })
    .await;
    let body = s.card("t3", 1, "pm_card_threeDSecure2Required");
    let first = s.app.post("/v1/charges", &s.key, "t3:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let mut completer_config = s.completer_config(1);
    completer_config.gateway.gateway_action_window_secs = 1;
    let _completer = start_workers(&completer_config, &[Role::Completer]);
    eventually(20, "the completer cancels the payment", || async { s.status_of("t3").await == "failed" }).await;
    let payments = s.fake.payments_of("t3").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["status"], "canceled", "{payments:?}");
    let answer = s.app.post("/v1/charges", &s.key, "t3:1", body).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED, "{answer:?}");
    assert!(answer.json()["detail"].as_str().unwrap().contains("authentication_required"), "{answer:?}");
    let next = s.app.post("/v1/charges", &s.key, "t3:2", s.card("t3", 2, "pm_card_visa")).await;
    assert_eq!(next.status, StatusCode::CREATED, "{next:?}");
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_look_up_lists_the_payments_and_never_trusts_a_lagging_search() {
    // the provider's search lags a minute behind its writes, and it forgets keys after 0.2 s
    let s = shop_with(&["--idempotency-ttl-secs", "0.2", "--search-lag-ms", "60000"], |g| {
        g.card_lease_secs = 1;
        g.gateway_key_window_secs = 1;
    })
    .await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "o9"}})).await;
    let first = s.app.post("/v1/charges", &s.key, "o9:1", s.card("o9", 1, "pm_card_visa")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    // past the key window (from the first send): the retry looks the payment up before sending
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let retry = s.app.post("/v1/charges", &s.key, "o9:1", s.card("o9", 1, "pm_card_visa")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    let payments = s.fake.payments_of("o9").await;
    assert_eq!(payments.len(), 1, "found by listing, not sent again: {payments:?}");
    assert_eq!(retry.json()["provider_payment_id"], payments[0]["id"]);
    s.audit_clean().await;
}

#[actix_web::test]
async fn a_cancel_the_provider_answered_with_a_stored_error_is_asked_again_and_frees_the_order() {
    let s = shop_with(&[], |g| {
        g.card_lease_secs = 1;
        g.gateway_action_window_secs = 1;
    })
    .await;
    let body = s.card("t4", 1, "pm_card_threeDSecure2Required");
    let first = s.app.post("/v1/charges", &s.key, "t4:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    // the cancel's first send gets a 500 the provider stores for its key (and replays for a day)
    s.fake.arm(json!({"kind": "error_before_charge", "count": 1, "metadata": {"order_id": "t4"}})).await;
    let mut config = s.completer_config(1);
    config.gateway.gateway_action_window_secs = 1;
    let _completer = start_workers(&config, &[Role::Completer]);
    eventually(20, "the completer cancels the payment", || async { s.status_of("t4").await == "failed" }).await;
    assert_eq!(s.fake.stats().await["faults_applied"]["error_before_charge"], 1, "{}", s.fake.stats().await);
    assert_eq!(s.fake.payments_of("t4").await[0]["status"], "canceled");
    let answer = s.app.post("/v1/charges", &s.key, "t4:1", body).await;
    assert_eq!(answer.status, StatusCode::PAYMENT_REQUIRED, "{answer:?}");
    assert!(answer.json()["detail"].as_str().unwrap().contains("authentication_required"), "{answer:?}");
    s.audit_clean().await;
}

/// The provider refuses a revoked or restricted key before it looks at the
/// Idempotency-Key, so a refusal says nothing about an earlier send whose
/// answer was lost. Such a charge stays in flight (502 `provider_rejected`,
/// nothing undone); once the key is fixed, past the key window, the retry
/// looks the payment up and records it: one payment. Undone at the refusal,
/// the retry would have started a new charge, sent it as a first send with
/// the key the provider had forgotten, and paid the order twice (found by
/// the protocol's model, `docs/model.md`).
#[actix_web::test]
async fn a_refused_resend_after_a_lost_answer_keeps_the_charge_the_provider_made() {
    let restricted = "rk_test_ledger_restricted";
    // the provider forgets keys after 1 s, and the API knows it
    let s = shop_with(&["--idempotency-ttl-secs", "1", "--restricted-key", restricted], |g| {
        g.gateway_key_window_secs = 1;
    })
    .await;
    s.fake.arm(json!({"kind": "drop_after_charge", "count": 1, "metadata": {"order_id": "k2"}})).await;
    let body = s.card("k2", 1, "pm_card_visa");
    let first = s.app.post("/v1/charges", &s.key, "k2:1", body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    assert_eq!(s.fake.payments_of("k2").await.len(), 1, "the provider did charge");

    // the retry reaches a process whose key was revoked: refused, and nothing undone
    let revoked = s.api_with(&[("GATEWAY_SECRET_KEY", restricted)]).await;
    let wait = std::time::Duration::from_secs(30);
    let refused =
        ledger_tests::api_process::post(&revoked.url("/v1/charges"), &s.key, "k2:1", &body, wait).await.unwrap();
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{refused:?}");
    assert_eq!(refused.code(), "provider_rejected");
    assert_eq!(s.scalar("SELECT count(*) FROM charges WHERE status = 'processing'").await, 1, "kept in flight");
    assert_eq!(s.scalar("SELECT sends::bigint FROM card_charges").await, 2);
    assert_eq!(s.scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'k2:1'").await, 1, "the key names it");

    // fixed, past the key window: looked up, not sent again
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let retry = s.app.post("/v1/charges", &s.key, "k2:1", body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    let payments = s.fake.payments_of("k2").await;
    assert_eq!(payments.len(), 1, "the order paid once: {payments:?}");
    assert_eq!(retry.json()["provider_payment_id"], payments[0]["id"]);
    assert_eq!(retry.json()["id"], first.json()["id"], "the charge the provider made");
    s.audit_clean().await;
}

/// A card charge only credits its seller and platform, so it locks neither:
/// with both rows locked by another transaction as a debit locks them (a
/// refund, a transfer out), card charges are paid at once. (Each of its two transactions once locked them, which serialized
/// every card charge of a shop on its platform account's row.)
#[actix_web::test]
async fn a_card_charge_takes_no_lock_on_the_accounts_it_credits() {
    let s = shop().await;
    let holder = s.app.db.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    let ids = [uuid::Uuid::parse_str(&s.seller).unwrap(), uuid::Uuid::parse_str(&s.platform).unwrap()];
    let held = holder.query("SELECT 1 FROM accounts WHERE id = ANY($1) FOR NO KEY UPDATE", &[&&ids[..]]).await.unwrap();
    assert_eq!(held.len(), 2);
    let started = std::time::Instant::now();
    let keys: Vec<String> = (0..4).map(|i| format!("l{i}")).collect();
    let paid = futures::future::join_all(
        keys.iter().map(|k| s.app.post("/v1/charges", &s.key, k, s.card(k, 1, "pm_card_visa"))),
    )
    .await;
    for a in &paid {
        assert_eq!((a.status, a.json()["status"].as_str()), (StatusCode::CREATED, Some("succeeded")), "{a:?}");
    }
    // well within the API's lock timeout, which a wait for the rows would reach
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "90.00");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "10.00");
    s.audit_clean().await;
}

/// One order attempt sent at once under several keys: one charge and one
/// provider payment. Those that meet the first in the order's unique index
/// are answered 409 `contention` with `Retry-After`, and their retries find
/// the same charge.
#[actix_web::test]
async fn one_attempt_sent_at_once_under_several_keys_is_one_charge() {
    let s = shop().await;
    let body = s.card("dup", 1, "pm_card_visa");
    let mut ids = std::collections::BTreeSet::new();
    let mut pending: Vec<usize> = (0..6).collect();
    for _ in 0..20 {
        let keys: Vec<String> = pending.iter().map(|i| format!("dup:{i}")).collect();
        let answers =
            futures::future::join_all(keys.iter().map(|k| s.app.post("/v1/charges", &s.key, k, body.clone()))).await;
        let mut again = Vec::new();
        for (i, a) in pending.iter().zip(answers) {
            match a.status {
                StatusCode::CREATED | StatusCode::OK => {
                    ids.insert(a.json()["id"].as_str().unwrap().to_owned());
                }
                StatusCode::ACCEPTED => again.push(*i),
                StatusCode::CONFLICT => {
                    assert_eq!((a.code().as_str(), a.retry_after.is_some()), ("contention", true), "{a:?}");
                    again.push(*i);
                }
                _ => panic!("{a:?}"),
            }
        }
        pending = again;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(pending.is_empty(), "every key got its final answer");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(s.fake.payments_of("dup").await.len(), 1, "one provider payment");
    assert_eq!(s.scalar("SELECT count(*) FROM charges").await, 1);
    s.audit_clean().await;
}
