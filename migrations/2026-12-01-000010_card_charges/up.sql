-- Card charges through a payment provider. A card charge is written in two
-- transactions with the provider call between them: the first creates the
-- charge `processing` (nothing moved yet), the second records the provider's
-- answer and, on success, the ledger transaction. So a charge now has a
-- status, and only a succeeded one has a ledger transaction.
ALTER TABLE charges
    ADD COLUMN status text NOT NULL DEFAULT 'succeeded'
        CHECK (status IN ('processing', 'succeeded', 'failed')),
    -- a card charge has no buyer account (its `card_charges` row says how it was paid)
    ALTER COLUMN buyer_account_id DROP NOT NULL,
    ALTER COLUMN transaction_id DROP NOT NULL,
    -- money moved exactly when the charge succeeded
    ADD CONSTRAINT charges_transaction_when_succeeded
        CHECK ((status = 'succeeded') = (transaction_id IS NOT NULL)),
    -- only a card charge waits for an answer or is declined with a row
    ADD CONSTRAINT charges_wallet_succeeded
        CHECK (buyer_account_id IS NULL OR status = 'succeeded');

-- What a card charge has beyond a charge: one row per card charge, written
-- with it.
CREATE TABLE card_charges (
    charge_id           uuid PRIMARY KEY REFERENCES charges (id),
    -- the provider token the buyer paid with (`pm_...`)
    payment_method      text NOT NULL CHECK (length(payment_method) BETWEEN 1 AND 255),
    -- the provider's Idempotency-Key: an HMAC of (tenant, order, attempt),
    -- the same on every resend
    provider_key        text NOT NULL CHECK (length(provider_key) BETWEEN 1 AND 64),
    -- the provider's payment (PaymentIntent) once it answered; one payment
    -- is one charge
    provider_payment_id text UNIQUE,
    -- why the provider declined (`card_declined/insufficient_funds`)
    decline_code        text,
    -- the tenant's provider clearing account the money came from
    clearing_account_id uuid REFERENCES accounts (id),
    -- until when the request (or the completer) that last took the charge
    -- may still be talking to the provider; the completer takes charges
    -- whose lease has passed
    lease_until         timestamptz,
    -- when the charge got its final status
    completed_at        timestamptz
);
CREATE INDEX card_charges_lease_idx ON card_charges (lease_until) WHERE completed_at IS NULL;

-- At most one charge per order that is paid or may still be paid: a failed
-- card attempt leaves its row (`failed`) and the next attempt may follow; a
-- `processing` one may still succeed, so it holds the order like a paid one.
DROP INDEX charges_one_succeeded_per_order;
CREATE UNIQUE INDEX charges_one_live_per_order ON charges (tenant_id, order_id) WHERE status <> 'failed';

-- The recovery point of a card charge's Idempotency-Key: the key's first
-- transaction committed the charge `processing` with no answer yet. A retry
-- with the key resumes the charge from there instead of starting over.
ALTER TABLE idempotency_keys ADD COLUMN charge_id uuid REFERENCES charges (id);

-- A refund of a card charge is made at the provider first; its id is kept.
ALTER TABLE refunds ADD COLUMN provider_refund_id text UNIQUE;

-- What the provider told us that contradicts what we recorded (a failure
-- after a success, another amount): no money moves on it, an operator
-- decides. Listed by `ledger-workers provider-flags`.
CREATE TABLE provider_flags (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id),
    charge_id   uuid REFERENCES charges (id),
    event_id    text,
    kind        text NOT NULL,
    detail      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX provider_flags_open_idx ON provider_flags (created_at) WHERE resolved_at IS NULL;
