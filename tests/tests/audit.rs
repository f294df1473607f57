//! The invariant auditor: a healthy purchase audits clean, and each way of
//! corrupting the database on purpose is named by exactly the invariants it
//! breaks (a check that cannot fail proves nothing).

use awc::http::StatusCode;
use ledger::audit::{audit, Options};
use ledger_tests::{spawn_app, TestApp};
use serde_json::json;

struct Shop {
    app: TestApp,
    key: String,
    buyer: String,
    seller: String,
    charge: String,
}

/// Accounts, stock, a paid order with a fee and a partial refund, a
/// transfer, and a released hold: every kind of row the auditor reads.
async fn shop() -> Shop {
    let app = spawn_app().await;
    let key = app.tenant("shop").await;
    let buyer = app.funded(&key, "buyer", "1000.00").await;
    let seller = app.account(&key, "seller", "USD", false).await;
    let platform = app.account(&key, "platform", "USD", false).await;
    let r = app.post("/v1/skus/mug/restocks", &key, "restock", json!({"quantity": 10})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let hold =
        app.post("/v1/reservations", &key, "o1:mug", json!({"order_id": "o1", "sku": "mug", "quantity": 2})).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    let charge = app
        .post(
            "/v1/charges",
            &key,
            "o1:1",
            json!({"order_id": "o1", "attempt": 1, "buyer_account_id": buyer, "seller_account_id": seller,
                   "amount": "25.00", "currency": "USD", "platform_fee": {"account_id": platform, "amount": "2.50"}}),
        )
        .await;
    assert_eq!(charge.status, StatusCode::CREATED, "{charge:?}");
    let charge = charge.id();
    let refund = app
        .post(
            &format!("/v1/charges/{charge}/refunds"),
            &key,
            "o1:refund",
            json!({"amount": "10.00", "reference": "o1:refund:1"}),
        )
        .await;
    assert_eq!(refund.status, StatusCode::CREATED, "{refund:?}");
    let t = app
        .post(
            "/v1/transfers",
            &key,
            "payout",
            json!({"source_account_id": seller, "destination_account_id": buyer, "amount": "1.00", "currency": "USD"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{t:?}");
    let other =
        app.post("/v1/reservations", &key, "o2:mug", json!({"order_id": "o2", "sku": "mug", "quantity": 3})).await;
    let released =
        app.send("POST", &format!("/v1/reservations/{}/release", other.id()), &key, Some("o2:rel"), None).await;
    assert_eq!(released.status, StatusCode::OK, "{released:?}");
    Shop { app, key, buyer, seller, charge }
}

impl Shop {
    /// Runs `sql` as a superuser session that bypasses triggers and foreign
    /// keys (`session_replication_role = replica`), as a bug or an operator could.
    async fn corrupt(&self, sql: &str) {
        let c = self.app.db.client().await;
        c.batch_execute(&format!("SET session_replication_role = replica; {sql}")).await.unwrap();
    }

    async fn broken(&self, quiesced: bool) -> Vec<&'static str> {
        let report = audit(&self.app.db.client().await, Options { quiesced }).await.unwrap();
        println!("{report}");
        report.broken()
    }
}

#[actix_web::test]
async fn a_healthy_purchase_audits_clean_and_every_invariant_is_checked() {
    let s = shop().await;
    let report = audit(&s.app.db.client().await, Options::default()).await.unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.checked.len(), ledger::audit::INVARIANTS.iter().filter(|i| !i.quiesced).count());
    let all = audit(&s.app.db.client().await, Options { quiesced: true }).await.unwrap();
    assert_eq!(all.checked.len(), ledger::audit::INVARIANTS.len());
    assert_eq!(s.app.get(&format!("/v1/charges/{}", s.charge), &s.key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn an_unbalanced_transaction_is_named() {
    let s = shop().await;
    // +5 to two accounts with no debit; the cached balances follow, so only the balance of the transaction is wrong
    s.corrupt(&format!(
        "INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
           SELECT '00000000-0000-0000-0000-00000000000a', tenant_id, 'transfer', 'USD' FROM accounts LIMIT 1; \
         INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) VALUES \
           ('00000000-0000-0000-0000-00000000000a', 0, '{b}', 5, 'USD'), \
           ('00000000-0000-0000-0000-00000000000a', 1, '{s}', 5, 'USD'); \
         UPDATE accounts SET balance = balance + 5 WHERE id IN ('{b}', '{s}');",
        b = s.buyer,
        s = s.seller
    ))
    .await;
    assert_eq!(s.broken(false).await, ["transaction_balanced"]);
}

#[actix_web::test]
async fn a_cached_balance_that_differs_from_its_entries_is_named() {
    let s = shop().await;
    s.corrupt(&format!("UPDATE accounts SET balance = balance + 0.01 WHERE id = '{}'", s.seller)).await;
    assert_eq!(s.broken(false).await, ["balance_equals_entries"]);
}

#[actix_web::test]
async fn a_balance_checkpoint_that_differs_from_its_entries_is_named() {
    let s = shop().await;
    // a checkpoint of the buyer's first entry, one cent off, behind the horizon
    s.corrupt(&format!(
        "UPDATE history_horizon SET settled_to = now(); \
         INSERT INTO balance_checkpoints (account_id, created_at, entry_id, balance, entries) \
           SELECT account_id, created_at, id, amount + 0.01, 1 FROM ledger_entries \
            WHERE account_id = '{b}' ORDER BY created_at, id LIMIT 1;",
        b = s.buyer
    ))
    .await;
    assert_eq!(s.broken(false).await, ["balance_checkpoints_match_entries"]);
}

#[actix_web::test]
async fn an_account_pushed_below_its_floor_is_named() {
    let s = shop().await;
    // a balanced movement the floor check never saw: the buyer's entries go below zero
    s.corrupt(&format!(
        "INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
           SELECT '00000000-0000-0000-0000-00000000000b', tenant_id, 'transfer', 'USD' FROM accounts LIMIT 1; \
         INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) VALUES \
           ('00000000-0000-0000-0000-00000000000b', 0, '{b}', -5000, 'USD'), \
           ('00000000-0000-0000-0000-00000000000b', 1, '{s}', 5000, 'USD'); \
         UPDATE accounts SET balance = balance + 5000 WHERE id = '{s}';",
        b = s.buyer,
        s = s.seller
    ))
    .await;
    // the buyer's cached balance (a CHECK keeps it >= 0) now also disagrees with its entries
    assert_eq!(s.broken(false).await, ["balance_above_floor", "balance_equals_entries"]);
}

#[actix_web::test]
async fn a_second_charge_for_the_same_order_attempt_is_named() {
    let s = shop().await;
    s.corrupt(
        "ALTER TABLE charges DROP CONSTRAINT charges_tenant_id_order_id_attempt_key; \
         DROP INDEX charges_one_live_order; \
         INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id, \
                              platform_account_id, amount, fee, currency, transaction_id) \
           SELECT gen_random_uuid(), tenant_id, order_id, attempt, buyer_account_id, seller_account_id, \
                  platform_account_id, amount, fee, currency, gen_random_uuid() FROM charges;",
    )
    .await;
    // the copy also has no money behind it, and is a second charge of its order
    assert_eq!(
        s.broken(false).await,
        ["charge_matches_ledger", "one_charge_per_order_attempt", "one_succeeded_charge_per_order"]
    );
}

#[actix_web::test]
async fn a_second_succeeded_charge_for_the_same_order_is_named() {
    let s = shop().await;
    // attempt 2 of the paid order charged for real: the buyer debited 5.00 again, in its own transaction
    s.corrupt(&format!(
        "DROP INDEX charges_one_live_order; \
         INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
           SELECT '00000000-0000-0000-0000-00000000000e', tenant_id, 'charge', 'USD' FROM accounts LIMIT 1; \
         INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) VALUES \
           ('00000000-0000-0000-0000-00000000000e', 0, '{b}', -5, 'USD'), \
           ('00000000-0000-0000-0000-00000000000e', 1, '{s}', 5, 'USD'); \
         UPDATE accounts SET balance = balance - 5 WHERE id = '{b}'; \
         UPDATE accounts SET balance = balance + 5 WHERE id = '{s}'; \
         INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id, amount, fee, \
                              currency, transaction_id) \
           SELECT gen_random_uuid(), tenant_id, order_id, 2, buyer_account_id, seller_account_id, 5, 0, currency, \
                  '00000000-0000-0000-0000-00000000000e' FROM charges;",
        b = s.buyer,
        s = s.seller,
    ))
    .await;
    assert_eq!(s.broken(false).await, ["one_succeeded_charge_per_order"]);
}

#[actix_web::test]
async fn a_second_reservation_for_the_same_order_and_sku_is_named() {
    let s = shop().await;
    s.corrupt(
        "ALTER TABLE reservations DROP CONSTRAINT reservations_tenant_id_order_id_sku_key; \
         INSERT INTO reservations (id, tenant_id, order_id, sku, quantity, status) \
           SELECT gen_random_uuid(), tenant_id, order_id, sku, quantity, 'released' FROM reservations WHERE order_id = 'o1';",
    )
    .await;
    assert_eq!(s.broken(false).await, ["one_reservation_per_order_sku"]);
}

#[actix_web::test]
async fn a_second_stock_commit_for_the_same_order_and_sku_is_named() {
    let s = shop().await;
    s.corrupt(
        "DROP INDEX stock_entries_commit_once; \
         UPDATE reservations SET status = 'committed' WHERE order_id = 'o1'; \
         UPDATE skus SET on_hand = on_hand - 4, reserved = reserved - 2; \
         INSERT INTO stock_entries (tenant_id, sku, kind, quantity, order_id) \
           SELECT tenant_id, sku, 'commit', -quantity, order_id FROM reservations WHERE order_id = 'o1'; \
         INSERT INTO stock_entries (tenant_id, sku, kind, quantity, order_id) \
           SELECT tenant_id, sku, 'commit', -quantity, order_id FROM reservations WHERE order_id = 'o1';",
    )
    .await;
    assert_eq!(s.broken(false).await, ["one_stock_commit_per_order_sku", "stock_commit_matches_reservation"]);
}

#[actix_web::test]
async fn refunded_totals_that_disagree_with_the_refunds_are_named() {
    let s = shop().await;
    s.corrupt(&format!("UPDATE charges SET refunded_amount = refunded_amount + 1 WHERE id = '{}'", s.charge)).await;
    assert_eq!(s.broken(false).await, ["refunds_within_charge"]);
}

#[actix_web::test]
async fn refunds_above_their_charge_are_named() {
    let s = shop().await;
    // a second refund row of 20.00 behind the charge's back (its money moved too, so the ledger balances)
    s.corrupt(&format!(
        "INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
           SELECT '00000000-0000-0000-0000-00000000000c', tenant_id, 'refund', 'USD' FROM accounts LIMIT 1; \
         INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) VALUES \
           ('00000000-0000-0000-0000-00000000000c', 0, (SELECT id FROM accounts WHERE reference = 'external-buyer'), -20, 'USD'), \
           ('00000000-0000-0000-0000-00000000000c', 1, '{b}', 20, 'USD'); \
         UPDATE accounts SET balance = balance - 20 WHERE reference = 'external-buyer'; \
         UPDATE accounts SET balance = balance + 20 WHERE id = '{b}'; \
         INSERT INTO refunds (id, tenant_id, charge_id, reference, amount, fee_amount, currency, transaction_id) \
           SELECT gen_random_uuid(), tenant_id, id, 'o1:refund:2', 20, 0, 'USD', '00000000-0000-0000-0000-00000000000c' FROM charges;",
        b = s.buyer,
    ))
    .await;
    assert_eq!(s.broken(false).await, ["refunds_within_charge"]);
}

