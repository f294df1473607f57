-- The transfers an account received, newest first: the other half of
-- `GET /v1/transfers?account_id=`.
CREATE INDEX CONCURRENTLY IF NOT EXISTS transfers_tenant_id_destination_account_id_id ON transfers (tenant_id, destination_account_id, id DESC);
