//! Card charges in batches (group commit of both of a card charge's
//! transactions). Concurrent new card charges are created in flight
//! together, each key marked with its charge, before any is sent; each
//! still gets what it gets alone (its payment asked once, its error, its
//! natural-key answer), and what the batch does not take runs alone.
//! Concurrent card charges the provider paid are recorded together, each
//! exactly as alone: one payment, one ledger transaction with the lone
//! path's legs, one event, its answer stored and replayed byte for byte.
//! What a batch does not record it leaves to the lone path, untouched.
//! Which requests shared a transaction is read from the rows themselves
//! (rows written by one transaction carry its `xmin`) or from the batch
//! metrics.

use std::time::Duration;

use awc::http::StatusCode;
use futures::future::join_all;
use ledger::card_batch::{PaidCharge, Payment};
use ledger::cards::{NewCardCharge, ProviderAnswer};
use ledger::charges::{ChargeStatus, PlatformFee};
use ledger::phases::{Begun, Completion};
use ledger::{Batched, Outcome, TenantId};
use ledger_tests::card_shop::CardShop;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

/// A shop whose API batches (`ledger_tests::batching`): a burst of
/// concurrent card charges lands in a few batches.
async fn batching_shop() -> CardShop {
    CardShop::configured(&[], false, ledger_tests::batching).await
}

#[actix_web::test]
async fn concurrent_card_payments_are_recorded_together_each_once_with_its_stored_answer() {
    let s = batching_shop().await;
    let card = |order: &str| {
        json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
               "seller_account_id": s.seller, "amount": "25.00", "currency": "USD",
               "platform_fee": {"account_id": s.platform, "amount": "2.50"}})
    };
    let orders: Vec<String> = (0..12).map(|i| format!("burst-{i}")).collect();
    let keys: Vec<String> = orders.iter().map(|o| format!("{o}:1")).collect();
    let answers = join_all(orders.iter().zip(&keys).map(|(o, k)| s.app.post("/v1/charges", &s.key, k, card(o)))).await;
    for (order, answer) in orders.iter().zip(&answers) {
        assert_eq!(answer.status, StatusCode::CREATED, "{order}: {answer:?}");
        let charge = answer.json();
        assert_eq!(charge["status"], "succeeded", "{order}");
        assert_eq!(charge["order_id"], order.as_str());
        // the stored answer is the charge as the ledger holds it
        let read = s.app.get(&format!("/v1/charges/{}", charge["id"].as_str().unwrap()), &s.key).await;
        assert_eq!(read.json(), charge, "{order}: the answer is the recorded charge");
        assert_eq!(s.fake.payments_of(order).await.len(), 1, "{order}: one payment at the provider");
    }

    // One payment, one transaction and one event per charge, exact balances.
    let count = |sql: &'static str| s.app.scalar(sql);
    assert_eq!(count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await, 12);
    assert_eq!(count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 12);
    assert_eq!(count("SELECT count(*) FROM ledger_entries").await, 36);
    assert_eq!(
        count(
            "SELECT count(*) FROM outbox o JOIN charges c ON c.order_id = o.order_id \
                WHERE o.event_type = 'charge.succeeded' AND o.payload->'data'->>'id' = c.id::text"
        )
        .await,
        12,
        "every charge has its one event"
    );
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "270.00");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "30.00");
    s.audit_clean().await;

    // They were recorded together: far fewer commits than payments.
    let commits = count("SELECT count(DISTINCT xmin::text) FROM card_charges").await;
    assert!(commits < 12, "12 payments recorded in {commits} commits");
    let largest = count("SELECT max(n) FROM (SELECT count(*) AS n FROM card_charges GROUP BY xmin::text) b").await;
    assert!(largest >= 4, "the largest batch recorded {largest} payments");

    // Every retry replays its first answer, byte for byte.
    for (order, first) in orders.iter().zip(&answers) {
        let again = s.app.post("/v1/charges", &s.key, &format!("{order}:1"), card(order)).await;
        assert!(again.replayed, "{order}: {again:?}");
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{order}: the same answer");
    }
    assert_eq!(count("SELECT count(*) FROM ledger_transactions").await, 12, "nothing more");
}

