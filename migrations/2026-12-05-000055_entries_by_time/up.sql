-- The entries stamped in a window of time, whatever their account: what the
-- checkpointer reads each pass (the entries since its last horizon). A BRIN
-- index: entries arrive in nearly increasing created_at, so a summary per
-- range of pages finds a recent window in a few ranges, and it costs the
-- write path next to nothing (no entry per row). Built CONCURRENTLY, so
-- entries go on meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS ledger_entries_created_brin ON ledger_entries USING brin (created_at);
