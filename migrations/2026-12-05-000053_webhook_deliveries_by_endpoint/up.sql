-- Each endpoint's due deliveries, oldest first: a scan takes a bounded
-- share of each endpoint from here, so an endpoint with a backlog (a dead
-- one) never hides another's due deliveries behind its own. Built
-- CONCURRENTLY, so deliveries go on meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_endpoint_due
    ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