/// New card charges' first transactions, batched: a burst of new charges
/// (and beside them a key twice, an order attempt under two keys, a seller
/// that does not exist, a fee larger than the amount) goes through the
/// batches of first transactions, and each request gets what it gets
/// alone, its payment asked of the provider once.
#[actix_web::test]
async fn new_card_charges_begin_together_and_each_gets_what_it_gets_alone() {
    let s = CardShop::configured(&[], false, |c| {
        ledger_tests::batching(c);
        c.metrics_addr = Some("127.0.0.1:0".into());
    })
    .await;
    let card = |order: &str, seller: &str, fee: &str| {
        json!({"order_id": order, "attempt": 1, "payment_method": "pm_card_visa",
               "seller_account_id": seller, "amount": "25.00", "currency": "USD",
               "platform_fee": {"account_id": s.platform, "amount": fee}})
    };
    let ghost = Uuid::now_v7().to_string();
    let mut sent: Vec<(String, serde_json::Value)> =
        (0..8).map(|i| (format!("new-{i}:1"), card(&format!("new-{i}"), &s.seller, "2.50"))).collect();
    sent.push(("twice:1".into(), card("twice", &s.seller, "2.50")));
    sent.push(("twice:1".into(), card("twice", &s.seller, "2.50")));
    sent.push(("nat:1".into(), card("nat", &s.seller, "2.50")));
    sent.push(("nat:1:again".into(), card("nat", &s.seller, "2.50")));
    sent.push(("ghost:1".into(), card("ghost", &ghost, "2.50")));
    sent.push(("fee:1".into(), card("fee", &s.seller, "30.00")));
    let first = join_all(sent.iter().map(|(k, body)| s.app.post("/v1/charges", &s.key, k, body.clone()))).await;
    // A second request for a charge in flight (the same key, or the same
    // order attempt under another) may ask the provider while the first
    // one's answer is still coming: the provider refuses the concurrent use
    // of its key, and the request answers 202 `processing`, not stored, as
    // alone. Its retry gets the final answer.
    let mut answers = Vec::new();
    let mut retries = 0;
    for ((key, body), answer) in sent.iter().zip(first) {
        let mut answer = answer;
        for _ in 0..50 {
            if answer.status != StatusCode::ACCEPTED {
                break;
            }
            assert_eq!(answer.json()["status"], "processing", "{key}: {answer:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = s.app.post("/v1/charges", &s.key, key, body.clone()).await;
            retries += 1;
        }
        answers.push(answer);
    }
    let by_key = |key: &str| -> Vec<&ledger_tests::Answer> {
        sent.iter().zip(&answers).filter(|((k, _), _)| k == key).map(|(_, a)| a).collect()
    };

    for i in 0..8 {
        let a = by_key(&format!("new-{i}:1"))[0];
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        assert_eq!(a.json()["status"], "succeeded");
    }
    let twice = by_key("twice:1");
    assert_eq!((twice[0].status, &twice[0].body), (twice[1].status, &twice[1].body), "one key, one answer");
    assert_eq!(twice[0].status, StatusCode::CREATED);
    assert!(twice.iter().any(|a| a.replayed), "the second of one key replays the first");
    let nat = [by_key("nat:1")[0], by_key("nat:1:again")[0]];
    assert_eq!(nat[0].json()["id"], nat[1].json()["id"], "one order attempt, one charge: {nat:?}");
    assert!(nat.iter().all(|a| a.status.is_success() && a.json()["status"] == "succeeded"), "{nat:?}");
    assert_eq!(by_key("ghost:1")[0].code(), "account_not_found");
    assert_eq!(by_key("fee:1")[0].code(), "fee_exceeds_amount");

    // Every request went through a batch of first transactions, and they
    // shared them.
    let text = s.app.metrics().await;
    let metric = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).expect(name);
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // (a retry of a 202 is a request too, and goes through a batch like the first)
    let requests = sent.len() + retries;
    assert_eq!(
        metric("ledger_card_begin_batch_size_sum"),
        requests as f64,
        "every request was batched ({retries} retries)"
    );
    let batches = metric("ledger_card_begin_batch_size_count");
    assert!(batches <= (sent.len() / 2) as f64, "{} requests in {batches} batches", sent.len());

    // One charge and one payment per order, exact balances, a clean audit.
    for order in (0..8).map(|i| format!("new-{i}")).chain(["twice".into(), "nat".into()]) {
        assert_eq!(s.fake.payments_of(&order).await.len(), 1, "{order}: one payment at the provider");
    }
    assert!(s.fake.payments_of("ghost").await.is_empty() && s.fake.payments_of("fee").await.is_empty());
    let count = |sql: &'static str| s.app.scalar(sql);
    assert_eq!(count("SELECT count(*) FROM charges").await, 10);
    assert_eq!(count("SELECT count(*) FROM charges WHERE status = 'succeeded'").await, 10);
    assert_eq!(count("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 10);
    assert_eq!(
        count("SELECT count(*) FROM idempotency_keys WHERE status_code IS NULL").await,
        0,
        "no key left in flight"
    );
    assert_eq!(s.app.balance(&s.key, &s.seller).await, "225.00");
    assert_eq!(s.app.balance(&s.key, &s.platform).await, "25.00");
    s.audit_clean().await;

    // Every retry gets its answer again; nothing more is asked or made.
    for ((key, body), first) in sent.iter().zip(&answers) {
        let again = s.app.post("/v1/charges", &s.key, key, body.clone()).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{key}: the same answer");
        assert_eq!(again.replayed, first.status.is_success(), "{key}: replayed when stored");
    }
    assert_eq!(s.fake.payments().await.len(), 10, "no payment more");
    assert_eq!(count("SELECT count(*) FROM ledger_transactions").await, 10, "nothing more");
}

/// The shop's tenant, seller and platform, as the ledger names them.
async fn parties(s: &CardShop) -> (TenantId, Uuid, Uuid) {
    let client = s.app.db.client().await;
    let tenant: Uuid = client.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);
    (TenantId(tenant), s.seller.parse().unwrap(), s.platform.parse().unwrap())
}

/// A card charge of `order` for 25.00 (2.50 to the platform), `processing`:
/// its first transaction committed, the provider not yet answered.
async fn processing(pool: &deadpool_postgres::Pool, s: &CardShop, order: &str) -> Uuid {
    let (tenant, seller, platform) = parties(s).await;
    let fee = PlatformFee { account_id: platform, amount: Decimal::new(250, 2) };
    let new = NewCardCharge {
        order_id: order.to_owned(),
        attempt: 1,
        payment_method: "pm_card_visa".to_owned(),
        seller,
        amount: Decimal::new(2500, 2),
        currency: "USD".parse().unwrap(),
        platform_fee: Some(fee),
        receipt_email: None,
        provider_key: format!("pk-{order}"),
        lease: Duration::from_secs(30),
        authorize: None,
    };
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let Begun::InFlight(charge) = ledger::cards::begin(&tx, tenant, &new).await.unwrap() else {
        panic!("a new card charge is in flight")
    };
    tx.commit().await.unwrap();
    charge.id
}

fn payment(id: &str, amount_minor: i64) -> Payment {
    Payment { payment_id: id.to_owned(), amount_minor, currency: "usd".to_owned() }
}

/// One batch over `items` (charge, payment), committed; its results.
async fn record(
    pool: &deadpool_postgres::Pool,
    tenant: TenantId,
    items: &[(Uuid, &Payment)],
) -> Vec<Batched<ledger::charges::Charge>> {
    let items: Vec<PaidCharge<'_>> =
        items.iter().map(|(id, p)| PaidCharge { tenant, charge_id: *id, payment: p, request_id: None }).collect();
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    // a batch never waits for a row another transaction holds
    let results = tokio::time::timeout(Duration::from_secs(10), ledger::card_batch::record_paid_many(&tx, &items))
        .await
        .expect("the batch does not wait for a locked charge")
        .unwrap();
    tx.commit().await.unwrap();
    results
}

/// A charge's legs: (leg, account, amount).
async fn legs(s: &CardShop, transaction: Uuid) -> Vec<(i16, Uuid, Decimal)> {
    let client = s.app.db.client().await;
    let rows = client
        .query(
            "SELECT leg, account_id, amount FROM ledger_entries WHERE transaction_id = $1 ORDER BY leg",
            &[&transaction],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get::<_, Decimal>(2).normalize())).collect()
}

