DROP TABLE provider_flags;
ALTER TABLE refunds DROP COLUMN provider_refund_id;
ALTER TABLE idempotency_keys DROP COLUMN charge_id;
DROP INDEX charges_one_live_per_order;
-- card charges cannot be expressed by the older schema
DELETE FROM card_charges;
DELETE FROM emails WHERE charge_id IN (SELECT id FROM charges WHERE buyer_account_id IS NULL);
DELETE FROM refunds WHERE charge_id IN (SELECT id FROM charges WHERE buyer_account_id IS NULL);
DELETE FROM charges WHERE buyer_account_id IS NULL;
DROP TABLE card_charges;
ALTER TABLE charges
    DROP CONSTRAINT charges_wallet_succeeded,
    DROP CONSTRAINT charges_transaction_when_succeeded,
    ALTER COLUMN transaction_id SET NOT NULL,
    ALTER COLUMN buyer_account_id SET NOT NULL,
    DROP COLUMN status;
CREATE UNIQUE INDEX charges_one_succeeded_per_order ON charges (tenant_id, order_id);
