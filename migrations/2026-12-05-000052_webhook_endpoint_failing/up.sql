-- An endpoint that has failed every attempt since `failing_since` (set by
-- the first failed attempt after a delivered one, cleared by the next
-- delivered one) is disabled once that has lasted WEBHOOK_DISABLE_AFTER_SECS
-- (3 days by default), with `webhook_endpoint.disabled`; its
-- `disabled_reason` says why until it is enabled again.
ALTER TABLE webhook_endpoints
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN disabled_reason text;
