ALTER TABLE webhook_endpoints DROP COLUMN disabled_reason, DROP COLUMN failing_since;
