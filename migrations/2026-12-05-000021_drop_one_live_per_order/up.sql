-- Replaced by `charges_one_live_order` (the previous migration).
DROP INDEX CONCURRENTLY IF EXISTS charges_one_live_per_order;
