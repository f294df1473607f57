GRANT UPDATE, DELETE ON balance_checkpoints TO ledger_api, ledger_worker;
