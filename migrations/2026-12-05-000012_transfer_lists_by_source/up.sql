-- The transfers an account sent, newest first: half of
-- `GET /v1/transfers?account_id=` (`ledger::transfers::list` merges the two halves).
CREATE INDEX CONCURRENTLY IF NOT EXISTS transfers_tenant_id_source_account_id_id ON transfers (tenant_id, source_account_id, id DESC);
