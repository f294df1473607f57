-- An order's charges, the latest attempt first (`GET /v1/charges?order_id=`).
-- It replaces `charges_order_idx (tenant_id, order_id)` (the next migration
-- drops it): every lookup of an order's charges reads this one as well.
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_tenant_id_order_id_id ON charges (tenant_id, order_id, id DESC);