#[actix_web::test]
async fn a_second_refund_under_the_same_reference_is_named() {
    let s = shop().await;
    // the refund of 10.00 (fee share 1.00) paid again under its reference, money and totals included
    s.corrupt(&format!(
        "ALTER TABLE refunds DROP CONSTRAINT refunds_tenant_id_charge_id_reference_key; \
         INSERT INTO ledger_transactions (id, tenant_id, kind, currency) \
           SELECT '00000000-0000-0000-0000-00000000000d', tenant_id, 'refund', 'USD' FROM accounts LIMIT 1; \
         INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency) VALUES \
           ('00000000-0000-0000-0000-00000000000d', 0, '{b}', 10, 'USD'), \
           ('00000000-0000-0000-0000-00000000000d', 1, '{s}', -9, 'USD'), \
           ('00000000-0000-0000-0000-00000000000d', 2, (SELECT id FROM accounts WHERE reference = 'platform'), -1, 'USD'); \
         UPDATE accounts SET balance = balance + 10 WHERE id = '{b}'; \
         UPDATE accounts SET balance = balance - 9 WHERE id = '{s}'; \
         UPDATE accounts SET balance = balance - 1 WHERE reference = 'platform'; \
         UPDATE charges SET refunded_amount = refunded_amount + 10, refunded_fee = refunded_fee + 1; \
         INSERT INTO refunds (id, tenant_id, charge_id, reference, amount, fee_amount, currency, transaction_id) \
           SELECT gen_random_uuid(), tenant_id, charge_id, reference, amount, fee_amount, currency, \
                  '00000000-0000-0000-0000-00000000000d' FROM refunds;",
        b = s.buyer,
        s = s.seller,
    ))
    .await;
    assert_eq!(s.broken(false).await, ["one_refund_per_charge_reference"]);
}

