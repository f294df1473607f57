-- Card refunds through the same phases as card charges (`ledger::refunds`).
--
-- A refund's first transaction checks everything that can refuse it (its
-- reference, what remains of the charge, the seller's and the platform's
-- shares) and posts its ledger transaction at once, so the money the seller
-- gives back cannot leave while the provider is asked. A card refund starts
-- `pending` with its provider key; the provider's answer makes it
-- `succeeded`, or `failed`, and a failed refund is undone by a second ledger
-- transaction (`refund_reversal`) that gives the seller and the platform
-- their shares back. Nothing is rewritten: the refund's own transaction stays.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check
    CHECK (kind IN ('transfer', 'charge', 'refund', 'refund_reversal')) NOT VALID;
ALTER TABLE ledger_transactions VALIDATE CONSTRAINT ledger_transactions_kind_check;

ALTER TABLE refunds
    -- wallet refunds and refunds made before this migration succeeded at once
    ADD COLUMN status text NOT NULL DEFAULT 'succeeded'
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- the transaction that undid a failed refund's own
    ADD COLUMN reversal_transaction_id uuid UNIQUE REFERENCES ledger_transactions (id),
    ADD CONSTRAINT refunds_reversed_when_failed CHECK ((status = 'failed') = (reversal_transaction_id IS NOT NULL));

-- What a card refund has beyond a refund: one row per card refund, written
-- with it (as `card_charges` is to `charges`).
CREATE TABLE card_refunds (
    refund_id     uuid PRIMARY KEY REFERENCES refunds (id),
    -- the provider's Idempotency-Key: an HMAC of (tenant, charge, reference),
    -- the same on every resend
    provider_key  text NOT NULL CHECK (length(provider_key) BETWEEN 1 AND 64),
    -- until when whoever last took the refund may still be talking to the
    -- provider; the completer takes pending refunds whose lease has passed
    lease_until   timestamptz,
    -- when the refund was first sent: the provider's key window and any
    -- look-up are measured from here, not from the refund's creation
    first_sent_at timestamptz,
    -- why the provider failed it
    failure_code  text,
    -- when it got its final status
    completed_at  timestamptz
);
CREATE INDEX card_refunds_lease_idx ON card_refunds (lease_until) WHERE completed_at IS NULL;

-- The recovery point of a refund's Idempotency-Key: its first transaction
-- committed the refund `pending`; a retry with the key resumes it.
ALTER TABLE idempotency_keys ADD COLUMN refund_id uuid REFERENCES refunds (id);

-- When a card charge was first sent to the provider: its key window and the
-- lag a look-up allows are measured from here, not from the charge's
-- creation (a completer that first sends late must not read "no payment"
-- from a look-up that cannot see it yet).
ALTER TABLE card_charges ADD COLUMN first_sent_at timestamptz;
