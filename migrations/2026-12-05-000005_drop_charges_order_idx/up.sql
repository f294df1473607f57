-- Replaced by `charges_tenant_id_order_id_id` (the previous migration).
DROP INDEX CONCURRENTLY IF EXISTS charges_order_idx;
