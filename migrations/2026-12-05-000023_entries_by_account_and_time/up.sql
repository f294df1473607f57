-- An account's history by time (`GET /v1/accounts/{id}/balance?as_of=`,
-- `GET /v1/accounts/{id}/statement`): a balance at an instant sums one range
-- of it, and a period's entries are one range, oldest first, read a page at
-- a time from a (created_at, id) cursor. `amount` rides along so that the
-- sums are read from the index alone (entries are never updated, so their
-- pages stay all-visible once vacuumed). Built CONCURRENTLY (outside a
-- transaction, metadata.toml) so that a large table keeps taking entries.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_entries_account_created
    ON ledger_entries (account_id, created_at, id) INCLUDE (amount);
