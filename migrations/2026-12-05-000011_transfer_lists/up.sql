-- A tenant's transfers, newest first (`GET /v1/transfers`).
CREATE INDEX CONCURRENTLY IF NOT EXISTS transfers_tenant_id_id ON transfers (tenant_id, id DESC);
