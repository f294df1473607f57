-- A voided authorization, like a declined card charge, no longer holds its
-- order: the storefront may check out again with the next attempt. This
-- index replaces `charges_one_live_per_order` (dropped by the next
-- migration), built without blocking writes.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS charges_one_live_order
    ON charges (tenant_id, order_id) WHERE status NOT IN ('failed', 'voided');
