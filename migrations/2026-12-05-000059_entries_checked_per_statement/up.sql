-- A ledger transaction's entries are checked once per INSERT statement, set
-- by set, instead of by three triggers on every entry. Every entry costed
-- two foreign-key checks (its transaction; its account in its currency)
-- and a deferred balance check at commit, each a query of its own: nine
-- per charge of three legs, most of a batch's work on the entries. Every
-- posting inserts a transaction's legs in one statement (`posting.rs`), so
-- what was checked at commit is checked at that statement's end: a
-- transaction whose legs do not sum to zero is refused there.
--
-- The foreign keys also kept an account with entries from being deleted
-- or changing its id or currency under them; accounts now refuse both.

-- Each check looks its rows up one by one in their unique indexes (scalar
-- subqueries, not joins): planned while a table is small, a join would
-- hash a scan of all of it, and the plan is kept as it grows.
CREATE FUNCTION ledger_check_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.transaction_id INTO bad
      FROM (SELECT DISTINCT transaction_id FROM new_entries) n
     WHERE (SELECT t.id FROM ledger_transactions t WHERE t.id = n.transaction_id) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not exist', bad.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.account_id, n.currency INTO bad
      FROM (SELECT DISTINCT account_id, currency FROM new_entries) n
     WHERE (SELECT a.currency FROM accounts a WHERE a.id = n.account_id) IS DISTINCT FROM n.currency
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % does not exist in %', bad.account_id, bad.currency
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- every entry of each transaction, those inserted before included: a
    -- leg added later to a balanced transaction unbalances it
    SELECT n.transaction_id, s.currency INTO bad
      FROM (SELECT DISTINCT transaction_id FROM new_entries) n
     CROSS JOIN LATERAL (SELECT e.currency FROM ledger_entries e
                          WHERE e.transaction_id = n.transaction_id
                          GROUP BY e.currency HAVING sum(e.amount) <> 0) s
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not sum to zero in %', bad.transaction_id, bad.currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_entries_checked
    AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_entries();

DROP TRIGGER ledger_entries_balanced ON ledger_entries;
DROP FUNCTION ledger_check_balanced();
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_account_id_currency_fkey,
    DROP CONSTRAINT ledger_entries_transaction_id_fkey;

CREATE FUNCTION accounts_keep_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'DELETE on accounts is not allowed: entries name them'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'an account''s id, tenant and currency never change'
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER accounts_no_delete
    BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_keep_identity();
CREATE TRIGGER accounts_identity_fixed
    BEFORE UPDATE OF id, tenant_id, currency ON accounts
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
          OR OLD.currency IS DISTINCT FROM NEW.currency)
    EXECUTE FUNCTION accounts_keep_identity();
