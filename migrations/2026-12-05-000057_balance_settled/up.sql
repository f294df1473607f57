-- Each account's running count and balance through its last entry at or
-- before the history horizon. A checkpointer pass carries every account on
-- from here over the entries stamped since the previous horizon, and reads
-- nothing older: without it, each pass read again every entry since each
-- touched account's last checkpoint (up to 999 an account, every second).
CREATE TABLE balance_settled (
    account_id uuid PRIMARY KEY REFERENCES accounts (id),
    created_at timestamptz NOT NULL,
    entry_id bigint NOT NULL,
    balance numeric NOT NULL,
    entries bigint NOT NULL CHECK (entries > 0)
);

-- The passes make every checkpoint again from the first entry, carrying
-- each account in this table from the start.
DELETE FROM balance_checkpoints;
UPDATE history_horizon SET settled_to = '1970-01-01T00:00:00Z';
