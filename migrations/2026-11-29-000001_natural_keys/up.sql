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

-- At most one succeeded charge per order, whatever its attempt number: a new
-- attempt is for an order whose earlier attempts were declined (a decline
-- writes no row). Today every row is a succeeded charge; when charges get a
-- status (a card charge processing or failed), a migration makes this index
-- partial, `WHERE status = 'succeeded'`.
--
-- A database where an order was already charged twice cannot take the index:
-- stop and name those orders, so an operator refunds the extra charges and
-- decides what to do with their rows, instead of the migration guessing.
DO $$
DECLARE
    twice text;
BEGIN
    SELECT string_agg(format('%s/%s (%s charges)', tenant_id, order_id, n), ', ') INTO twice
      FROM (SELECT tenant_id, order_id, count(*) AS n FROM charges
             GROUP BY tenant_id, order_id HAVING count(*) > 1 LIMIT 100) o;
    IF twice IS NOT NULL THEN
        RAISE EXCEPTION 'orders charged more than once: %', twice
            USING HINT = 'each is a buyer charged twice; refund the extra charges, then resolve the rows before migrating';
    END IF;
END $$;
CREATE UNIQUE INDEX charges_one_succeeded_per_order ON charges (tenant_id, order_id);
