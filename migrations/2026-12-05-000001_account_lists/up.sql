-- A tenant's accounts, newest first, a page at a time (`GET /v1/accounts`):
-- one index probe and the page, whatever the number of accounts. Built
-- CONCURRENTLY (outside a transaction, metadata.toml) so that a large table
-- keeps taking writes meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_tenant_id_id ON accounts (tenant_id, id);
