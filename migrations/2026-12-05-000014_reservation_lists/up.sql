-- A tenant's reservations, newest first (`GET /v1/reservations`). An order's
-- are found by the unique `(tenant_id, order_id, sku)`: one per SKU of the order.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_tenant_id_id ON reservations (tenant_id, id DESC);
