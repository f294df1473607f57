-- A tenant's events, newest first (`GET /v1/events`): the outbox in the
-- order it was written (`id`, its sequence), one tenant's range at a time.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_tenant_id_id ON outbox (tenant_id, id DESC);
