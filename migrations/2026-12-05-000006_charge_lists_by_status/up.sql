-- A tenant's charges in one status, newest first (`GET /v1/charges?status=`).
-- On the status as the API shows it: a succeeded charge with refunds is
-- `partially_refunded` or `refunded`. `ledger::charges::list` filters by
-- the same expression (`STATUS_SQL`), which is what lets it use this index.
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_tenant_id_status_id ON charges (
    tenant_id,
    (CASE WHEN status = 'succeeded' AND refunded_amount > 0
          THEN CASE WHEN refunded_amount < amount THEN 'partially_refunded' ELSE 'refunded' END
          ELSE status END),
    id DESC
);
