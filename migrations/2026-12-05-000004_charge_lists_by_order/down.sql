DROP INDEX CONCURRENTLY IF EXISTS charges_tenant_id_order_id_id;
