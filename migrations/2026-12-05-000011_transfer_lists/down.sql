DROP INDEX CONCURRENTLY IF EXISTS transfers_tenant_id_id;
