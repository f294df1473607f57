-- A tenant's events of one type, newest first (`GET /v1/events?type=`).
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_tenant_id_event_type_id ON outbox (tenant_id, event_type, id DESC);
