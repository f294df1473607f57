DROP INDEX CONCURRENTLY IF EXISTS webhook_deliveries_endpoint_due;
