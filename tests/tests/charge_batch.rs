//! Group commit of new wallet charges: concurrent charges share one
//! database transaction, and each still gets exactly the outcome it gets
//! alone: its charge or its decline, its error, its natural-key answer, its
//! stored answer replayed byte for byte; a failing batch fails none of its
//! requests. Which requests shared a transaction is read from the rows
//! themselves: rows written by one transaction carry its `xmin`.

use std::time::Duration;

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::{batching, spawn_app_with, Answer, TestApp};
use serde_json::{json, Value};

async fn batching_app() -> TestApp {
    spawn_app_with(batching).await
}

fn charge(order: &str, attempt: i32, buyer: &str, seller: &str, amount: &str) -> Value {
    json!({"order_id": order, "attempt": attempt, "buyer_account_id": buyer, "seller_account_id": seller,
           "amount": amount, "currency": "USD"})
}

/// Every request sent again with its key: the first answer, byte for byte,
/// as a replay (errors were not stored: they are answered afresh, the same).
async fn assert_replays(app: &TestApp, key: &str, sent: &[(String, Value)], first: &[Answer]) {
    for ((idem, body), answer) in sent.iter().zip(first) {
        let again = app.post("/v1/charges", key, idem, body.clone()).await;
        assert_eq!((again.status, &again.body), (answer.status, &answer.body), "{idem}: the same answer");
        let stored = answer.status.is_success() || answer.status == StatusCode::PAYMENT_REQUIRED;
        assert_eq!(again.replayed, stored, "{idem}: replayed from the stored answer when there is one");
    }
}

