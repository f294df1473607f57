ALTER TABLE outbox DROP COLUMN last_error, DROP COLUMN retry_at, DROP COLUMN publish_attempts;
DROP INDEX outbox_first_published_idx;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
ALTER TABLE outbox DROP COLUMN first_published_at;