#[actix_web::test]
async fn on_hand_that_differs_from_the_stock_ledger_is_named() {
    let s = shop().await;
    s.corrupt("UPDATE skus SET on_hand = on_hand + 1").await;
    assert_eq!(s.broken(false).await, ["on_hand_equals_stock_entries"]);
}

#[actix_web::test]
async fn reserved_that_differs_from_the_holds_is_named() {
    let s = shop().await;
    s.corrupt("UPDATE skus SET reserved = reserved + 1").await;
    assert_eq!(s.broken(false).await, ["reserved_equals_holds"]);
}

#[actix_web::test]
async fn an_oversold_sku_is_named() {
    let s = shop().await;
    // a ghost order committed 9 of the 10 restocked while 2 are still held for o1
    s.corrupt(
        "INSERT INTO reservations (id, tenant_id, order_id, sku, quantity, status) \
           SELECT gen_random_uuid(), tenant_id, 'ghost', sku, 9, 'committed' FROM skus; \
         INSERT INTO stock_entries (tenant_id, sku, kind, quantity, order_id) \
           SELECT tenant_id, sku, 'commit', -9, 'ghost' FROM skus;",
    )
    .await;
    // the SKU row was not told either (a CHECK keeps reserved <= on_hand)
    assert_eq!(s.broken(false).await, ["never_oversold", "on_hand_equals_stock_entries"]);
}