#[actix_web::test]
async fn concurrent_charges_share_commits_and_each_gets_its_own_outcome() {
    let app = batching_app().await;
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    let rich = app.funded(&key, "rich", "1000.00").await;
    // pays for one of its two charges of 30.00, not both
    let tight = app.funded(&key, "tight", "40.00").await;
    let broke = app.funded(&key, "broke", "1.00").await;
    let cents = app.funded(&key, "cents", "50.00").await;

    let mut sent: Vec<(String, Value)> = Vec::new();
    for i in 0..10 {
        let mut body = charge(&format!("ok-{i}"), 1, &rich, &seller, "10.00");
        body["platform_fee"] = json!({"account_id": platform, "amount": "1.50"});
        sent.push((format!("ok-{i}:1"), body));
    }
    sent.push(("tight-a:1".into(), charge("tight-a", 1, &tight, &seller, "30.00")));
    sent.push(("tight-b:1".into(), charge("tight-b", 1, &tight, &seller, "30.00")));
    sent.push(("broke:1".into(), charge("broke", 1, &broke, &seller, "5.00")));
    let ghost = uuid::Uuid::now_v7().to_string();
    sent.push(("ghost:1".into(), charge("ghost", 1, &rich, &ghost, "5.00")));
    let mut too_big = charge("fee", 1, &rich, &seller, "5.00");
    too_big["platform_fee"] = json!({"account_id": platform, "amount": "6.00"});
    sent.push(("fee:1".into(), too_big));
    // one key twice, and one order attempt under two keys
    sent.push(("twice:1".into(), charge("twice", 1, &cents, &seller, "7.00")));
    sent.push(("twice:1".into(), charge("twice", 1, &cents, &seller, "7.00")));
    sent.push(("nat:1".into(), charge("nat", 1, &cents, &seller, "9.00")));
    sent.push(("nat:1:again".into(), charge("nat", 1, &cents, &seller, "9.00")));

    let answers = join_all(sent.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;
    let by_key = |idem: &str| -> Vec<&Answer> {
        sent.iter().zip(&answers).filter(|((k, _), _)| k == idem).map(|(_, a)| a).collect()
    };

    for i in 0..10 {
        let a = by_key(&format!("ok-{i}:1"))[0];
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        assert_eq!(a.json()["platform_fee"]["amount"], "1.50");
    }
    let tight_answers: Vec<StatusCode> = ["tight-a:1", "tight-b:1"].iter().map(|k| by_key(k)[0].status).collect();
    assert!(
        tight_answers.contains(&StatusCode::CREATED) && tight_answers.contains(&StatusCode::PAYMENT_REQUIRED),
        "one of the tight buyer's charges is paid, the other declined: {tight_answers:?}"
    );
    assert_eq!(by_key("broke:1")[0].code(), "insufficient_funds");
    assert_eq!(by_key("ghost:1")[0].code(), "account_not_found");
    assert_eq!(by_key("fee:1")[0].code(), "fee_exceeds_amount");
    let twice = by_key("twice:1");
    assert_eq!((twice[0].status, &twice[0].body), (twice[1].status, &twice[1].body), "one key, one answer");
    assert_eq!(twice[0].status, StatusCode::CREATED);
    assert_eq!(twice.iter().filter(|a| a.replayed).count(), 1, "the second of one key replays the first");
    let nat = [by_key("nat:1")[0], by_key("nat:1:again")[0]];
    assert_eq!(nat[0].id(), nat[1].id(), "one order attempt, one charge");
    let statuses: Vec<StatusCode> = nat.iter().map(|a| a.status).collect();
    assert!(statuses.contains(&StatusCode::CREATED) && statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(nat.iter().any(|a| a.natural_key_replayed), "the second found the first by its natural key");

    // The effects: one charge, one transaction and one event per paid
    // request, nothing for the others, and exact balances.
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 13);
    assert_eq!(app.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 13);
    assert_eq!(app.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 13);
    assert_eq!(
        app.scalar("SELECT count(*) FROM outbox o JOIN charges c ON c.order_id = o.order_id").await,
        13,
        "every event is its charge's"
    );
    assert_eq!(app.balance(&key, &rich).await, "900.00");
    assert_eq!(app.balance(&key, &tight).await, "10.00");
    assert_eq!(app.balance(&key, &broke).await, "1.00");
    assert_eq!(app.balance(&key, &cents).await, "34.00");
    assert_eq!(app.balance(&key, &platform).await, "15.00");
    assert_eq!(app.balance(&key, &seller).await, "131.00");
    app.audit_clean().await;

    // They were committed together: far fewer transactions than charges.
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM charges").await;
    assert!(commits < 13, "13 charges in {commits} commits");
    let largest = app.scalar("SELECT max(n) FROM (SELECT count(*) AS n FROM charges GROUP BY xmin::text) b").await;
    assert!(largest >= 4, "the largest batch held {largest} charges");

    assert_replays(&app, &key, &sent, &answers).await;
    // the same order attempt under yet another key, now that it is in the
    // database: the batch reads the order's charges and finds it
    // (among new charges, so that it goes in a batch, not alone)
    let nat = by_key("nat:1")[0];
    let mut more = vec![("nat:1:third".to_owned(), charge("nat", 1, &cents, &seller, "9.00"))];
    more.extend((0..5).map(|i| (format!("more-{i}:1"), charge(&format!("more-{i}"), 1, &rich, &seller, "1.00"))));
    let again = join_all(more.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;
    assert_eq!((again[0].status, again[0].natural_key_replayed), (StatusCode::OK, true), "{:?}", again[0]);
    assert_eq!(again[0].json()["id"], nat.json()["id"]);
    assert!(again[1..].iter().all(|a| a.status == StatusCode::CREATED), "{again:?}");
    // in a batch that read the order's charge, not each alone after a failed batch
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM charges WHERE order_id LIKE 'more-%'").await;
    assert!(commits < 5, "5 new charges in {commits} commits");
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 18, "no retry charged again");
}

/// Authorizations go through group commit too, beside charges made at
/// once: holds count against the buyer's balance in the batch's order, each
/// gets its own outcome, and the batch commits them together.
/// Retries in a batch beside new requests: a retry of a completed request is
/// answered by the batch's claim (no read of its own first), byte for byte;
/// its key under another request is refused; the new ones are charged.
#[actix_web::test]
async fn retries_in_a_batch_are_replayed_or_refused_beside_new_charges() {
    let app = spawn_app_with(|c| {
        batching(c);
        c.metrics_addr = Some("127.0.0.1:0".into());
    })
    .await;
    // requests that went through a batch, retries included (none read a
    // stored answer of its own before its batch)
    let batched = async || -> f64 {
        let text = app.metrics().await;
        let line = text.lines().find(|l| l.starts_with("ledger_charge_batch_size_sum ")).expect("batch sizes");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let rich = app.funded(&key, "rich", "1000.00").await;
    let first: Vec<(String, Value)> =
        (0..6).map(|i| (format!("first-{i}:1"), charge(&format!("first-{i}"), 1, &rich, &seller, "1.00"))).collect();
    let answers = join_all(first.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::CREATED), "{answers:?}");

    let before = batched().await;
    let mut mixed: Vec<(String, Value)> = first.clone();
    mixed.push(("first-0:1".into(), charge("first-0", 1, &rich, &seller, "2.00")));
    mixed.extend((0..6).map(|i| (format!("next-{i}:1"), charge(&format!("next-{i}"), 1, &rich, &seller, "1.00"))));
    let again = join_all(mixed.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;
    for (answer, replayed) in answers.iter().zip(&again) {
        assert_eq!((replayed.status, &replayed.body), (answer.status, &answer.body), "the first answer");
        assert!(replayed.replayed, "{replayed:?}");
    }
    assert_eq!(again[6].status, StatusCode::CONFLICT, "{:?}", again[6]);
    assert_eq!(again[6].code(), "idempotency_key_reused");
    assert!(again[7..].iter().all(|a| a.status == StatusCode::CREATED && !a.replayed), "{again:?}");
    assert_eq!(batched().await - before, 13.0, "every request of the round went through a batch");
    // the new ones shared commits: the retries went through batches with them
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM charges WHERE order_id LIKE 'next-%'").await;
    assert!(commits < 6, "6 new charges in {commits} commits");
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 12, "no retry charged again");
    assert_eq!(app.balance(&key, &rich).await, "988.00");
    app.audit_clean().await;
}

#[actix_web::test]
async fn authorizations_share_commits_with_charges_and_holds_count_in_the_batch() {
    let app = batching_app().await;
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    // the holds account exists before the burst, as after a first authorization
    let mut first = charge("first", 1, &buyer, &seller, "1.00");
    first["capture"] = json!(false);
    assert_eq!(app.post("/v1/charges", &key, "first:1", first).await.status, StatusCode::CREATED);

    // 99.00 left: 12 holds of 5.00 and 12 charges of 5.00 ask 120.00
    let mut sent: Vec<(String, Value)> = Vec::new();
    for i in 0..12 {
        let mut held = charge(&format!("held-{i}"), 1, &buyer, &seller, "5.00");
        held["capture"] = json!(false);
        sent.push((format!("held-{i}:1"), held));
        sent.push((format!("now-{i}:1"), charge(&format!("now-{i}"), 1, &buyer, &seller, "5.00")));
    }
    let answers = join_all(sent.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let declined = answers.iter().filter(|a| a.status == StatusCode::PAYMENT_REQUIRED).count();
    assert_eq!((ok, declined), (19, 5), "99.00 pays 19 of 5.00: {answers:?}");
    let authorized =
        answers.iter().filter(|a| a.status == StatusCode::CREATED && a.json()["status"] == "authorized").count();
    let held = 1 + 5 * authorized as i64;
    let account = app.get(&format!("/v1/accounts/{buyer}"), &key).await.json();
    assert_eq!(account["balance"], "4.00", "{account}");
    assert_eq!(account["pending"], format!("{held}.00"), "{account}");
    assert_eq!(
        app.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.authorized'").await,
        1 + authorized as i64
    );
    assert_eq!(app.scalar("SELECT count(*) FROM charge_authorizations").await, 1 + authorized as i64);
    app.audit_clean().await;
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM charges WHERE order_id <> 'first'").await;
    assert!(commits < 19, "19 charges in {commits} commits");
    let mixed = app
        .scalar(
            "SELECT count(*) FROM (SELECT xmin::text FROM charges GROUP BY xmin::text \
              HAVING bool_or(status = 'authorized') AND bool_or(status = 'succeeded')) m",
        )
        .await;
    assert!(mixed >= 1, "a batch held authorizations and charges together");
    assert_replays(&app, &key, &sent, &answers).await;
}

#[actix_web::test]
async fn a_lone_request_on_an_idle_service_does_not_wait_for_the_window() {
    // A window far longer than the client waits: a lone request that waited
    // for it would time out.
    let app = spawn_app_with(|c| {
        c.charge_batch_max = 16;
        c.charge_batch_window_us = 60_000_000;
        c.charge_batch_concurrency = 1;
    })
    .await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    for i in 0..3 {
        let idem = format!("o{i}:1");
        let send = app.post("/v1/charges", &key, &idem, charge(&format!("o{i}"), 1, &buyer, &seller, "1.00"));
        let a = tokio::time::timeout(Duration::from_secs(10), send).await.expect("answered without the window");
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    }
    assert_eq!(app.balance(&key, &buyer).await, "97.00");
}

#[actix_web::test]
async fn a_batch_that_fails_fails_none_of_its_requests_but_the_one_at_fault() {
    let app = batching_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    // A fault only one request meets: its charge's insert fails, which fails
    // the statement that inserts the whole batch.
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.order_id = 'poison' THEN RAISE EXCEPTION 'poisoned order'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON charges FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .await
    .unwrap();

    let mut sent: Vec<(String, Value)> =
        (0..8).map(|i| (format!("n{i}:1"), charge(&format!("n{i}"), 1, &buyer, &seller, "5.00"))).collect();
    sent.insert(3, ("poison:1".into(), charge("poison", 1, &buyer, &seller, "5.00")));
    let answers = join_all(sent.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone()))).await;

    for ((idem, _), a) in sent.iter().zip(&answers) {
        if idem == "poison:1" {
            assert!(a.status.is_server_error(), "the request at fault fails: {a:?}");
        } else {
            assert_eq!(a.status, StatusCode::CREATED, "{idem}: {a:?}");
        }
    }
    assert_eq!(app.scalar("SELECT count(*) FROM charges WHERE order_id = 'poison'").await, 0);
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 8);
    assert_eq!(app.scalar("SELECT count(*) FROM ledger_transactions WHERE kind = 'charge'").await, 8);
    assert_eq!(app.scalar("SELECT count(*) FROM outbox WHERE event_type = 'charge.succeeded'").await, 8);
    assert_eq!(
        app.scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'poison:1'").await,
        0,
        "the failed request's key is free: a retry runs afresh"
    );
    assert_eq!(app.balance(&key, &buyer).await, "60.00");
    app.audit_clean().await;

    db.batch_execute("DROP TRIGGER refuse_poison ON charges").await.unwrap();
    let retry = app.post("/v1/charges", &key, "poison:1", sent[3].1.clone()).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(app.balance(&key, &buyer).await, "55.00");
}

