CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_order_idx ON charges (tenant_id, order_id);
