DROP INDEX CONCURRENTLY IF EXISTS ledger_entries_created_brin;
