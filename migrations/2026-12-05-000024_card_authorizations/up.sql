-- Card authorizations. A card charge made with `"capture": false` asks the
-- provider for a manual capture: the card issuer holds the amount, so the
-- ledger holds nothing (no holds account, no `authorization` transaction).
-- Its `charge_authorizations` row has the deadline; the capture books the
-- `charge` transaction from the provider clearing account, as a card charge
-- made at once does, for what was captured.
--
-- Capturing and voiding a card authorization are effects at the provider:
-- in flight (`capturing`, `voiding`) between their first transaction and
-- the provider's answer, with a lease for the completer, as a card charge
-- and a card refund are. One row per charge: exactly one end, ever.

-- how long the authorization asked for holds (NULL: captured at once)
ALTER TABLE card_charges ADD COLUMN authorize_secs double precision CHECK (authorize_secs > 0);

ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('processing', 'requires_action', 'authorized', 'capturing', 'voiding', 'succeeded', 'voided',
                      'failed')) NOT VALID;
ALTER TABLE charges VALIDATE CONSTRAINT charges_status_check;

-- a card authorization holds nothing in the ledger
ALTER TABLE charge_authorizations
    ALTER COLUMN hold_account_id DROP NOT NULL,
    ALTER COLUMN hold_transaction_id DROP NOT NULL,
    ADD CONSTRAINT charge_authorizations_wallet_hold
        CHECK ((hold_account_id IS NULL) = (hold_transaction_id IS NULL)) NOT VALID,
    -- the references and the reason are written when the end begins (a
    -- card's capture or void is in flight at the provider until it ends)
    DROP CONSTRAINT charge_authorizations_check1,
    ADD CONSTRAINT charge_authorizations_captured_reference
        CHECK (captured_at IS NULL OR capture_reference IS NOT NULL) NOT VALID,
    DROP CONSTRAINT charge_authorizations_check2,
    ADD CONSTRAINT charge_authorizations_voided_reason
        CHECK (voided_at IS NULL OR void_reason IS NOT NULL) NOT VALID,
    -- a wallet void releases everything
    DROP CONSTRAINT charge_authorizations_check4,
    ADD CONSTRAINT charge_authorizations_wallet_release
        CHECK (voided_at IS NULL OR release_transaction_id IS NOT NULL OR hold_account_id IS NULL) NOT VALID;
ALTER TABLE charge_authorizations VALIDATE CONSTRAINT charge_authorizations_wallet_hold;
ALTER TABLE charge_authorizations VALIDATE CONSTRAINT charge_authorizations_captured_reference;
ALTER TABLE charge_authorizations VALIDATE CONSTRAINT charge_authorizations_voided_reason;
ALTER TABLE charge_authorizations VALIDATE CONSTRAINT charge_authorizations_wallet_release;

-- The capture or the void of a card authorization at the provider.
CREATE TABLE card_authorization_ends (
    charge_id     uuid PRIMARY KEY REFERENCES charges (id),
    kind          text NOT NULL CHECK (kind IN ('capture', 'void')),
    -- until when whoever last took it may still be talking to the provider
    lease_until   timestamptz,
    sends         integer NOT NULL DEFAULT 0,
    first_sent_at timestamptz,
    completed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX card_authorization_ends_lease_idx ON card_authorization_ends (lease_until) WHERE completed_at IS NULL;

-- An Idempotency-Key's recovery point may be a capture or a void in flight.
ALTER TABLE idempotency_keys
    ADD COLUMN capture_of uuid REFERENCES card_authorization_ends (charge_id),
    ADD COLUMN void_of uuid REFERENCES card_authorization_ends (charge_id);
