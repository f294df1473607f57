ALTER TABLE idempotency_keys DROP COLUMN capture_of, DROP COLUMN void_of;
DROP TABLE card_authorization_ends;
ALTER TABLE charge_authorizations
    DROP CONSTRAINT charge_authorizations_wallet_hold,
    DROP CONSTRAINT charge_authorizations_captured_reference,
    DROP CONSTRAINT charge_authorizations_voided_reason,
    DROP CONSTRAINT charge_authorizations_wallet_release,
    ADD CONSTRAINT charge_authorizations_check1 CHECK ((captured_at IS NULL) = (capture_reference IS NULL)),
    ADD CONSTRAINT charge_authorizations_check2 CHECK ((voided_at IS NULL) = (void_reason IS NULL)),
    ADD CONSTRAINT charge_authorizations_check4 CHECK (voided_at IS NULL OR release_transaction_id IS NOT NULL),
    ALTER COLUMN hold_account_id SET NOT NULL,
    ALTER COLUMN hold_transaction_id SET NOT NULL;
ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('processing', 'requires_action', 'authorized', 'succeeded', 'voided', 'failed')) NOT VALID;
ALTER TABLE card_charges DROP COLUMN authorize_secs;