/// A batch's pipelined statements run in the order it sends them, whatever
/// its connection has prepared already. A connection that had prepared the
/// charges' insert but not the postings once ran the insert first, which
/// failed its foreign key to the postings (`make chaos` found it).
#[actix_web::test]
async fn a_batch_runs_its_statements_in_order_whatever_its_connection_prepared_before() {
    use ledger::charge_batch::BatchedCharge;
    use ledger::charges::NewCharge;
    use ledger::Batched;

    let app = batching_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let tenant: uuid::Uuid = app.db.client().await.query_one("SELECT id FROM tenants", &[]).await.unwrap().get(0);

    let pool = ledger::db::pool(&app.db.url, &Default::default()).unwrap();
    let mut client = pool.get().await.unwrap();
    client.prepare_cached(&ledger::charges::insert_many_sql()).await.unwrap();
    let new = |order: &str| NewCharge {
        order_id: order.to_owned(),
        attempt: 1,
        buyer: buyer.parse().unwrap(),
        seller: seller.parse().unwrap(),
        amount: "10.00".parse().unwrap(),
        currency: "USD".parse().unwrap(),
        platform_fee: None,
        receipt_email: None,
        hold: None,
    };
    let charges = [new("p1"), new("p2")];
    let items: Vec<BatchedCharge<'_>> =
        charges.iter().map(|c| BatchedCharge { tenant: ledger::TenantId(tenant), new: c, request_id: None }).collect();
    let tx = client.transaction().await.unwrap();
    let results = ledger::charge_batch::create_many(&tx, &items, ledger::charge_batch::Locks::Skip)
        .await
        .expect("the batch runs");
    tx.commit().await.unwrap();
    for r in &results {
        assert!(matches!(r, Batched::Done(Ok(ledger::Outcome::Applied(_)))), "{r:?}");
    }
    assert_eq!(app.scalar("SELECT count(*) FROM charges").await, 2);
    assert_eq!(app.balance(&key, &buyer).await, "80.00");
    app.audit_clean().await;
}

