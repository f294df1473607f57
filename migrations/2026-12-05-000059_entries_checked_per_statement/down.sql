DROP TRIGGER accounts_identity_fixed ON accounts;
DROP TRIGGER accounts_no_delete ON accounts;
DROP FUNCTION accounts_keep_identity();

ALTER TABLE ledger_entries
    ADD CONSTRAINT ledger_entries_transaction_id_fkey
        FOREIGN KEY (transaction_id) REFERENCES ledger_transactions (id),
    ADD CONSTRAINT ledger_entries_account_id_currency_fkey
        FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency);

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

DROP TRIGGER ledger_entries_checked ON ledger_entries;
DROP FUNCTION ledger_check_entries();
