DROP INDEX CONCURRENTLY IF EXISTS outbox_tenant_id_event_type_id;
