-- The transactional outbox: an event is inserted in the same transaction as
-- the business write it reports, and published by the relay afterwards (at
-- least once). `message_id` is stable across republishing; consumers
-- deduplicate on it.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    message_id    uuid NOT NULL UNIQUE,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    event_type    text NOT NULL,
    order_id      text,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relay when events are written; it also polls, so a lost
-- notification only delays publication.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- What each consumer has already handled. Recorded in the same transaction
-- as the consumer's effect, so a redelivered message changes nothing.
CREATE TABLE inbox (
    consumer     text NOT NULL,
    message_id   uuid NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_received_idx ON inbox (received_at);

-- Order confirmation emails, at most one per order: claimed before sending
-- (so a duplicate event cannot send twice), marked sent after.
CREATE TABLE emails (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    order_id     text NOT NULL,
    charge_id    uuid NOT NULL REFERENCES charges (id),
    recipient    text NOT NULL,
    status       text NOT NULL CHECK (status IN ('claimed', 'sent')),
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    PRIMARY KEY (tenant_id, order_id)
);

-- Where the order confirmation goes; optional.
ALTER TABLE charges ADD COLUMN receipt_email text;
