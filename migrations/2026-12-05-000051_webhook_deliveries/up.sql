-- Webhooks out: one delivery per (endpoint, event), made when the event
-- reaches the `webhooks` queue (a redelivered message finds its rows: the
-- UNIQUE makes the fan-out idempotent), each carrying the envelope's bytes
-- as the relay published them, so every attempt sends the same body. The
-- retry schedule lives here, in PostgreSQL, not in delayed queues: it
-- survives worker and broker restarts, needs no broker plugin, and a due
-- delivery is claimed with a lease (`next_attempt_at` moves past the
-- attempt's timeout first), so one a worker died sending is sent again
-- once the lease passes: at least once.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id),
    message_id      uuid NOT NULL,
    event_type      text NOT NULL,
    payload         bytea NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- the schedule ran out without a 2xx
    failed_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, message_id),
    CHECK (delivered_at IS NULL OR failed_at IS NULL)
);
-- What is due next.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Every attempt, as the endpoint answered it (or why it did not).
CREATE TABLE webhook_attempts (
    id                bigserial PRIMARY KEY,
    delivery_id       bigint NOT NULL REFERENCES webhook_deliveries (id),
    endpoint_id       uuid NOT NULL REFERENCES webhook_endpoints (id),
    attempted_at      timestamptz NOT NULL DEFAULT now(),
    status_code       integer,
    latency_ms        integer NOT NULL,
    -- the first KiB of the answer's body
    response_excerpt  text,
    error             text
);
CREATE INDEX webhook_attempts_endpoint_id_id ON webhook_attempts (endpoint_id, id);
