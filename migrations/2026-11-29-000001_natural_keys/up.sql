-- Natural keys for the two money effects that had none beyond the charge's
-- (order, attempt): a refund's reference, and one succeeded charge per order.

-- A refund names itself with the client's `reference`, unique per charge, so
-- a refund retried under a new or expired Idempotency-Key finds the first one
-- instead of paying again. Refunds made before the reference existed get their
-- own id as text: unique, and no client holds it, so no retry can match them.
-- `whole_remainder` records that the request named no amount (all that
-- remained): the terms a retry is compared with.
ALTER TABLE refunds ADD COLUMN reference text;
UPDATE refunds SET reference = id::text;
ALTER TABLE refunds
    ALTER COLUMN reference SET NOT NULL,
    ADD CONSTRAINT refunds_reference_check CHECK (length(reference) BETWEEN 1 AND 255),
    ADD COLUMN whole_remainder boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT refunds_tenant_id_charge_id_reference_key UNIQUE (tenant_id, charge_id, reference);