/// One buyer's row held by another transaction (a long transfer, an
/// operator's session) holds up none of the strangers batched with its
/// charge: the batch skips that buyer instead of waiting for the row, the
/// strangers commit while the row is still held, and the locked buyer's
/// charge runs alone, waits for the row and commits once it is free. The
/// lock timeout is a minute here, so a batch that waited would hold every
/// stranger until the row is released.
#[actix_web::test]
async fn a_buyer_locked_by_another_transaction_holds_up_no_stranger_in_its_batch() {
    let app = spawn_app_with(|c| {
        c.charge_batch_max = 16;
        c.charge_batch_window_us = 300_000;
        c.charge_batch_concurrency = 1;
        c.database.db_lock_timeout_ms = 60_000;
    })
    .await;
    let key = app.tenant("shop").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let locked = app.funded(&key, "locked", "100.00").await;
    let mut strangers = Vec::new();
    for i in 0..8 {
        strangers.push(app.funded(&key, &format!("stranger-{i}"), "100.00").await);
    }
    let holder = app.db.client().await;
    holder.batch_execute(&format!("BEGIN; SELECT 1 FROM accounts WHERE id = '{locked}' FOR UPDATE")).await.unwrap();

    let mut sent = vec![("held:1".to_owned(), charge("held", 1, &locked, &seller, "10.00"))];
    for (i, buyer) in strangers.iter().enumerate() {
        sent.push((format!("s-{i}:1"), charge(&format!("s-{i}"), 1, buyer, &seller, "10.00")));
    }
    let requests = join_all(sent.iter().map(|(idem, body)| app.post("/v1/charges", &key, idem, body.clone())));
    let strangers_paid = async {
        ledger_tests::eventually(20, "every stranger is charged while the row is held", || async {
            app.scalar(&format!("SELECT count(*) FROM charges WHERE buyer_account_id <> '{locked}'")).await == 8
        })
        .await;
        let held = app.scalar(&format!("SELECT count(*) FROM charges WHERE buyer_account_id = '{locked}'")).await;
        assert_eq!(held, 0, "its charge waits for the row");
        holder.batch_execute("COMMIT").await.unwrap();
    };
    let (answers, ()) = futures::join!(requests, strangers_paid);
    for ((idem, _), a) in sent.iter().zip(&answers) {
        assert_eq!(a.status, StatusCode::CREATED, "{idem}: {a:?}");
    }
    // the strangers shared commits: batched, not each run alone after a failed batch
    let commits = app.scalar("SELECT count(DISTINCT xmin::text) FROM charges").await;
    assert!(commits < 9, "{commits} commits for 9 charges");
}
