-- An account's balance at every 1,000th entry of its history, in the
-- account's own order (created_at, then id): the balance at any settled
-- instant, or after any settled entry, is the nearest checkpoint at or
-- before it plus fewer than 1,000 entries, whatever the account's size.
-- Written only below the history horizon (`history_horizon`), an instant
-- before which no entry can appear any more, so a checkpoint never changes.
CREATE TABLE balance_checkpoints (
    account_id uuid NOT NULL REFERENCES accounts (id),
    created_at timestamptz NOT NULL,
    entry_id bigint NOT NULL,
    -- the sum of the account's entries up to and including this one
    balance numeric NOT NULL,
    -- how many entries that is
    entries bigint NOT NULL CHECK (entries > 0),
    PRIMARY KEY (account_id, created_at, entry_id)
);

-- The latest instant the checkpointer settled (`ledger::statements::settle`):
-- every entry stamped at or before it is committed and visible. One row.
CREATE TABLE history_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    settled_to timestamptz NOT NULL
);
INSERT INTO history_horizon (settled_to) VALUES ('1970-01-01T00:00:00Z');
