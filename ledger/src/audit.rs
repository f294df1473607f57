//! The invariant auditor: the product's promises ("no double charge, no
//! oversell, nothing paid and lost") checked against the database itself.
//!
//! Each invariant is one SQL query that returns the offending rows, one JSON
//! object per row, kept beside its stable name. An empty result means the
//! invariant holds. The quiescence invariants only hold once the pipeline has
//! settled (every event relayed and consumed) and run only when asked.
//! `docs/invariants.md` documents every one of them.

use std::fmt;

use tokio_postgres::GenericClient;

use crate::Result;

/// One invariant: its stable name, what it promises, and the query that
/// returns the rows breaking it (one `jsonb` column per row).
pub struct Invariant {
    pub name: &'static str,
    pub promise: &'static str,
    /// Holds only after quiescence (every event published and consumed).
    pub quiesced: bool,
    sql: &'static str,
}

pub const INVARIANTS: &[Invariant] = &[
    // ---- money -----------------------------------------------------------
    Invariant {
        name: "transaction_balanced",
        promise: "every ledger transaction sums to zero per currency",
        quiesced: false,
        sql: "SELECT jsonb_build_object('transaction_id', transaction_id, 'currency', currency, 'sum', sum(amount)) \
                FROM ledger_entries GROUP BY transaction_id, currency HAVING sum(amount) <> 0",
    },
    Invariant {
        name: "transaction_has_entries",
        promise: "every ledger transaction has at least two entries, all in its currency",
        quiesced: false,
        sql: "SELECT jsonb_build_object('transaction_id', t.id, 'currency', t.currency, 'entries', count(e.id), \
                     'other_currencies', count(e.id) FILTER (WHERE e.currency <> t.currency)) \
                FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id \
               GROUP BY t.id, t.currency \
              HAVING count(e.id) < 2 OR count(e.id) FILTER (WHERE e.currency <> t.currency) > 0",
    },
    Invariant {
        name: "balance_equals_entries",
        promise: "every account's cached balance (its row's part and its slots) equals the sum of its entries",
        quiesced: false,
        sql: "SELECT jsonb_build_object('account_id', a.id, 'balance', a.balance + coalesce(k.sum, 0), \
                     'row_balance', a.balance, 'slots_sum', coalesce(k.sum, 0), 'entries_sum', coalesce(s.sum, 0)) \
                FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) AS sum FROM ledger_entries GROUP BY account_id) s \
                  ON s.account_id = a.id \
                LEFT JOIN (SELECT account_id, sum(balance) AS sum FROM account_slots GROUP BY account_id) k \
                  ON k.account_id = a.id \
               WHERE a.balance + coalesce(k.sum, 0) <> coalesce(s.sum, 0)",
    },
    Invariant {
        name: "balance_checkpoints_match_entries",
        promise: "every balance checkpoint, and every account's settled state (its count and balance through its \
                  last entry at or before the history horizon), equals the count and the sum of the account's \
                  entries up to it in the account's order (created_at, then id) and lies at or before the \
                  horizon; every account with an entry at or before the horizon has its settled state, at its \
                  last such entry",
        quiesced: false,
        sql: "WITH h AS (SELECT settled_to FROM history_horizon) \
              SELECT jsonb_build_object('row', r.kind, 'account_id', r.account_id, 'entry_id', r.entry_id, \
                     'balance', r.balance, 'entries', r.entries, 'entries_sum', s.sum, 'entries_count', s.count, \
                     'later_settled_entries', r.later) \
                FROM (SELECT 'checkpoint' AS kind, c.account_id, c.created_at, c.entry_id, c.balance, c.entries, \
                             false AS later FROM balance_checkpoints c \
                      UNION ALL \
                      SELECT 'settled', c.account_id, c.created_at, c.entry_id, c.balance, c.entries, \
                             EXISTS (SELECT 1 FROM ledger_entries e, h WHERE e.account_id = c.account_id \
                                        AND (e.created_at, e.id) > (c.created_at, c.entry_id) \
                                        AND e.created_at <= h.settled_to) \
                        FROM balance_settled c) r \
                CROSS JOIN LATERAL (SELECT coalesce(sum(e.amount), 0) AS sum, count(*) AS count FROM ledger_entries e \
                                     WHERE e.account_id = r.account_id \
                                       AND (e.created_at, e.id) <= (r.created_at, r.entry_id)) s \
               WHERE r.balance <> s.sum OR r.entries <> s.count OR r.later \
                  OR r.created_at > (SELECT settled_to FROM h) \
              UNION ALL \
              SELECT jsonb_build_object('row', 'settled', 'account_id', e.account_id, 'missing', true) \
                FROM (SELECT DISTINCT account_id FROM ledger_entries, h WHERE created_at <= h.settled_to) e \
               WHERE NOT EXISTS (SELECT 1 FROM balance_settled s WHERE s.account_id = e.account_id)",
    },
    Invariant {
        name: "balance_above_floor",
        promise: "no account that may not go negative is below zero, by its balance (its row's part, its slots, \
                  or their sum) or by its entries",
        quiesced: false,
        sql: "SELECT jsonb_build_object('account_id', a.id, 'balance', a.balance + coalesce(k.sum, 0), \
                     'row_balance', a.balance, 'lowest_slot', k.lowest, 'entries_sum', coalesce(s.sum, 0)) \
                FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) AS sum FROM ledger_entries GROUP BY account_id) s \
                  ON s.account_id = a.id \
                LEFT JOIN (SELECT account_id, sum(balance) AS sum, min(balance) AS lowest FROM account_slots \
                            GROUP BY account_id) k ON k.account_id = a.id \
               WHERE NOT a.allow_negative \
                 AND (a.balance < 0 OR a.balance + coalesce(k.sum, 0) < 0 OR k.lowest < 0 OR coalesce(s.sum, 0) < 0)",
    },
    Invariant {
        name: "charge_matches_ledger",
        promise: "every succeeded charge debited its buyer (or, paid by card, its provider clearing account; \
                  captured, the holds account) exactly its amount in its own ledger transaction, and a charge that \
                  did not succeed has no such transaction",
        quiesced: false,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'status', c.status, 'amount', c.amount, \
                     'debit', -coalesce(sum(e.amount), 0), 'transaction_id', c.transaction_id) \
                FROM charges c LEFT JOIN card_charges k ON k.charge_id = c.id \
                LEFT JOIN charge_authorizations h ON h.charge_id = c.id \
                LEFT JOIN ledger_entries e \
                  ON e.transaction_id = c.transaction_id \
                 AND e.account_id = coalesce(h.hold_account_id, c.buyer_account_id, k.clearing_account_id) \
               GROUP BY c.id, c.amount, c.status, c.transaction_id \
              HAVING (c.status = 'succeeded' AND -coalesce(sum(e.amount), 0) <> c.amount) \
                  OR (c.status <> 'succeeded' AND c.transaction_id IS NOT NULL)",
    },
    Invariant {
        name: "card_charge_has_one_provider_payment",
        promise: "every charge is paid by exactly one of a wallet or a card; every succeeded card charge has one \
                  provider payment id, its clearing account and one ledger transaction, and no provider payment \
                  pays two charges",
        quiesced: false,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'status', c.status, 'buyer_account_id', c.buyer_account_id, \
                     'card', k.charge_id IS NOT NULL, 'provider_payment_id', k.provider_payment_id, \
                     'clearing_account_id', k.clearing_account_id, 'transaction_id', c.transaction_id, \
                     'charges_with_this_payment', (SELECT count(*) FROM card_charges o \
                                                    WHERE o.provider_payment_id = k.provider_payment_id)) \
                FROM charges c LEFT JOIN card_charges k ON k.charge_id = c.id \
               WHERE (c.buyer_account_id IS NULL) = (k.charge_id IS NULL) \
                  OR (k.charge_id IS NOT NULL AND c.status = 'succeeded' \
                      AND (k.provider_payment_id IS NULL OR k.clearing_account_id IS NULL OR c.transaction_id IS NULL)) \
                  OR (k.provider_payment_id IS NOT NULL AND (SELECT count(*) FROM card_charges o \
                                                             WHERE o.provider_payment_id = k.provider_payment_id) > 1)",
    },
    Invariant {
        name: "refund_matches_ledger",
        promise: "every refund credited its charge's buyer exactly its amount in its own ledger transaction",
        quiesced: false,
        sql: "SELECT jsonb_build_object('refund_id', r.id, 'amount', r.amount, 'buyer_credit', coalesce(sum(e.amount), 0)) \
                FROM refunds r JOIN charges c ON c.id = r.charge_id LEFT JOIN card_charges k ON k.charge_id = c.id \
                LEFT JOIN ledger_entries e ON e.transaction_id = r.transaction_id \
                      AND e.account_id = coalesce(c.buyer_account_id, k.clearing_account_id) \
               GROUP BY r.id, r.amount HAVING coalesce(sum(e.amount), 0) <> r.amount",
    },
    Invariant {
        name: "failed_refund_reversed",
        promise: "every failed refund was undone once: its reversal debited the buyer's side exactly its amount, \
                  and only a card refund fails",
        quiesced: false,
        sql: "SELECT jsonb_build_object('refund_id', r.id, 'amount', r.amount, 'reversal', r.reversal_transaction_id, \
                     'buyer_debit', -coalesce(sum(e.amount), 0), 'card', q.refund_id IS NOT NULL) \
                FROM refunds r JOIN charges c ON c.id = r.charge_id LEFT JOIN card_charges k ON k.charge_id = c.id \
                LEFT JOIN card_refunds q ON q.refund_id = r.id \
                LEFT JOIN ledger_entries e ON e.transaction_id = r.reversal_transaction_id \
                      AND e.account_id = coalesce(c.buyer_account_id, k.clearing_account_id) \
               WHERE r.status = 'failed' \
               GROUP BY r.id, r.amount, q.refund_id HAVING -coalesce(sum(e.amount), 0) <> r.amount OR q.refund_id IS NULL",
    },
    Invariant {
        name: "transfer_matches_ledger",
        promise: "every transfer moved exactly its amount from its source to its destination",
        quiesced: false,
        sql: "SELECT jsonb_build_object('transfer_id', t.id, 'amount', t.amount, \
                     'source_debit', -coalesce(sum(e.amount) FILTER (WHERE e.account_id = t.source_account_id), 0), \
                     'destination_credit', coalesce(sum(e.amount) FILTER (WHERE e.account_id = t.destination_account_id), 0)) \
                FROM transfers t LEFT JOIN ledger_entries e ON e.transaction_id = t.transaction_id \
               GROUP BY t.id, t.amount \
              HAVING -coalesce(sum(e.amount) FILTER (WHERE e.account_id = t.source_account_id), 0) <> t.amount \
                  OR coalesce(sum(e.amount) FILTER (WHERE e.account_id = t.destination_account_id), 0) <> t.amount",
    },
    // ---- authorizations ------------------------------------------------------
    Invariant {
        name: "authorization_matches_ledger",
        promise: "every wallet authorization held exactly its amount from its buyer on its holds account, and ended \
                  at most once: open, nothing more moved; voided, all of it back to the buyer; captured, at most \
                  what was held taken from the holds account and the rest back to the buyer. A card authorization \
                  (held by the card's issuer) moved nothing until its capture took at most what was held",
        quiesced: false,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'status', c.status, 'held', h.amount, 'amount', c.amount, \
                     'held_from_buyer', x.held_from_buyer, 'held_on_holds', x.held_on_holds, 'released', x.released, \
                     'captured_from_holds', x.captured_from_holds, 'captured_at', h.captured_at, \
                     'voided_at', h.voided_at, 'transaction_id', c.transaction_id) \
                FROM charge_authorizations h JOIN charges c ON c.id = h.charge_id \
                CROSS JOIN LATERAL ( \
                     SELECT coalesce(sum(e.amount) FILTER (WHERE e.transaction_id = h.hold_transaction_id \
                                                             AND e.account_id = c.buyer_account_id), 0) AS held_from_buyer, \
                            coalesce(sum(e.amount) FILTER (WHERE e.transaction_id = h.hold_transaction_id \
                                                             AND e.account_id = h.hold_account_id), 0) AS held_on_holds, \
                            coalesce(sum(e.amount) FILTER (WHERE e.transaction_id = h.release_transaction_id \
                                                             AND e.account_id = c.buyer_account_id), 0) AS released, \
                            coalesce(sum(e.amount) FILTER (WHERE e.transaction_id = c.transaction_id \
                                                             AND e.account_id = h.hold_account_id), 0) AS captured_from_holds \
                       FROM ledger_entries e \
                      WHERE e.transaction_id IN (h.hold_transaction_id, h.release_transaction_id, c.transaction_id)) x \
               WHERE (h.hold_account_id IS NOT NULL AND ( \
                      x.held_from_buyer <> -h.amount OR x.held_on_holds <> h.amount \
                   OR (c.status = 'authorized' AND (c.transaction_id IS NOT NULL OR h.release_transaction_id IS NOT NULL \
                       OR h.captured_at IS NOT NULL OR h.voided_at IS NOT NULL OR c.amount <> h.amount)) \
                   OR (c.status = 'voided' AND (c.transaction_id IS NOT NULL OR h.captured_at IS NOT NULL \
                       OR x.released <> h.amount)) \
                   OR (c.status = 'succeeded' AND (h.captured_at IS NULL OR h.voided_at IS NOT NULL \
                       OR c.amount > h.amount OR x.captured_from_holds <> -c.amount \
                       OR x.released <> h.amount - c.amount)) \
                   OR c.status NOT IN ('authorized', 'voided', 'succeeded'))) \
                  OR (h.hold_account_id IS NULL AND ( \
                      c.buyer_account_id IS NOT NULL OR h.release_transaction_id IS NOT NULL \
                   OR (c.status IN ('authorized', 'capturing', 'voiding') AND (c.transaction_id IS NOT NULL \
                       OR h.captured_at IS NOT NULL OR h.voided_at IS NOT NULL OR c.amount > h.amount)) \
                   OR (c.status = 'voided' AND (c.transaction_id IS NOT NULL OR h.captured_at IS NOT NULL \
                       OR c.amount <> h.amount)) \
                   OR (c.status = 'succeeded' AND (h.captured_at IS NULL OR h.voided_at IS NOT NULL \
                       OR c.amount > h.amount)) \
                   OR c.status NOT IN ('authorized', 'capturing', 'voiding', 'voided', 'succeeded')))",
    },
    Invariant {
        name: "holds_equal_open_authorizations",
        promise: "every holds account's balance (its entries) is the sum of its open authorizations: no hold \
                  counted twice, none lost",
        quiesced: false,
        sql: "SELECT jsonb_build_object('account_id', a.id, 'entries_sum', coalesce(s.sum, 0), \
                     'open_authorizations', coalesce(o.sum, 0)) \
                FROM accounts a \
                LEFT JOIN (SELECT account_id, sum(amount) AS sum FROM ledger_entries GROUP BY account_id) s \
                  ON s.account_id = a.id \
                LEFT JOIN (SELECT h.hold_account_id, sum(h.amount) AS sum FROM charge_authorizations h \
                             JOIN charges c ON c.id = h.charge_id WHERE c.status = 'authorized' \
                            GROUP BY h.hold_account_id) o ON o.hold_account_id = a.id \
               WHERE a.id IN (SELECT hold_account_id FROM charge_authorizations) \
                 AND coalesce(s.sum, 0) <> coalesce(o.sum, 0)",
    },
    Invariant {
        name: "no_open_authorization_past_expiry",
        promise: "once the expirer has run, no authorization is open more than 10 seconds past its deadline",
        quiesced: true,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'expires_at', h.expires_at, 'amount', h.amount) \
                FROM charge_authorizations h JOIN charges c ON c.id = h.charge_id \
               WHERE c.status = 'authorized' AND h.expires_at < now() - interval '10 seconds'",
    },
    // ---- one effect per natural key ----------------------------------------
    Invariant {
        name: "one_charge_per_order_attempt",
        promise: "at most one charge per (tenant, order, attempt)",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'order_id', order_id, 'attempt', attempt, \
                     'charge_ids', jsonb_agg(id ORDER BY id)) \
                FROM charges GROUP BY tenant_id, order_id, attempt HAVING count(*) > 1",
    },
    Invariant {
        name: "one_succeeded_charge_per_order",
        promise: "at most one succeeded (or still processing, or authorized) charge per (tenant, order), whatever the \
                  attempts",
        quiesced: false,
        // a processing card charge may still succeed: it counts as paid
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'order_id', order_id, \
                     'charge_ids', jsonb_agg(id ORDER BY attempt), 'attempts', jsonb_agg(attempt ORDER BY attempt), \
                     'statuses', jsonb_agg(status ORDER BY attempt), 'amounts', jsonb_agg(amount ORDER BY attempt)) \
                FROM charges WHERE status NOT IN ('failed', 'voided') GROUP BY tenant_id, order_id HAVING count(*) > 1",
    },
    Invariant {
        name: "one_reservation_per_order_sku",
        promise: "at most one reservation per (tenant, order, SKU)",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'order_id', order_id, 'sku', sku, \
                     'reservation_ids', jsonb_agg(id ORDER BY id)) \
                FROM reservations GROUP BY tenant_id, order_id, sku HAVING count(*) > 1",
    },
    Invariant {
        name: "one_stock_commit_per_order_sku",
        promise: "at most one stock commit per (tenant, order, SKU)",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'order_id', order_id, 'sku', sku, \
                     'stock_entry_ids', jsonb_agg(id ORDER BY id)) \
                FROM stock_entries WHERE kind = 'commit' GROUP BY tenant_id, order_id, sku HAVING count(*) > 1",
    },
    Invariant {
        name: "one_refund_per_charge_reference",
        promise: "at most one refund per (tenant, charge, reference)",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'charge_id', charge_id, 'reference', reference, \
                     'refund_ids', jsonb_agg(id ORDER BY id), 'amounts', jsonb_agg(amount ORDER BY id)) \
                FROM refunds GROUP BY tenant_id, charge_id, reference HAVING count(*) > 1",
    },
    Invariant {
        name: "refunds_within_charge",
        promise: "the refunds of a charge that did not fail never sum above it, and its refunded totals equal them",
        quiesced: false,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'amount', c.amount, 'fee', c.fee, \
                     'refunded_amount', c.refunded_amount, 'refunded_fee', c.refunded_fee, \
                     'refunds_sum', coalesce(s.amount, 0), 'refunds_fee_sum', coalesce(s.fee, 0)) \
                FROM charges c LEFT JOIN (SELECT charge_id, sum(amount) AS amount, sum(fee_amount) AS fee \
                                            FROM refunds WHERE status <> 'failed' GROUP BY charge_id) s \
                       ON s.charge_id = c.id \
               WHERE coalesce(s.amount, 0) > c.amount OR coalesce(s.fee, 0) > c.fee \
                  OR c.refunded_amount <> coalesce(s.amount, 0) OR c.refunded_fee <> coalesce(s.fee, 0)",
    },
    // ---- stock ---------------------------------------------------------------
    Invariant {
        name: "on_hand_equals_stock_entries",
        promise: "every SKU's on hand equals its restocks minus its commits",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', k.tenant_id, 'sku', k.sku, 'on_hand', k.on_hand, \
                     'entries_sum', coalesce(s.sum, 0)) \
                FROM skus k LEFT JOIN (SELECT tenant_id, sku, sum(quantity) AS sum FROM stock_entries GROUP BY tenant_id, sku) s \
                  ON s.tenant_id = k.tenant_id AND s.sku = k.sku \
               WHERE k.on_hand <> coalesce(s.sum, 0)",
    },
    Invariant {
        name: "reserved_equals_holds",
        promise: "every SKU's reserved equals the quantity of its held reservations",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', k.tenant_id, 'sku', k.sku, 'reserved', k.reserved, \
                     'held', coalesce(h.sum, 0)) \
                FROM skus k LEFT JOIN (SELECT tenant_id, sku, sum(quantity) AS sum FROM reservations \
                                        WHERE status = 'held' GROUP BY tenant_id, sku) h \
                  ON h.tenant_id = k.tenant_id AND h.sku = k.sku \
               WHERE k.reserved <> coalesce(h.sum, 0)",
    },
    Invariant {
        name: "never_oversold",
        promise: "held plus committed never exceeds what was restocked, and nothing is negative",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', k.tenant_id, 'sku', k.sku, 'on_hand', k.on_hand, 'reserved', k.reserved, \
                     'restocked', coalesce(s.restocked, 0), 'committed', coalesce(s.committed, 0), 'held', coalesce(h.sum, 0)) \
                FROM skus k \
                LEFT JOIN (SELECT tenant_id, sku, sum(quantity) FILTER (WHERE kind = 'restock') AS restocked, \
                                  -sum(quantity) FILTER (WHERE kind = 'commit') AS committed \
                             FROM stock_entries GROUP BY tenant_id, sku) s ON s.tenant_id = k.tenant_id AND s.sku = k.sku \
                LEFT JOIN (SELECT tenant_id, sku, sum(quantity) AS sum FROM reservations \
                            WHERE status = 'held' GROUP BY tenant_id, sku) h ON h.tenant_id = k.tenant_id AND h.sku = k.sku \
               WHERE coalesce(h.sum, 0) + coalesce(s.committed, 0) > coalesce(s.restocked, 0) \
                  OR k.on_hand < 0 OR k.reserved < 0 OR k.reserved > k.on_hand",
    },
    Invariant {
        name: "stock_commit_matches_reservation",
        promise: "a reservation is committed exactly when one stock commit took its quantity",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', coalesce(r.tenant_id, e.tenant_id), 'order_id', coalesce(r.order_id, e.order_id), \
                     'sku', coalesce(r.sku, e.sku), 'reservation_id', r.id, 'quantity', r.quantity, \
                     'stock_entry_ids', e.ids, 'committed', e.committed) \
                FROM (SELECT * FROM reservations WHERE status = 'committed') r \
                FULL JOIN (SELECT tenant_id, order_id, sku, -sum(quantity) AS committed, jsonb_agg(id ORDER BY id) AS ids \
                             FROM stock_entries WHERE kind = 'commit' GROUP BY tenant_id, order_id, sku) e \
                  ON e.tenant_id = r.tenant_id AND e.order_id = r.order_id AND e.sku = r.sku \
               WHERE r.id IS NULL OR e.ids IS NULL OR e.committed <> r.quantity",
    },
    // ---- idempotency ---------------------------------------------------------
    Invariant {
        name: "idempotent_response_matches_resource",
        promise: "the stored response of every completed Idempotency-Key names a resource that exists \
                  with the same amounts and keys",
        quiesced: false,
        sql: "WITH stored AS ( \
                SELECT tenant_id, key, status_code, convert_from(response_body, 'UTF8')::jsonb AS b \
                  FROM idempotency_keys \
                 WHERE status_code IN (200, 201) AND content_type = 'application/json' AND response_body IS NOT NULL \
              ), named AS ( \
                SELECT tenant_id, key, status_code, b, (b->>'id')::uuid AS id FROM stored \
                 WHERE jsonb_typeof(b) = 'object' AND b->>'id' ~ '^[0-9a-f-]{36}$' \
              ) \
              SELECT jsonb_build_object('tenant_id', n.tenant_id, 'key', n.key, 'status', n.status_code, \
                     'stored', n.b - 'secret', \
                     'resource', coalesce(to_jsonb(c), to_jsonb(t), to_jsonb(r), to_jsonb(a), to_jsonb(v), \
                                          to_jsonb(w) - 'secret' - 'previous_secret')) \
                FROM named n \
                LEFT JOIN charges c ON c.id = n.id \
                LEFT JOIN charge_authorizations h ON h.charge_id = c.id \
                LEFT JOIN transfers t ON t.id = n.id \
                LEFT JOIN refunds r ON r.id = n.id \
                LEFT JOIN accounts a ON a.id = n.id \
                LEFT JOIN reservations v ON v.id = n.id \
                LEFT JOIN webhook_endpoints w ON w.id = n.id \
               WHERE coalesce(c.tenant_id, t.tenant_id, r.tenant_id, a.tenant_id, v.tenant_id, w.tenant_id) \
                     IS DISTINCT FROM n.tenant_id \
                  OR (c.id IS NOT NULL AND (((n.b->>'amount')::numeric IS DISTINCT FROM c.amount \
                            AND (n.b->>'amount')::numeric IS DISTINCT FROM h.amount) \
                       OR n.b->>'order_id' IS DISTINCT FROM c.order_id \
                       OR (n.b->>'attempt')::int IS DISTINCT FROM c.attempt \
                       OR (n.b->>'buyer_account_id')::uuid IS DISTINCT FROM c.buyer_account_id \
                       OR ((n.b->>'transaction_id')::uuid IS DISTINCT FROM c.transaction_id \
                           AND (h.charge_id IS NULL OR n.b->>'transaction_id' IS NOT NULL)))) \
                  OR (t.id IS NOT NULL AND ((n.b->>'amount')::numeric IS DISTINCT FROM t.amount \
                       OR (n.b->>'source_account_id')::uuid IS DISTINCT FROM t.source_account_id \
                       OR (n.b->>'destination_account_id')::uuid IS DISTINCT FROM t.destination_account_id \
                       OR (n.b->>'transaction_id')::uuid IS DISTINCT FROM t.transaction_id)) \
                  OR (r.id IS NOT NULL AND ((n.b->>'amount')::numeric IS DISTINCT FROM r.amount \
                       OR (n.b->>'charge_id')::uuid IS DISTINCT FROM r.charge_id \
                       OR (n.b ? 'reference' AND n.b->>'reference' IS DISTINCT FROM r.reference) \
                       OR (n.b->>'transaction_id')::uuid IS DISTINCT FROM r.transaction_id)) \
                  OR (a.id IS NOT NULL AND (n.b->>'reference' IS DISTINCT FROM a.reference \
                       OR n.b->>'currency' IS DISTINCT FROM a.currency)) \
                  OR (v.id IS NOT NULL AND (n.b->>'order_id' IS DISTINCT FROM v.order_id \
                       OR n.b->>'sku' IS DISTINCT FROM v.sku OR (n.b->>'quantity')::bigint IS DISTINCT FROM v.quantity))",
    },
    // ---- emails ------------------------------------------------------------------
    Invariant {
        name: "email_send_at_most_once",
        promise: "at most one automatic send attempt per order's confirmation (the email worker or \
                  reconcile-emails --send), counted from the attempts recorded before each SMTP call; \
                  an operator's --resend-claimed is counted apart",
        quiesced: false,
        sql: "SELECT jsonb_build_object('tenant_id', tenant_id, 'order_id', order_id, 'automatic_sends', count(*), \
                     'senders', jsonb_agg(sender ORDER BY id), 'attempted_at', jsonb_agg(attempted_at ORDER BY id)) \
                FROM email_sends WHERE sender <> 'resend' GROUP BY tenant_id, order_id HAVING count(*) > 1",
    },
    // ---- after quiescence ------------------------------------------------------
    Invariant {
        name: "outbox_published",
        promise: "after quiescence, every outbox event has been published",
        quiesced: true,
        sql: "SELECT jsonb_build_object('outbox_id', id, 'message_id', message_id, 'event_type', event_type, \
                     'order_id', order_id) FROM outbox WHERE published_at IS NULL",
    },
    Invariant {
        name: "paid_reservations_committed",
        promise: "after quiescence, every reservation held when its order was charged has been committed",
        quiesced: true,
        sql: "SELECT jsonb_build_object('reservation_id', r.id, 'order_id', r.order_id, 'sku', r.sku, \
                     'status', r.status, 'charge_ids', jsonb_agg(c.id ORDER BY c.id)) \
                FROM reservations r JOIN charges c \
                  ON c.tenant_id = r.tenant_id AND c.order_id = r.order_id AND c.created_at >= r.created_at \
                 AND c.status = 'succeeded' \
               WHERE r.status = 'held' GROUP BY r.id",
    },
    Invariant {
        name: "no_unpaid_reservation_past_expiry",
        promise: "once the expirer has run, no reservation whose order no charge holds is still held more than 10 \
                  seconds past its deadline",
        quiesced: true,
        sql: "SELECT jsonb_build_object('reservation_id', r.id, 'order_id', r.order_id, 'sku', r.sku, \
                     'expires_at', r.expires_at) \
                FROM reservations r \
               WHERE r.status = 'held' AND r.expires_at < now() - interval '10 seconds' \
                 AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.tenant_id = r.tenant_id AND c.order_id = r.order_id \
                                    AND c.status NOT IN ('failed', 'voided'))",
    },
    Invariant {
        name: "voided_reservations_released",
        promise: "after quiescence, every reservation held when its order's authorization was voided has been \
                  released, unless a later attempt holds the order",
        quiesced: true,
        sql: "SELECT jsonb_build_object('reservation_id', r.id, 'order_id', r.order_id, 'sku', r.sku, \
                     'charge_ids', jsonb_agg(c.id ORDER BY c.id)) \
                FROM reservations r JOIN charges c \
                  ON c.tenant_id = r.tenant_id AND c.order_id = r.order_id AND c.created_at >= r.created_at \
                 AND c.status = 'voided' \
               WHERE r.status = 'held' \
                 AND NOT EXISTS (SELECT 1 FROM charges l WHERE l.tenant_id = r.tenant_id AND l.order_id = r.order_id \
                                    AND l.status NOT IN ('failed', 'voided')) \
               GROUP BY r.id",
    },
    Invariant {
        name: "card_charge_not_left_processing",
        promise: "after quiescence, no card charge is still processing past its lease, nor waiting for the \
                  buyer's authentication past its window: the client's retry, the completer or a webhook gave it \
                  its final status",
        quiesced: true,
        sql: "SELECT jsonb_build_object('charge_id', c.id, 'tenant_id', c.tenant_id, 'order_id', c.order_id, \
                     'attempt', c.attempt, 'lease_until', k.lease_until, 'created_at', c.created_at) \
                FROM charges c JOIN card_charges k ON k.charge_id = c.id \
               WHERE c.status IN ('processing', 'requires_action') AND k.lease_until < now()",
    },
    Invariant {
        name: "card_refund_not_left_pending",
        promise: "after quiescence, no card refund is still pending past its lease: the client's retry, the \
                  completer or a webhook gave it its final status",
        quiesced: true,
        sql: "SELECT jsonb_build_object('refund_id', r.id, 'tenant_id', r.tenant_id, 'charge_id', r.charge_id, \
                     'reference', r.reference, 'lease_until', q.lease_until, 'created_at', r.created_at) \
                FROM refunds r JOIN card_refunds q ON q.refund_id = r.id \
               WHERE r.status = 'pending' AND q.lease_until < now()",
    },
    Invariant {
        name: "email_at_most_once",
        promise: "after quiescence, at most one confirmation email per order, for a charge of that order",
        quiesced: true,
        sql: "SELECT jsonb_build_object('tenant_id', m.tenant_id, 'order_id', m.order_id, 'charge_id', m.charge_id, \
                     'emails', count(*) OVER (PARTITION BY m.tenant_id, m.order_id)) \
                FROM emails m LEFT JOIN charges c ON c.id = m.charge_id \
               WHERE c.id IS NULL OR c.tenant_id <> m.tenant_id OR c.order_id <> m.order_id",
    },
];

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also check the invariants that only hold once the pipeline has
    /// settled: every event published and every consumer done.
    pub quiesced: bool,
}