#[actix_web::test]
async fn a_stored_response_that_disagrees_with_its_charge_or_transfer_is_named() {
    let s = shop().await;
    let tamper = |key: &str, field: &str, value: &str| {
        format!(
            "UPDATE idempotency_keys SET response_body = convert_to(jsonb_set(convert_from(response_body, 'UTF8')::jsonb, \
               '{{{field}}}', '{value}')::text, 'UTF8') WHERE key = '{key}';"
        )
    };
    s.corrupt(&tamper("o1:1", "amount", "\"99.00\"")).await;
    assert_eq!(s.broken(false).await, ["idempotent_response_matches_resource"]);
    let report = audit(&s.app.db.client().await, Options::default()).await.unwrap();
    assert_eq!(report.violations.len(), 1);
    assert_eq!(report.violations[0].row["key"], "o1:1");

    // the transfer's stored destination, and a stored id that names nothing
    s.corrupt(&tamper("payout", "destination_account_id", &format!("\"{}\"", s.seller))).await;
    s.corrupt(&tamper("acct:seller", "id", "\"00000000-0000-0000-0000-0000000000ff\"")).await;
    let report = audit(&s.app.db.client().await, Options::default()).await.unwrap();
    let mut keys: Vec<_> = report.violations.iter().map(|v| v.row["key"].as_str().unwrap().to_owned()).collect();
    keys.sort();
    assert_eq!(keys, ["acct:seller", "o1:1", "payout"], "{report}");
    assert_eq!(report.broken(), ["idempotent_response_matches_resource"]);
}

