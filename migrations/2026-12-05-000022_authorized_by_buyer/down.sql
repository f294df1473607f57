DROP INDEX CONCURRENTLY IF EXISTS charges_authorized_buyer;
