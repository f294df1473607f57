-- Least privilege: the API and the workers connect as roles of their own,
-- which may read and write rows but never change the schema. Only the role
-- that runs the migrations (the owner) may ALTER, DROP, TRUNCATE or switch
-- triggers off, so the append-only rule no longer rests on triggers alone:
-- UPDATE and DELETE of ledger and stock entries are not even granted.
--
-- The roles are cluster-wide. `scripts/ensure-services.sh` creates them with
-- passwords before the first migration; a server that lacks them (a test's
-- private one) gets them here, able to log in only where the server trusts
-- the connection, since they have no password.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ledger_api', 'ledger_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- another migration made it first
            END;
        END IF;
    END LOOP;
END
$$;

-- Servers older than 15 let every role create objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO ledger_api, ledger_worker;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ledger_api, ledger_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ledger_api, ledger_worker;
-- Tables created by later migrations (run by the same owner) get the same.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ledger_api, ledger_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO ledger_api, ledger_worker;

-- Money and stock are appended, never rewritten.
REVOKE UPDATE, DELETE, TRUNCATE ON ledger_transactions, ledger_entries, stock_entries
    FROM ledger_api, ledger_worker;
-- diesel's bookkeeping is the owner's alone.
REVOKE ALL ON __diesel_schema_migrations FROM ledger_api, ledger_worker;
