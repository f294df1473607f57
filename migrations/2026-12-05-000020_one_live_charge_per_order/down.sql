DROP INDEX CONCURRENTLY IF EXISTS charges_one_live_order;
