-- Several live keys per tenant, each with the time it was last used, and a
-- per-tenant override of the API's rate limit.

-- When the key last authenticated a request, to within the API's flush
-- interval (API_KEY_LAST_USED_FLUSH_SECS): the API records use in memory and
-- writes it in one batched statement per interval, never per request.
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- `revoke-key` finds keys by their printed prefix; `list-keys` by tenant.
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- The tenant's own token bucket, instead of RATE_LIMIT_PER_SEC and
-- RATE_LIMIT_BURST: both set or neither. A rate of 0 means no limit.
ALTER TABLE tenants
    ADD COLUMN rate_limit_per_sec integer CHECK (rate_limit_per_sec >= 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst >= 1),
    ADD CONSTRAINT tenants_rate_limit_complete
        CHECK ((rate_limit_per_sec IS NULL) = (rate_limit_burst IS NULL));
