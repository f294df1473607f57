-- When an event was first published. A replay republishes a row and sets
-- `published_at` again, but the row's retention runs from its first
-- publication, as the consumers' inbox rows run from their first receipt:
-- the outbox purges by it, the relay never republishes a row past its
-- window, and replay never selects one.
ALTER TABLE outbox ADD COLUMN first_published_at timestamptz;
UPDATE outbox SET first_published_at = published_at WHERE published_at IS NOT NULL;
DROP INDEX outbox_published_idx;
CREATE INDEX outbox_first_published_idx ON outbox (first_published_at) WHERE first_published_at IS NOT NULL;

-- An event that a queue which must have it did not take (the broker
-- returned it): kept unpublished, retried no earlier than `retry_at`, with
-- the reason for an operator to see.
ALTER TABLE outbox ADD COLUMN publish_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN retry_at timestamptz;
ALTER TABLE outbox ADD COLUMN last_error text;