/// One broken invariant and the row that breaks it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    pub row: serde_json::Value,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The names of the invariants checked, in order.
    pub checked: Vec<&'static str>,
    pub violations: Vec<Violation>,
    /// Orders whose confirmation email was claimed but never marked sent:
    /// lost by the at-most-once email worker, or sent with no confirmation
    /// (not a violation; see the docs).
    pub emails_unsent: i64,
    /// Operators' resends of emails whose outcome was unknown
    /// (`reconcile-emails --resend-claimed`; not a violation).
    pub emails_resent: i64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The names of the broken invariants, sorted, without repetition.
    pub fn broken(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.violations.iter().map(|v| v.invariant).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.violations {
            writeln!(f, "VIOLATION {}: {}", v.invariant, v.row)?;
        }
        write!(
            f,
            "{} invariant(s) checked, {} violation(s), {} email(s) claimed but not sent, {} operator resend(s)",
            self.checked.len(),
            self.violations.len(),
            self.emails_unsent,
            self.emails_resent
        )
    }
}

/// Checks every invariant (the quiescence ones only when asked) and reports
/// each violation with the rows involved.
pub async fn audit(client: &impl GenericClient, opts: Options) -> Result<Report> {
    let mut report = Report::default();
    for inv in INVARIANTS.iter().filter(|i| opts.quiesced || !i.quiesced) {
        report.violations.extend(check(client, inv).await?);
        report.checked.push(inv.name);
    }
    report.emails_unsent = client.query_one("SELECT count(*) FROM emails WHERE status <> 'sent'", &[]).await?.get(0);
    report.emails_resent =
        client.query_one("SELECT count(*) FROM email_sends WHERE sender = 'resend'", &[]).await?.get(0);
    Ok(report)
}

/// The rows that break one invariant.
async fn check(client: &impl GenericClient, inv: &Invariant) -> Result<Vec<Violation>> {
    Ok(client.query(inv.sql, &[]).await?.iter().map(|row| Violation { invariant: inv.name, row: row.get(0) }).collect())
}

/// The violations of the invariants named `names` only, quiesced or not (the
/// benchmark checks its runs by the audit's own rules); an unknown name is
/// an error, not a silent pass.
pub async fn violations(client: &impl GenericClient, names: &[&str]) -> Result<Vec<Violation>> {
    let mut out = Vec::new();
    for name in names {
        let inv =
            INVARIANTS.iter().find(|i| i.name == *name).ok_or_else(|| crate::Error::unknown("invariant", *name))?;
        out.extend(check(client, inv).await?);
    }
    Ok(out)
}
