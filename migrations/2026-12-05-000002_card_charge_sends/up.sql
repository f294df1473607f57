-- How many times a card charge was taken to be sent to the provider (each
-- `cards::take`, right before a send). A request the provider refuses as
-- misconfigured undoes the charge only when it was the one send ever taken:
-- after an earlier send whose answer was lost, the provider may have made
-- the payment, and the charge must stay in flight until it is known.
-- A constant default: PostgreSQL adds the column without rewriting the table.
ALTER TABLE card_charges ADD COLUMN sends integer NOT NULL DEFAULT 0;
