ALTER TABLE card_charges DROP COLUMN sends;
