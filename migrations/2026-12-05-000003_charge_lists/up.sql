-- A tenant's charges, newest first, a page at a time (`GET /v1/charges`):
-- one index probe and the page, whatever the number of charges. Built
-- CONCURRENTLY (outside a transaction, metadata.toml) so that a large table
-- keeps taking charges meanwhile; one index per migration, as diesel runs a
-- migration's file as one statement string, where CONCURRENTLY cannot run.
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_tenant_id_id ON charges (tenant_id, id DESC);
