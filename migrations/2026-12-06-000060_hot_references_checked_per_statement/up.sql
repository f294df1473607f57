-- The references that every new charge names on the busiest rows are
-- checked once per INSERT statement, set by set, instead of by a
-- foreign-key trigger per row: a charge's tenant, seller and platform-fee
-- account, and the tenant of its ledger transaction, its event and its
-- Idempotency-Key. Each of those checks was a query of its own, six a
-- charge, and took a share lock on the referenced row, and the rows are the
-- hottest there are (one tenant row under every request of the tenant, one
-- platform-fee account under every charge): a new multixact whenever two
-- transactions' locks on one of them overlapped.
--
-- What the locks protected, that the row named is not deleted or re-keyed
-- meanwhile, holds without them: an account already refuses both
-- (`accounts_keep_identity`), a tenant now does too, and the referencing
-- columns never change. The buyer's and the transaction's foreign keys stay:
-- a batch holds the buyer's row and creates the transaction itself, so
-- their checks take no lock another transaction holds.

-- Each check looks its rows up one by one in their unique indexes (scalar
-- subqueries, not joins): planned while a table is small, a join would
-- hash a scan of all of it, and the plan is kept as it grows.
CREATE FUNCTION check_tenants_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad uuid;
BEGIN
    SELECT n.tenant_id INTO bad
      FROM (SELECT DISTINCT tenant_id FROM new_rows) n
     WHERE (SELECT t.id FROM tenants t WHERE t.id = n.tenant_id) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: tenant % does not exist', TG_TABLE_NAME, bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION charges_check_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad uuid;
BEGIN
    SELECT n.id INTO bad
      FROM (SELECT seller_account_id AS id FROM new_rows
            UNION SELECT platform_account_id FROM new_rows WHERE platform_account_id IS NOT NULL) n
     WHERE (SELECT a.id FROM accounts a WHERE a.id = n.id) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'charges: account % does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER charges_tenant_checked
    AFTER INSERT ON charges
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION check_tenants_exist();
CREATE TRIGGER charges_accounts_checked
    AFTER INSERT ON charges
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION charges_check_accounts();
CREATE TRIGGER ledger_transactions_tenant_checked
    AFTER INSERT ON ledger_transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION check_tenants_exist();
CREATE TRIGGER outbox_tenant_checked
    AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION check_tenants_exist();
CREATE TRIGGER idempotency_keys_tenant_checked
    AFTER INSERT ON idempotency_keys
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION check_tenants_exist();

ALTER TABLE charges
    DROP CONSTRAINT charges_tenant_id_fkey,
    DROP CONSTRAINT charges_seller_account_id_fkey,
    DROP CONSTRAINT charges_platform_account_id_fkey;
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_tenant_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_tenant_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_tenant_id_fkey;

-- What a row names never changes (a ledger transaction changes not at all:
-- it is append-only).
CREATE FUNCTION references_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: the tenant and accounts a row names never change', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER charges_references_fixed
    BEFORE UPDATE OF tenant_id, seller_account_id, platform_account_id ON charges
    FOR EACH ROW
    WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
          OR OLD.seller_account_id IS DISTINCT FROM NEW.seller_account_id
          OR OLD.platform_account_id IS DISTINCT FROM NEW.platform_account_id)
    EXECUTE FUNCTION references_fixed();
CREATE TRIGGER outbox_tenant_fixed
    BEFORE UPDATE OF tenant_id ON outbox
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION references_fixed();
CREATE TRIGGER idempotency_keys_tenant_fixed
    BEFORE UPDATE OF tenant_id ON idempotency_keys
    FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION references_fixed();

-- A tenant never goes, nor changes its id.
CREATE FUNCTION tenants_keep_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a tenant is never deleted and its id never changes: its rows name it'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER tenants_no_delete
    BEFORE DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_keep_identity();
CREATE TRIGGER tenants_no_truncate
    BEFORE TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenants_keep_identity();
CREATE TRIGGER tenants_id_fixed
    BEFORE UPDATE OF id ON tenants
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION tenants_keep_identity();
