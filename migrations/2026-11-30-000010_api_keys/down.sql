ALTER TABLE tenants
    DROP CONSTRAINT tenants_rate_limit_complete,
    DROP COLUMN rate_limit_burst,
    DROP COLUMN rate_limit_per_sec;
DROP INDEX api_keys_tenant_idx;
DROP INDEX api_keys_prefix_idx;
ALTER TABLE api_keys DROP COLUMN last_used_at;
