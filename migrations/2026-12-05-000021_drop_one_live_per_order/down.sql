CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS charges_one_live_per_order ON charges (tenant_id, order_id) WHERE status <> 'failed';
