-- No NOTIFY on outbox inserts: the relay polls. A transaction that has
-- issued NOTIFY takes one database-wide lock at commit and holds it through
-- its WAL flush (so that notifications queue in commit order), so every
-- transaction that wrote an event committed one after another, each
-- waiting for the previous one's flush: the commits of card charges and
-- of charges made alone could not share a flush. Sampled under load, most
-- active sessions waited on that lock (`Lock: object`) at COMMIT.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
