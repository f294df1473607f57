DROP INDEX CONCURRENTLY IF EXISTS reservations_tenant_id_sku_id;
