//! Each list's statement for a selective filter, planned as the pool plans
//! every statement (`plan_cache_mode = force_generic_plan`: once, without
//! its values), reads its page from the filter's index, so a page costs an
//! index probe and the page, not a walk of the tenant's whole list. The
//! statements are the lists' own (`list_sql`); the tables hold a few
//! thousand rows of one tenant, enough that a plan that does not know its
//! filter reads the tenant's `(tenant_id, id)` range instead.

use ledger::charges::ChargeFilter;
use ledger::feed::EventFilter;
use ledger::inventory::ReservationFilter;
use ledger::pagination::Cursor;
use ledger::transfers::TransferFilter;
use ledger_tests::TestDb;
use uuid::Uuid;

const ROWS: i64 = 4000;

/// `tenant`'s rows, and a few of eleven other tenants', written in turns
/// as the tenants' requests would write them, with ids in that order as
/// UUIDv7s are: card charges with distinct orders, in three statuses, of
/// twenty sellers; reservations of distinct SKUs, in three statuses;
/// transfers between a hundred accounts; events of eight types.
async fn seed(db: &tokio_postgres::Client, tenant: Uuid) {
    db.batch_execute(&format!(
        "CREATE TEMPORARY TABLE sizes AS \
           SELECT '{tenant}'::uuid AS t, {ROWS} AS n UNION ALL SELECT gen_random_uuid(), 20 FROM generate_series(1, 11); \
         CREATE TEMPORARY TABLE rows AS \
           SELECT t, i, lpad(to_hex(row_number() OVER (ORDER BY i, t)), 32, '0')::uuid AS id \
             FROM sizes, generate_series(1, n) i ORDER BY i, t; \
         INSERT INTO tenants (id, name) SELECT t, 'tenant-' || t FROM sizes; \
         INSERT INTO accounts (id, tenant_id, reference, currency, allow_negative) \
           SELECT gen_random_uuid(), t, 'account-' || i, 'USD', true FROM sizes, generate_series(1, 100) i; \
         INSERT INTO charges (id, tenant_id, order_id, attempt, seller_account_id, amount, currency, status) \
           SELECT id, t, 'order-' || i, 1, \
                  (SELECT a.id FROM accounts a WHERE a.tenant_id = t AND a.reference = 'account-' || (1 + i % 20)), \
                  10, 'USD', (ARRAY['processing', 'requires_action', 'failed', 'failed'])[1 + i % 4] \
             FROM rows ORDER BY 1; \
         INSERT INTO card_charges (charge_id, payment_method, provider_key) \
           SELECT id, 'pm_card_visa', 'key-' || id FROM charges ORDER BY id; \
         INSERT INTO skus (tenant_id, sku, on_hand, reserved) SELECT t, 'sku-' || i, 1, 1 FROM rows ORDER BY 1; \
         INSERT INTO reservations (id, tenant_id, order_id, sku, quantity, status) \
           SELECT id, t, 'order-' || i, 'sku-' || i, 1, (ARRAY['held', 'released', 'committed'])[1 + i % 3] \
             FROM rows ORDER BY 1; \
         INSERT INTO ledger_transactions (id, tenant_id, kind, currency) SELECT id, t, 'transfer', 'USD' FROM rows ORDER BY 1; \
         INSERT INTO transfers (id, tenant_id, source_account_id, destination_account_id, amount, currency, transaction_id) \
           SELECT r.id, t, a.accounts[1 + i % 100], a.accounts[1 + (i + 1 + i / 100) % 100], 1, 'USD', r.id \
             FROM rows r, LATERAL (SELECT array_agg(id ORDER BY reference) AS accounts FROM accounts WHERE tenant_id = t) a \
            ORDER BY 1; \
         INSERT INTO outbox (message_id, tenant_id, event_type, payload) \
           SELECT id, t, 'event.type_' || (i % 8), '{{}}' FROM rows ORDER BY 1; \
         ANALYZE"
    ))
    .await
    .unwrap();
}

