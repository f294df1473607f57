-- Authorize now, capture later. A wallet authorization holds the amount:
-- a ledger transaction (`authorization`) moves it from the buyer to the
-- tenant's holds account in the charge's currency (`holds:<CURRENCY>`, one
-- per tenant and currency, created on first use). The buyer's balance is
-- then what it can spend (available); what is held for it is the sum of its
-- open authorizations. A capture pays the seller and the platform from the
-- holds account (`charge`, the charge's `transaction_id`, as for a charge
-- made at once) and gives what was not captured back to the buyer
-- (`release`); a void or an expiry gives it all back (`release`). Every
-- movement is entries like any other: append-only, summing to zero.
--
-- The charge's `amount` is what it takes: the authorized amount until it is
-- captured, then what was captured (refunds, fees and statuses keep reading
-- `amount`); its authorization row keeps what was held.
ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('processing', 'requires_action', 'authorized', 'succeeded', 'voided', 'failed')) NOT VALID;
ALTER TABLE charges VALIDATE CONSTRAINT charges_status_check;

ALTER TABLE charges DROP CONSTRAINT charges_wallet_succeeded;
ALTER TABLE charges ADD CONSTRAINT charges_wallet_status
    CHECK (buyer_account_id IS NULL OR status IN ('authorized', 'succeeded', 'voided')) NOT VALID;
ALTER TABLE charges VALIDATE CONSTRAINT charges_wallet_status;

-- What an authorization has beyond a charge: one row per authorization,
-- written with it.
CREATE TABLE charge_authorizations (
    charge_id               uuid PRIMARY KEY REFERENCES charges (id),
    -- what was held; the charge's amount is at most this
    amount                  numeric(24, 4) NOT NULL CHECK (amount > 0),
    expires_at              timestamptz NOT NULL,
    -- a wallet authorization's holds account and the transaction that held
    hold_account_id         uuid NOT NULL REFERENCES accounts (id),
    hold_transaction_id     uuid NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    -- what gave held money back: what a capture did not take, or all of it
    release_transaction_id  uuid UNIQUE REFERENCES ledger_transactions (id),
    -- the caller's names for its capture and its void: one of them, once
    capture_reference       text CHECK (length(capture_reference) BETWEEN 1 AND 255),
    captured_at             timestamptz,
    void_reference          text CHECK (length(void_reference) BETWEEN 1 AND 255),
    void_reason             text CHECK (void_reason IN ('requested', 'expired')),
    voided_at               timestamptz,
    CHECK (captured_at IS NULL OR voided_at IS NULL),
    CHECK ((captured_at IS NULL) = (capture_reference IS NULL)),
    CHECK ((voided_at IS NULL) = (void_reason IS NULL)),
    CHECK (void_reference IS NULL OR void_reason = 'requested'),
    -- a void releases everything
    CHECK (voided_at IS NULL OR release_transaction_id IS NOT NULL)
);
-- The expirer's scan: the open authorizations, soonest deadline first.
CREATE INDEX charge_authorizations_open_expires_at ON charge_authorizations (expires_at)
    WHERE captured_at IS NULL AND voided_at IS NULL;

ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('transfer', 'charge', 'refund', 'refund_reversal', 'authorization', 'release')) NOT VALID;
ALTER TABLE ledger_transactions VALIDATE CONSTRAINT ledger_transactions_kind_check;
