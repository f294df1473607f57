ALTER TABLE card_charges DROP COLUMN client_secret, DROP COLUMN next_action;
ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check CHECK (status IN ('processing', 'succeeded', 'failed'));