#[actix_web::test]
async fn the_quiescence_invariants_hold_only_once_the_pipeline_settled() {
    let s = shop().await;
    // no workers ran: the events are unpublished and the paid hold is still held
    assert!(s.broken(false).await.is_empty());
    assert_eq!(s.broken(true).await, ["outbox_published", "paid_reservations_committed"]);
    s.corrupt("UPDATE outbox SET published_at = now()").await;
    assert_eq!(s.broken(true).await, ["paid_reservations_committed"]);
    // what the inventory worker does for the charge event
    let c = s.app.db.client().await;
    c.batch_execute(
        "BEGIN; \
         UPDATE skus SET on_hand = on_hand - 2, reserved = reserved - 2; \
         INSERT INTO stock_entries (tenant_id, sku, kind, quantity, order_id) \
           SELECT tenant_id, sku, 'commit', -quantity, order_id FROM reservations WHERE order_id = 'o1'; \
         UPDATE reservations SET status = 'committed' WHERE order_id = 'o1'; COMMIT;",
    )
    .await
    .unwrap();
    assert!(s.broken(true).await.is_empty());
    // an email recorded against another order's charge
    s.corrupt(&format!(
        "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) \
           SELECT tenant_id, 'o2', '{}', 'x@example.com', 'sent' FROM accounts LIMIT 1",
        s.charge
    ))
    .await;
    assert_eq!(s.broken(true).await, ["email_at_most_once"]);
}

#[actix_web::test]
async fn a_second_automatic_send_of_an_order_email_is_named() {
    let s = shop().await;
    // The order's email, claimed with its one recorded send, then resent by
    // an operator: counted apart, clean.
    s.corrupt(&format!(
        "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) \
           SELECT tenant_id, order_id, id, 'buyer@example.com', 'sent' FROM charges WHERE id = '{}'; \
         INSERT INTO email_sends (tenant_id, order_id, sender) SELECT tenant_id, order_id, 'worker' FROM emails; \
         INSERT INTO email_sends (tenant_id, order_id, sender) SELECT tenant_id, order_id, 'resend' FROM emails;",
        s.charge
    ))
    .await;
    assert!(s.broken(false).await.is_empty());
    let report = audit(&s.app.db.client().await, Options::default()).await.unwrap();
    assert_eq!(report.emails_resent, 1);
    // Reconciliation sending it again on its own, as it did before sends
    // were recorded: a second automatic send.
    s.corrupt(
        "DROP INDEX email_sends_automatic_once; \
         INSERT INTO email_sends (tenant_id, order_id, sender) SELECT tenant_id, order_id, 'reconcile' FROM emails;",
    )
    .await;
    assert_eq!(s.broken(false).await, ["email_send_at_most_once"]);
    let report = audit(&s.app.db.client().await, Options::default()).await.unwrap();
    assert_eq!(report.violations[0].row["automatic_sends"], 2, "{report}");
    assert_eq!(report.violations[0].row["senders"], json!(["worker", "reconcile"]), "{report}");
}

