DROP INDEX CONCURRENTLY IF EXISTS ledger_entries_account_created;
