-- Every read of an account's entries goes by time (the entries list, the
-- as-of balance, the statement, the checkpoints: `(created_at, id)`), through
-- `ledger_entries_account_created`; the account's entries by id alone serve
-- no query, and cost every entry an index insertion (three a charge, one of
-- them on the platform-fee account's hot leaf page). Dropped CONCURRENTLY,
-- so entries go on meanwhile.
DROP INDEX CONCURRENTLY IF EXISTS ledger_entries_account_idx;
