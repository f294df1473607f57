-- A seller's charges, newest first (`GET /v1/charges?seller_account_id=`).
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_tenant_id_seller_account_id_id ON charges (tenant_id, seller_account_id, id DESC);
