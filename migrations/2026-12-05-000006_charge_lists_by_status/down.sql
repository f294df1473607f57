DROP INDEX CONCURRENTLY IF EXISTS charges_tenant_id_status_id;
