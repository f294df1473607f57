DROP INDEX charges_one_succeeded_per_order;
ALTER TABLE refunds
    DROP CONSTRAINT refunds_tenant_id_charge_id_reference_key,
    DROP COLUMN whole_remainder,
    DROP COLUMN reference;
