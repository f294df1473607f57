ALTER TABLE charges DROP COLUMN receipt_email;
DROP TABLE emails;
DROP TABLE inbox;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
