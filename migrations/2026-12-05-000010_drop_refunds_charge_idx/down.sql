CREATE INDEX CONCURRENTLY IF NOT EXISTS refunds_charge_idx ON refunds (charge_id);