/// The real `ledger-api` binary, built by `make test` before the tests.
fn api_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ledger-api");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` first", bin.display());
    bin
}

#[actix_web::test]
async fn the_audit_command_prints_each_violation_and_exits_non_zero() {
    let s = shop().await;
    let run = || {
        std::process::Command::new(api_binary())
            .arg("audit")
            .env("DATABASE_URL", &s.app.db.url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let clean = run();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    s.corrupt("UPDATE skus SET on_hand = on_hand + 1").await;
    let dirty = run();
    assert_eq!(dirty.status.code(), Some(1));
    let out = String::from_utf8_lossy(&dirty.stdout);
    assert!(out.contains("VIOLATION on_hand_equals_stock_entries: "), "{out}");
    assert!(String::from_utf8_lossy(&dirty.stderr).contains("on_hand_equals_stock_entries"));
}

#[actix_web::test]
async fn a_charge_paid_by_wallet_and_card_at_once_is_named() {
    let s = shop().await;
    // a card row for a wallet charge: two ways to pay, and a "card" success with no provider payment
    s.corrupt(
        "INSERT INTO card_charges (charge_id, payment_method, provider_key) \
           SELECT id, 'pm_card_visa', 'pay_corrupt' FROM charges;",
    )
    .await;
    assert_eq!(s.broken(false).await, ["card_charge_has_one_provider_payment"]);
}

#[actix_web::test]
async fn a_card_charge_left_processing_past_its_lease_is_named_once_quiesced() {
    let s = shop().await;
    s.corrupt(
        "INSERT INTO charges (id, tenant_id, order_id, attempt, seller_account_id, amount, fee, currency, status) \
           SELECT '00000000-0000-0000-0000-0000000000c1', tenant_id, 'stuck', 1, seller_account_id, 5, 0, currency, \
                  'processing' FROM charges LIMIT 1; \
         INSERT INTO card_charges (charge_id, payment_method, provider_key, lease_until) \
           VALUES ('00000000-0000-0000-0000-0000000000c1', 'pm_card_visa', 'pay_stuck', now() - interval '1 hour');",
    )
    .await;
    // in flight is legal at any instant; once quiesced, the completer should have finished it
    assert!(s.broken(false).await.is_empty());
    assert!(s.broken(true).await.contains(&"card_charge_not_left_processing"));
}

#[actix_web::test]
async fn a_failed_refund_its_reversal_did_not_undo_is_named() {
    let s = shop().await;
    // the refund marked failed, "undone" by a transaction that is not its reversal
    // (the charge's own), the charge's totals made to agree with it
    s.corrupt(
        "UPDATE refunds r SET status = 'failed', reversal_transaction_id = c.transaction_id \
           FROM charges c WHERE c.id = r.charge_id; \
         UPDATE charges SET refunded_amount = 0, refunded_fee = 0;",
    )
    .await;
    assert_eq!(s.broken(false).await, ["failed_refund_reversed"]);
}

#[actix_web::test]
async fn a_card_refund_left_pending_past_its_lease_is_named_once_quiesced() {
    let s = shop().await;
    s.corrupt(
        "UPDATE refunds SET status = 'pending'; \
         INSERT INTO card_refunds (refund_id, provider_key, lease_until) \
           SELECT id, 'ref_stuck', now() - interval '1 hour' FROM refunds;",
    )
    .await;
    // in flight is legal at any instant; once quiesced, the completer should have finished it
    assert!(s.broken(false).await.is_empty());
    assert!(s.broken(true).await.contains(&"card_refund_not_left_pending"));
}