/// The plan of `sql` as the pool's sessions plan it, generic, run with `args`.
async fn generic_plan(db: &tokio_postgres::Client, sql: &str, args: &[String]) -> String {
    db.batch_execute(&format!("SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; PREPARE page AS {sql}"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = db.query(&format!("EXPLAIN EXECUTE page({})", args.join(", ")), &[]).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

fn quoted(value: impl std::fmt::Display) -> String {
    format!("'{value}'")
}

/// The three ways a page is read: the newest, and older or newer than an
/// item (the cursor's parameter comes after the filters').
fn cursors(id: impl std::fmt::Display) -> [(Cursor, Option<String>); 3] {
    let item = Uuid::now_v7();
    [(Cursor::Newest, None), (Cursor::After(item), Some(quoted(&id))), (Cursor::Before(item), Some(quoted(&id)))]
}

/// `sql` run with `params`, then the cursor's, then the limit, reads from
/// every one of `indexes`, and from the cursor on when there is one.
async fn assert_reads(
    db: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    params: &[String],
    cursor: Option<String>,
    indexes: &[&str],
) {
    let mut args = params.to_vec();
    let with_cursor = cursor.is_some();
    args.extend(cursor);
    args.push("11".into());
    let plan = generic_plan(db, sql, &args).await;
    let lines: Vec<&str> = plan.lines().collect();
    for index in indexes {
        let at = lines.iter().position(|l| l.contains(&format!("using {index} on")));
        let at = at.unwrap_or_else(|| panic!("{what} reads {index}:\n{sql}\n{plan}"));
        let cond = lines.get(at + 1).copied().unwrap_or_default();
        assert!(cond.contains("Index Cond"), "{what} reads {index} by its columns:\n{plan}");
        if with_cursor {
            assert!(
                cond.contains("id < $") || cond.contains("id > $"),
                "{what} starts at the cursor in {index}:\n{plan}"
            );
        }
    }
    assert!(!plan.contains("Sort  ("), "{what} reads its page in the index's order:\n{plan}");
}

#[actix_web::test]
async fn each_lists_generic_plan_reads_its_filters_index() {
    let test_db = TestDb::new().await;
    let db = test_db.client().await;
    let tenant = Uuid::now_v7();
    seed(&db, tenant).await;
    let t = quoted(tenant);
    let seller: Uuid = db
        .query_one("SELECT id FROM accounts WHERE tenant_id = $1 AND reference = 'account-7'", &[&tenant])
        .await
        .unwrap()
        .get(0);

    for (cursor, at) in cursors(Uuid::now_v7()) {
        let order = ChargeFilter { order_id: Some("order-17"), ..Default::default() };
        let sql = ledger::charges::list_sql(&order, cursor);
        let params = [t.clone(), quoted("order-17")];
        assert_reads(&db, "charges by order", &sql, &params, at.clone(), &["charges_tenant_id_order_id_id"]).await;

        let by_seller = ChargeFilter { seller_account_id: Some(seller), ..Default::default() };
        let sql = ledger::charges::list_sql(&by_seller, cursor);
        let params = [t.clone(), quoted(seller)];
        assert_reads(&db, "charges by seller", &sql, &params, at.clone(), &["charges_tenant_id_seller_account_id_id"])
            .await;

        let sku = ReservationFilter { sku: Some("sku-17"), ..Default::default() };
        let sql = ledger::inventory::list_sql(&sku, cursor);
        let params = [t.clone(), quoted("sku-17")];
        assert_reads(&db, "reservations by sku", &sql, &params, at.clone(), &["reservations_tenant_id_sku_id"]).await;

        let account = TransferFilter { account_id: Some(seller), ..Default::default() };
        let sql = ledger::transfers::list_sql(&account, cursor);
        let params = [t.clone(), quoted(seller)];
        let both = ["transfers_tenant_id_source_account_id_id", "transfers_tenant_id_destination_account_id_id"];
        assert_reads(&db, "transfers by account", &sql, &params, at.clone(), &both).await;
    }

    // the feed's cursor is the outbox row's `id`
    for (cursor, at) in cursors(ROWS / 2) {
        let at = at.map(|id| id.trim_matches('\'').to_owned());
        let typed = EventFilter { event_type: Some("event.type_3"), ..Default::default() };
        let sql = ledger::feed::list_sql(&typed, cursor);
        let params = [t.clone(), quoted("event.type_3")];
        assert_reads(&db, "events by type", &sql, &params, at, &["outbox_tenant_id_event_type_id"]).await;
    }
}

/// The first column of `sql`'s rows, sent unprepared (the simple protocol)
/// so that it adds no prepared statement of its own to the session.
async fn first_column(client: &deadpool_postgres::Client, sql: &str) -> Vec<String> {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// The name of the connection's one prepared statement of `sql`, once it
/// is prepared from the connection's cache.
async fn prepared(client: &deadpool_postgres::Client, sql: &str) -> String {
    client.prepare_cached(sql).await.unwrap();
    let names =
        first_column(client, &format!("SELECT name FROM pg_prepared_statements WHERE statement = '{sql}'")).await;
    assert_eq!(names.len(), 1, "one prepared statement of {sql}: {names:?}");
    names.into_iter().next().unwrap()
}

/// A statement prepared while its tables were empty is planned for tables
/// of a few pages, where any index on its columns looks as good as another:
/// a charge looked up by id and tenant read the tenant's seller index,
/// every charge of the tenant, once they were thousands. The pool prepares
/// its statements again as a connection's uses double
/// (`ledger::db::replan_due`), so the plan follows the tables' growth
/// though nothing analyzes them; in between, the connection keeps its
/// prepared statement.
#[actix_web::test]
async fn a_pooled_connection_plans_its_statements_again_as_its_tables_grow() {
    let test_db = TestDb::new().await;
    let opts = ledger::db::PoolOptions { max_size: 1, ..Default::default() };
    let pool = ledger::db::pool(&test_db.url, &opts).unwrap();
    let sql = "SELECT c.id, c.status FROM charges c WHERE c.id = $1 AND c.tenant_id = $2";
    let plan = async |client: &deadpool_postgres::Client, name: &str| {
        let explain = format!("EXPLAIN EXECUTE {name}('{}', '{}')", Uuid::now_v7(), Uuid::now_v7());
        first_column(client, &explain).await.join("\n")
    };
    let first = pool.get().await.unwrap();
    let name = prepared(&first, sql).await;
    let empty = plan(&first, &name).await;
    assert!(empty.contains("charges_tenant_id_seller_account_id_id"), "planned for empty tables:\n{empty}");
    let tenant = Uuid::now_v7();
    first
        .batch_execute(&format!(
            "INSERT INTO tenants (id, name) VALUES ('{tenant}', 'plans'); \
             INSERT INTO accounts (id, tenant_id, reference, currency, allow_negative) \
               VALUES ('{tenant}', '{tenant}', 'seller', 'USD', true); \
             INSERT INTO charges (id, tenant_id, order_id, attempt, seller_account_id, amount, currency, status) \
               SELECT gen_random_uuid(), '{tenant}', 'order-' || i, 1, '{tenant}', 10, 'USD', 'processing' \
                 FROM generate_series(1, 20000) i"
        ))
        .await
        .unwrap();
    assert_eq!(plan(&first, &name).await, empty, "kept while the connection is out");
    drop(first);

    // the first checkout after the one that made the connection
    let second = pool.get().await.unwrap();
    let again = prepared(&second, sql).await;
    assert_ne!(again, name, "prepared again");
    let grown = plan(&second, &again).await;
    assert!(
        grown.contains("using charges_tenant_id_id") || grown.contains("using charges_pkey"),
        "planned for the table as it is now, by the id:\n{grown}"
    );
    drop(second);
    // uses 2 (again due), then 3: kept
    let third = pool.get().await.unwrap();
    let name3 = prepared(&third, sql).await;
    drop(third);
    let fourth = pool.get().await.unwrap();
    assert_eq!(prepared(&fourth, sql).await, name3, "not prepared again at the third use");
}

#[test]
fn statements_are_prepared_again_at_each_doubling_of_uses_then_every_1024() {
    let due: Vec<usize> = (1..=5000).filter(|u| ledger::db::replan_due(*u)).collect();
    assert_eq!(due, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3072, 4096]);
}
