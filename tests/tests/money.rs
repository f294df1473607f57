//! Charges, refunds and the ledger's own guarantees, under concurrency.

use awc::http::StatusCode;
use futures::future::join_all;
use ledger_tests::spawn_app;
use rust_decimal::Decimal;
use serde_json::json;
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[actix_web::test]
async fn concurrent_charges_never_take_a_buyer_below_zero() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    // 40 charges of 7.00 against 100.00: at most 14 can succeed
    let (app, key, buyer, seller) = (&app, &key, &buyer, &seller);
    let answers = join_all((0..40).map(|i| async move {
        app.post(
            "/v1/charges",
            key,
            &format!("drain-{i}:1"),
            json!({"order_id": format!("drain-{i}"), "attempt": 1, "buyer_account_id": buyer,
                   "seller_account_id": seller, "amount": "7.00", "currency": "USD"}),
        )
        .await
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let declined = answers.iter().filter(|a| a.status == StatusCode::PAYMENT_REQUIRED).count();
    assert_eq!(ok + declined, 40, "every request is a charge or a decline: {answers:?}");
    assert_eq!(ok, 14);
    let balance = dec(&app.balance(key, buyer).await);
    assert!(balance >= Decimal::ZERO);
    assert_eq!(balance, dec("100.00") - dec("7.00") * Decimal::from(ok as i64));
    assert_eq!(dec(&app.balance(key, seller).await), dec("7.00") * Decimal::from(ok as i64));
    assert_eq!(app.db.count("charges").await, ok as i64);
}

#[actix_web::test]
async fn a_charge_splits_into_seller_and_platform_and_refunds_return_the_fee_exactly() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    let c = app
        .post(
            "/v1/charges",
            &key,
            "o:1",
            json!({"order_id": "o", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                   "amount": "10.00", "currency": "USD", "platform_fee": {"account_id": platform, "amount": "1.00"}}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    assert_eq!(app.balance(&key, &buyer).await, "90.00");
    assert_eq!(app.balance(&key, &seller).await, "9.00");
    assert_eq!(app.balance(&key, &platform).await, "1.00");
    let charge = c.id();
    // three refunds of 3.33, 3.33, 3.34: the fee comes back in rounded steps and exactly in total
    for (i, amount) in ["3.33", "3.33", "3.34"].iter().enumerate() {
        let r = app
            .post(
                &format!("/v1/charges/{charge}/refunds"),
                &key,
                &format!("r{i}"),
                json!({"amount": amount, "reference": format!("r{i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    assert_eq!(app.balance(&key, &buyer).await, "100.00");
    assert_eq!(app.balance(&key, &seller).await, "0.00");
    assert_eq!(app.balance(&key, &platform).await, "0.00");
    let got = app.get(&format!("/v1/charges/{charge}"), &key).await.json();
    assert_eq!(got["status"], "refunded");
    assert_eq!(got["refunded_amount"], "10.00");
    let more = app.post(&format!("/v1/charges/{charge}/refunds"), &key, "r-more", json!({"reference": "r-more"})).await;
    assert_eq!((more.status, more.code().as_str()), (StatusCode::CONFLICT, "refund_exceeds_charge"));
}

#[actix_web::test]
async fn concurrent_refunds_never_exceed_the_charge() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let c = app
        .post(
            "/v1/charges",
            &key,
            "o:1",
            json!({"order_id": "o", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                   "amount": "50.00", "currency": "USD"}),
        )
        .await;
    let charge = c.id();
    // 30 concurrent refunds of 4.00 against 50.00: 12 fit (48.00)
    let (app, key, charge_ref) = (&app, &key, &charge);
    let answers = join_all((0..30).map(|i| async move {
        let body = json!({"amount": "4.00", "reference": format!("refund-{i}")});
        app.post(&format!("/v1/charges/{charge_ref}/refunds"), key, &format!("refund-{i}"), body).await
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::CREATED).count();
    let refused = answers.iter().filter(|a| a.status == StatusCode::CONFLICT).count();
    assert_eq!((ok, refused), (12, 18), "{answers:?}");
    let refunded: Decimal = app
        .db
        .client()
        .await
        .query_one(
            "SELECT coalesce(sum(amount), 0) FROM refunds WHERE charge_id = $1",
            &[&uuid::Uuid::parse_str(&charge).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refunded, dec("48.00"));
    assert_eq!(app.balance(key, &buyer).await, "98.00");
    assert_eq!(app.balance(key, &seller).await, "2.00");
    let got = app.get(&format!("/v1/charges/{charge}"), key).await.json();
    assert_eq!(got["refunded_amount"], "48.00");
}

#[actix_web::test]
async fn ledger_entries_cannot_be_rewritten_and_transactions_must_balance() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    app.funded(&key, "buyer", "10.00").await;
    app.post("/v1/skus/mug/restocks", &key, "restock", json!({"quantity": 3})).await;
    let db = app.db.client().await;
    for sql in [
        "UPDATE ledger_entries SET amount = amount * 2",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
        "UPDATE ledger_transactions SET kind = 'charge'",
        "DELETE FROM ledger_transactions",
        "UPDATE stock_entries SET quantity = 100",
        "DELETE FROM stock_entries",
    ] {
        let err = db.batch_execute(sql).await.expect_err(sql);
        assert!(err.as_db_error().unwrap().message().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(app.db.count("ledger_entries").await, 2);
    assert_eq!(app.db.count("stock_entries").await, 1);

    // an unbalanced transaction is refused, at the end of the statement
    // that inserts its entries
    let err = db
        .batch_execute(
            "BEGIN;
             INSERT INTO ledger_transactions (id, tenant_id, kind, currency)
                  SELECT '00000000-0000-7000-8000-0000000000aa', tenant_id, 'transfer', 'USD' FROM accounts LIMIT 1;
             INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency)
                  SELECT '00000000-0000-7000-8000-0000000000aa', 0, id, 5, 'USD' FROM accounts LIMIT 1;
             COMMIT;",
        )
        .await
        .expect_err("an unbalanced transaction commits");
    assert!(err.as_db_error().unwrap().message().contains("does not sum to zero"), "{err}");
    db.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(app.db.count("ledger_entries").await, 2);

    // Each refused at the end of its statement: a leg added later to a
    // balanced transaction, an entry of no transaction, of no account or in
    // another currency than its account's; nothing of any is written.
    let tx: uuid::Uuid = db.query_one("SELECT id FROM ledger_transactions", &[]).await.unwrap().get(0);
    let account: uuid::Uuid = db.query_one("SELECT id FROM accounts LIMIT 1", &[]).await.unwrap().get(0);
    for (sql, refusal) in [
        (format!("SELECT '{tx}'::uuid, 9, '{account}'::uuid, 1, 'USD'"), "does not sum to zero"),
        (
            format!(
                "SELECT '00000000-0000-7000-8000-0000000000bb'::uuid, leg, '{account}'::uuid, amount, 'USD' \
                   FROM (VALUES (0, 1), (1, -1)) AS l(leg, amount)"
            ),
            "ledger transaction 00000000-0000-7000-8000-0000000000bb does not exist",
        ),
        (
            format!("SELECT '{tx}'::uuid, 9, '00000000-0000-7000-8000-0000000000cc'::uuid, 0.01, 'USD'"),
            "does not exist in USD",
        ),
        (format!("SELECT '{tx}'::uuid, 9, '{account}'::uuid, 0.01, 'EUR'"), "does not exist in EUR"),
    ] {
        let insert = format!("INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) {sql}");
        let err = db.batch_execute(&insert).await.expect_err(&insert);
        assert!(err.as_db_error().unwrap().message().contains(refusal), "{insert}: {err}");
    }
    assert_eq!(app.db.count("ledger_entries").await, 2);

    // An account never goes, nor changes what its entries name.
    for sql in [
        format!("DELETE FROM accounts WHERE id = '{account}'"),
        format!("UPDATE accounts SET currency = 'EUR' WHERE id = '{account}'"),
        format!("UPDATE accounts SET id = gen_random_uuid() WHERE id = '{account}'"),
    ] {
        let err = db.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(
            err.as_db_error().unwrap().code(),
            &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
}

/// A charge's tenant, seller and platform-fee account, and the tenant of a
/// ledger transaction, an event and an Idempotency-Key, are checked once per
/// statement, not by a foreign key per row: a row that names one that does
/// not exist is refused and nothing of its statement is written; what a row
/// names never changes, and a tenant never goes.
#[actix_web::test]
async fn rows_name_only_tenants_and_accounts_that_exist_and_a_tenant_never_goes() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "10.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    let c = app
        .post(
            "/v1/charges",
            &key,
            "o:1",
            json!({"order_id": "o", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                   "amount": "5.00", "currency": "USD", "platform_fee": {"account_id": platform, "amount": "1.00"}}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    let db = app.db.client().await;
    let counts = || async {
        let mut n = Vec::new();
        for t in ["charges", "ledger_transactions", "outbox", "idempotency_keys", "tenants"] {
            n.push(app.db.count(t).await);
        }
        n
    };
    let before = counts().await;
    let nobody = "00000000-0000-7000-8000-0000000000dd";
    // A copy of the charge (a new id, order and transaction) with one
    // reference changed; two rows in one statement, the first good, so a
    // refusal is the statement's.
    let copy = |tenant: &str, seller: &str, platform: &str| {
        format!(
            "WITH ids AS (SELECT gen_random_uuid() AS good, gen_random_uuid() AS bad),
                  t AS (INSERT INTO ledger_transactions (id, tenant_id, kind, currency)
                        SELECT x, c.tenant_id, 'charge', 'USD' FROM charges c, ids, unnest(ARRAY[ids.good, ids.bad]) x)
             INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id,
                                  platform_account_id, amount, fee, currency, transaction_id)
             SELECT gen_random_uuid(), c.tenant_id, 'good', 1, c.buyer_account_id, c.seller_account_id,
                    c.platform_account_id, 1, 0, 'USD', ids.good
               FROM charges c, ids
             UNION ALL
             SELECT gen_random_uuid(), {tenant}, 'bad', 1, c.buyer_account_id, {seller}, {platform}, 1, 0, 'USD',
                    ids.bad
               FROM charges c, ids"
        )
    };
    let (same_tenant, same_seller, same_platform) = ("c.tenant_id", "c.seller_account_id", "c.platform_account_id");
    let missing = format!("'{nobody}'::uuid");
    for (sql, refusal) in [
        (copy(&missing, same_seller, same_platform), format!("charges: tenant {nobody} does not exist")),
        (copy(same_tenant, &missing, same_platform), format!("charges: account {nobody} does not exist")),
        (copy(same_tenant, same_seller, &missing), format!("charges: account {nobody} does not exist")),
        (
            format!(
                "INSERT INTO ledger_transactions (id, tenant_id, kind, currency)
                 SELECT gen_random_uuid(), tenant_id, 'transfer', 'USD' FROM accounts
                 UNION ALL SELECT gen_random_uuid(), '{nobody}', 'transfer', 'USD'"
            ),
            format!("ledger_transactions: tenant {nobody} does not exist"),
        ),
        (
            format!(
                "INSERT INTO outbox (message_id, tenant_id, event_type, payload)
                 VALUES (gen_random_uuid(), (SELECT id FROM tenants), 'charge.succeeded', '{{}}'),
                        (gen_random_uuid(), '{nobody}', 'charge.succeeded', '{{}}')"
            ),
            format!("outbox: tenant {nobody} does not exist"),
        ),
        (
            format!(
                "INSERT INTO idempotency_keys (tenant_id, key, fingerprint)
                 VALUES ((SELECT id FROM tenants), 'k-good', '\\x00'), ('{nobody}', 'k-bad', '\\x00')"
            ),
            format!("idempotency_keys: tenant {nobody} does not exist"),
        ),
    ] {
        let err = db.batch_execute(&sql).await.expect_err(&sql);
        let e = err.as_db_error().unwrap();
        assert_eq!(e.code(), &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION, "{sql}: {err}");
        assert!(e.message().contains(&refusal), "{sql}: {err}");
    }
    assert_eq!(counts().await, before, "nothing of a refused statement is written");
    // the same statements with every reference good are taken
    db.batch_execute(&copy(same_tenant, same_seller, same_platform)).await.unwrap();
    assert_eq!(app.db.count("charges").await, before[0] + 2);

    // What a row names never changes; a tenant never goes.
    let other = app.tenant("other").await;
    let stranger = app.account(&other, "stranger", "USD", true).await;
    let tenant_of_other = format!("(SELECT tenant_id FROM accounts WHERE id = '{stranger}')");
    for sql in [
        format!("UPDATE charges SET tenant_id = {tenant_of_other}"),
        format!("UPDATE charges SET seller_account_id = '{stranger}'"),
        format!("UPDATE charges SET platform_account_id = '{stranger}'"),
        format!("UPDATE outbox SET tenant_id = {tenant_of_other}"),
        format!("UPDATE idempotency_keys SET tenant_id = {tenant_of_other}"),
        "DELETE FROM tenants".to_owned(),
        "TRUNCATE tenants CASCADE".to_owned(),
        "UPDATE tenants SET id = gen_random_uuid()".to_owned(),
    ] {
        let err = db.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(
            err.as_db_error().unwrap().code(),
            &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}: {err}"
        );
    }
    // an update that leaves them be is taken
    db.batch_execute("UPDATE tenants SET name = name || '-renamed' WHERE name = 'other'").await.unwrap();
    assert_eq!(app.balance(&key, &buyer).await, "5.00");
}

#[actix_web::test]
async fn entries_page_newest_first() {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "100.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    for i in 1..=5 {
        let a = app
            .post(
                "/v1/transfers",
                &key,
                &format!("t{i}"),
                json!({"source_account_id": buyer, "destination_account_id": seller, "amount": format!("{i}.00"), "currency": "USD"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    let mut amounts = Vec::new();
    let mut path = format!("/v1/accounts/{seller}/entries?limit=2");
    loop {
        let page = app.get(&path, &key).await.json();
        let data = page["data"].as_array().unwrap();
        amounts.extend(data.iter().map(|e| e["amount"].as_str().unwrap().to_owned()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        path = format!("/v1/accounts/{seller}/entries?limit=2&starting_after={}", data[1]["id"].as_str().unwrap());
    }
    assert_eq!(amounts, ["5.00", "4.00", "3.00", "2.00", "1.00"]);
    let bad = app.get(&format!("/v1/accounts/{seller}/entries?starting_after=abc"), &key).await;
    assert_eq!((bad.status, bad.code().as_str()), (StatusCode::BAD_REQUEST, "invalid_parameter"));
}
