-- Tenants are the storefronts and marketplaces that call the service. Every
-- other row belongs to exactly one tenant.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 digests: a leaked table does not leak keys.
CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- An account holds money in one currency. `balance` is a cache of the sum of
-- the account's entries, updated in the same transaction as the entries; the
-- auditor checks that it always equals that sum.
CREATE TABLE accounts (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    reference       text NOT NULL CHECK (length(reference) BETWEEN 1 AND 255),
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    allow_negative  boolean NOT NULL,
    balance         numeric(24, 4) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, reference),
    -- target of the entries' composite key: an entry's currency is its account's
    UNIQUE (id, currency),
    CHECK (allow_negative OR balance >= 0)
);

-- One balanced movement of money. Kinds: transfer, charge, refund.
CREATE TABLE ledger_transactions (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    kind        text NOT NULL CHECK (kind IN ('transfer', 'charge', 'refund')),
    currency    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only double entry. A positive amount credits the account (raises its
-- balance), a negative one debits it. One row per (transaction, leg).
CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  uuid NOT NULL REFERENCES ledger_transactions (id),
    leg             smallint NOT NULL CHECK (leg >= 0),
    account_id      uuid NOT NULL,
    amount          numeric(24, 4) NOT NULL CHECK (amount <> 0),
    currency        text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, leg),
    FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency)
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id DESC);

-- The ledger is append-only: the database itself refuses to rewrite history.
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_transactions_no_truncate
    BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- Every transaction sums to zero per currency, checked at commit so that the
-- legs of one transaction can be inserted one by one.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced text;
BEGIN
    SELECT currency INTO unbalanced
      FROM ledger_entries
     WHERE transaction_id = NEW.transaction_id
     GROUP BY currency
    HAVING sum(amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero in %', NEW.transaction_id, unbalanced
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

-- Transfers: a movement between two accounts of one tenant and currency.
CREATE TABLE transfers (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    source_account_id   uuid NOT NULL REFERENCES accounts (id),
    destination_account_id uuid NOT NULL REFERENCES accounts (id),
    amount              numeric(24, 4) NOT NULL CHECK (amount > 0),
    currency            text NOT NULL,
    description         text,
    transaction_id      uuid NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (source_account_id <> destination_account_id)
);

-- Charges: one per (tenant, order, attempt), forever. This natural key is what
-- makes a retry safe after its idempotency key has expired.
CREATE TABLE charges (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    order_id            text NOT NULL CHECK (length(order_id) BETWEEN 1 AND 255),
    attempt             integer NOT NULL CHECK (attempt >= 1),
    buyer_account_id    uuid NOT NULL REFERENCES accounts (id),
    seller_account_id   uuid NOT NULL REFERENCES accounts (id),
    platform_account_id uuid REFERENCES accounts (id),
    amount              numeric(24, 4) NOT NULL CHECK (amount > 0),
    fee                 numeric(24, 4) NOT NULL DEFAULT 0 CHECK (fee >= 0 AND fee <= amount),
    currency            text NOT NULL,
    refunded_amount     numeric(24, 4) NOT NULL DEFAULT 0,
    refunded_fee        numeric(24, 4) NOT NULL DEFAULT 0,
    transaction_id      uuid NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, order_id, attempt),
    -- the refunds of a charge can never sum above it, whatever the code does
    CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    CHECK (refunded_fee >= 0 AND refunded_fee <= fee),
    -- a fee needs an account to be credited to
    CHECK (fee = 0 OR platform_account_id IS NOT NULL)
);
CREATE INDEX charges_order_idx ON charges (tenant_id, order_id);

CREATE TABLE refunds (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    charge_id       uuid NOT NULL REFERENCES charges (id),
    amount          numeric(24, 4) NOT NULL CHECK (amount > 0),
    fee_amount      numeric(24, 4) NOT NULL CHECK (fee_amount >= 0),
    currency        text NOT NULL,
    transaction_id  uuid NOT NULL UNIQUE REFERENCES ledger_transactions (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_charge_idx ON refunds (charge_id);

-- Stock per SKU. `on_hand` = restocked - committed; `reserved` is held for
-- orders not yet paid. Never oversell: reserved can never exceed on hand.
CREATE TABLE skus (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    sku         text NOT NULL CHECK (length(sku) BETWEEN 1 AND 255),
    on_hand     bigint NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved    bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sku),
    CHECK (reserved <= on_hand)
);

-- The stock ledger: every change of on-hand quantity, append-only. A commit is
-- keyed by (tenant, order, sku) so that a redelivered payment event cannot
-- take stock twice.
CREATE TABLE stock_entries (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    sku         text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('restock', 'commit')),
    quantity    bigint NOT NULL CHECK (quantity <> 0),
    order_id    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, sku) REFERENCES skus (tenant_id, sku),
    CHECK ((kind = 'restock') = (quantity > 0)),
    CHECK ((kind = 'commit') = (order_id IS NOT NULL))
);
CREATE UNIQUE INDEX stock_entries_commit_once ON stock_entries (tenant_id, order_id, sku) WHERE kind = 'commit';
CREATE INDEX stock_entries_sku_idx ON stock_entries (tenant_id, sku);

CREATE TRIGGER stock_entries_append_only
    BEFORE UPDATE OR DELETE ON stock_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER stock_entries_no_truncate
    BEFORE TRUNCATE ON stock_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- A hold of stock for an order: one per (tenant, order, sku), forever.
CREATE TABLE reservations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    order_id    text NOT NULL CHECK (length(order_id) BETWEEN 1 AND 255),
    sku         text NOT NULL,
    quantity    bigint NOT NULL CHECK (quantity > 0),
    status      text NOT NULL CHECK (status IN ('held', 'released', 'committed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, sku) REFERENCES skus (tenant_id, sku),
    UNIQUE (tenant_id, order_id, sku)
);

-- The HTTP idempotency layer. A row is inserted first in the request's
-- transaction and completed with the response before commit, so a committed
-- row always carries its response and a crash leaves no row at all.
CREATE TABLE idempotency_keys (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    key             text NOT NULL,
    fingerprint     bytea NOT NULL,
    status_code     smallint,
    content_type    text,
    response_headers jsonb NOT NULL DEFAULT '[]',
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
