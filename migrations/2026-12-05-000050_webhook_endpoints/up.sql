-- Where a tenant's storefront wants its events pushed (Standard Webhooks).
-- The signing secret is kept to sign with (an HMAC needs the key itself);
-- it is shown to the tenant once, at creation or rotation. During a
-- rotation the previous secret signs too, until its expiry. A deleted
-- endpoint keeps its row (its delivery attempts name it) and is never
-- delivered to again.
CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id),
    url                         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description                 text CHECK (length(description) <= 500),
    -- event types, or `*` for every one
    enabled_events              text[] NOT NULL CHECK (cardinality(enabled_events) BETWEEN 1 AND 64),
    enabled                     boolean NOT NULL DEFAULT true,
    secret                      text NOT NULL,
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
-- A tenant's live endpoints, newest first, a page at a time.
CREATE INDEX webhook_endpoints_tenant_id_id ON webhook_endpoints (tenant_id, id) WHERE deleted_at IS NULL;
