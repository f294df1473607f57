-- No hot account row. Every charge credits the one platform-fee account, and
-- a row lock held until commit made every charge queue on it. Credits (and
-- debits of accounts that may go negative) now land on one of a few slot rows
-- of the account, picked by the database session, so concurrent charges on
-- different connections never share a row; the balance is the account row's
-- part plus the sum of its slots, read exactly in one snapshot.
--
-- Debits of an account with a floor still go to the account row, under its
-- row lock, checked against the whole balance. Its slots only ever grow
-- (credits), except when such a debit, holding that lock, folds them into the
-- row because the row alone cannot cover it; so the CHECK on the account row
-- (never below zero) still holds at every commit, and so does the floor.
CREATE TABLE account_slots (
    account_id  uuid NOT NULL REFERENCES accounts (id),
    slot        smallint NOT NULL CHECK (slot >= 0),
    balance     numeric(24, 4) NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, slot)
);

COMMENT ON COLUMN accounts.balance IS
    'the part of the balance held on the account row; the balance is this plus the sum of its account_slots';

-- The default privileges of the service-roles migration cover this table when
-- the owner runs the migrations; said again for a database migrated by another role.
GRANT SELECT, INSERT, UPDATE ON account_slots TO ledger_api, ledger_worker;
