ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM ledger_api, ledger_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE USAGE, SELECT ON SEQUENCES FROM ledger_api, ledger_worker;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ledger_api, ledger_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM ledger_api, ledger_worker;
REVOKE USAGE ON SCHEMA public FROM ledger_api, ledger_worker;
-- The roles are cluster-wide and other databases may use them: they stay.