#[actix_web::test]
async fn a_batch_records_a_payment_as_alone_and_leaves_the_rest_to_the_lone_path_untouched() {
    let s = CardShop::new().await;
    let pool = ledger::db::pool(&s.app.db.url, &Default::default()).unwrap();
    let (tenant, _, _) = parties(&s).await;
    let mut ids = Vec::new();
    for order in ["paid", "locked", "mismatched", "done", "alone"] {
        ids.push(processing(&pool, &s, order).await);
    }
    let [paid, locked, mismatched, done, alone] = [ids[0], ids[1], ids[2], ids[3], ids[4]];

    // `done` recorded first, in a batch of its own
    let (p_paid, p_locked, p_mismatched, p_done) = (
        payment("pi_paid", 2500),
        payment("pi_locked", 2500),
        payment("pi_mismatched", 2400),
        payment("pi_done", 2500),
    );
    let first = record(&pool, tenant, &[(done, &p_done)]).await;
    assert!(matches!(first[..], [Batched::Done(Ok(Outcome::Applied(_)))]), "{first:?}");

    // `locked` held by another transaction (a webhook recording it, say)
    let mut holder = pool.get().await.unwrap();
    let holding = holder.transaction().await.unwrap();
    holding.execute("SELECT 1 FROM charges WHERE id = $1 FOR UPDATE", &[&locked]).await.unwrap();

    let results = record(
        &pool,
        tenant,
        &[(paid, &p_paid), (locked, &p_locked), (mismatched, &p_mismatched), (done, &p_done), (paid, &p_paid)],
    )
    .await;
    let Batched::Done(Ok(Outcome::Applied(charge))) = &results[0] else {
        panic!("the payment is recorded: {results:?}")
    };
    assert_eq!(charge.status, ChargeStatus::Succeeded);
    assert_eq!(charge.provider_payment_id.as_deref(), Some("pi_paid"));
    assert!(charge.clearing_account_id.is_some() && charge.transaction_id.is_some(), "{charge:?}");
    for (what, result) in
        ["a locked charge", "a mismatched payment", "a final charge", "the same charge again"].iter().zip(&results[1..])
    {
        assert!(matches!(result, Batched::Alone), "{what} is left to the lone path: {result:?}");
    }
    holding.rollback().await.unwrap();

    // What it left is untouched: no flag for the mismatch (the lone path
    // raises it), the locked charge still processing, one event per payment.
    let count = |sql: &'static str| s.app.scalar(sql);
    assert_eq!(count("SELECT count(*) FROM provider_flags").await, 0);
    assert_eq!(count("SELECT count(*) FROM charges WHERE status = 'processing'").await, 3);
    assert_eq!(count("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 2);

    // The same payment recorded alone books the same legs.
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let answer =
        ProviderAnswer::Succeeded { payment_id: "pi_alone".into(), amount_minor: 2500, currency: "usd".into() };
    let Completion::Final(Outcome::Applied(lone)) =
        ledger::cards::complete(&tx, tenant, alone, Some(&answer)).await.unwrap()
    else {
        panic!("recorded alone")
    };
    tx.commit().await.unwrap();
    let batched = legs(&s, charge.transaction_id.unwrap()).await;
    assert_eq!(batched.len(), 3, "{batched:?}");
    assert_eq!(legs(&s, lone.transaction_id.unwrap()).await, batched, "the batch books the lone path's legs");
    assert_eq!(lone.clearing_account_id, charge.clearing_account_id);
    s.audit_clean().await;
}
