-- A tenant's reservations in one status, newest first (`GET /v1/reservations?status=`).
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_tenant_id_status_id ON reservations (tenant_id, status, id DESC);
