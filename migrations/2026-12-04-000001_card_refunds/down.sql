ALTER TABLE card_charges DROP COLUMN first_sent_at;
ALTER TABLE idempotency_keys DROP COLUMN refund_id;
DROP TABLE card_refunds;
ALTER TABLE refunds
    DROP CONSTRAINT refunds_reversed_when_failed,
    DROP COLUMN reversal_transaction_id,
    DROP COLUMN status;
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('transfer', 'charge', 'refund'));
