ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('transfer', 'charge', 'refund', 'refund_reversal'));
DROP TABLE charge_authorizations;
ALTER TABLE charges DROP CONSTRAINT charges_wallet_status;
ALTER TABLE charges ADD CONSTRAINT charges_wallet_succeeded CHECK (buyer_account_id IS NULL OR status = 'succeeded');
ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('processing', 'requires_action', 'succeeded', 'failed'));
