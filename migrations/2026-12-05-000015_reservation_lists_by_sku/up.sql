-- A SKU's reservations, newest first (`GET /v1/reservations?sku=`).
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_tenant_id_sku_id ON reservations (tenant_id, sku, id DESC);
