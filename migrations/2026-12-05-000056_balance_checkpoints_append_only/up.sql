-- A balance checkpoint is written once and never changed, as the entries
-- it sums: the service's roles may add and read them, not rewrite them.
REVOKE UPDATE, DELETE, TRUNCATE ON balance_checkpoints FROM ledger_api, ledger_worker;
