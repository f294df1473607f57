//! Least privilege: the API and the workers connect as roles that can read
//! and write rows but cannot rewrite money or stock, change the schema, or
//! switch the append-only triggers off. Every forbidden statement fails with
//! a permission error (42501), before any trigger is reached.

use awc::http::StatusCode;
use ledger_tests::{as_role, spawn_app, API_ROLE, WORKER_ROLE};
use serde_json::json;
use tokio_postgres::error::SqlState;

/// Statements neither service role may run, whatever the rows.
const FORBIDDEN: &[&str] = &[
    "UPDATE ledger_entries SET amount = amount",
    "DELETE FROM ledger_entries",
    "TRUNCATE ledger_entries",
    "UPDATE ledger_transactions SET kind = kind",
    "DELETE FROM ledger_transactions",
    "TRUNCATE ledger_transactions CASCADE",
    "UPDATE stock_entries SET quantity = quantity",
    "DELETE FROM stock_entries",
    "TRUNCATE stock_entries",
    "TRUNCATE charges CASCADE",
    "UPDATE balance_checkpoints SET balance = balance",
    "DELETE FROM balance_checkpoints",
    "TRUNCATE balance_checkpoints",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ALL",
    "ALTER TABLE stock_entries DISABLE TRIGGER stock_entries_append_only",
    "ALTER TABLE accounts ADD COLUMN note text",
    "DROP TABLE idempotency_keys",
    "CREATE TABLE shadow_ledger (id bigint)",
    "SET session_replication_role = replica",
];

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("the role logs in");
    tokio::spawn(conn);
    client
}

#[actix_web::test]
async fn the_service_roles_cannot_rewrite_money_or_stock_or_change_the_schema() {
    // The API under test already runs as its role: a paid charge proves the
    // role has what the work needs.
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "50.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let c = app
        .post(
            "/v1/charges",
            &key,
            "o-1:1",
            json!({"order_id": "o-1", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                   "amount": "10.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{c:?}");
    let who: String = connect(&app.db.api_url).await.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, API_ROLE);
    let entries = app.db.count("ledger_entries").await;
    assert!(entries >= 4, "the charge and the funding wrote entries");

    for role in [API_ROLE, WORKER_ROLE] {
        let db = connect(&as_role(&app.db.url, role)).await;
        for sql in FORBIDDEN {
            let err = db.batch_execute(sql).await.expect_err(&format!("{role} must not run: {sql}"));
            let db_err = err.as_db_error().unwrap_or_else(|| panic!("{role}: {sql}: {err:?}"));
            // The append-only triggers raise 42501 too: a permission error is
            // the server's own, raised before any trigger runs.
            assert_eq!(db_err.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{role}: {sql}: {db_err:?}");
            assert!(
                db_err.where_().is_none()
                    && (db_err.message().starts_with("permission denied")
                        || db_err.message().starts_with("must be owner")),
                "{role}: {sql} must fail on the grants, not on a trigger: {db_err:?}"
            );
        }
    }
    assert_eq!(app.db.count("ledger_entries").await, entries, "nothing was rewritten");

    // The superuser gets past the grants and is stopped by the trigger only:
    // the two defences are separate.
    let owner = app.db.client().await;
    let err = owner.batch_execute("UPDATE ledger_entries SET amount = amount").await.unwrap_err();
    let db_err = err.as_db_error().expect("a database error");
    assert!(db_err.message().contains("append-only") && db_err.where_().is_some(), "{db_err:?}");
    assert_eq!(app.db.count("ledger_entries").await, entries);
}

#[actix_web::test]
async fn the_service_roles_keep_the_writes_they_need() {
    let app = spawn_app().await;
    for role in [API_ROLE, WORKER_ROLE] {
        let db = connect(&as_role(&app.db.url, role)).await;
        // appending is allowed; reading back too
        db.batch_execute("BEGIN; DELETE FROM idempotency_keys WHERE false; UPDATE outbox SET published_at = published_at WHERE false; ROLLBACK")
            .await
            .unwrap_or_else(|e| panic!("{role}: {e:?}"));
        let n: i64 = db.query_one("SELECT count(*) FROM ledger_entries", &[]).await.unwrap().get(0);
        assert!(n >= 0);
    }
}
