-- A buyer wallet's charges, newest first (`GET /v1/charges?buyer_account_id=`).
-- Card charges have no buyer account and are not in it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_tenant_id_buyer_account_id_id ON charges (tenant_id, buyer_account_id, id DESC)
    WHERE buyer_account_id IS NOT NULL;
