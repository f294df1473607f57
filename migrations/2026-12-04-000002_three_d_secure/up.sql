-- 3-D Secure: a card charge the provider answered `requires_action` waits
-- for the buyer to authenticate. It holds its order like a processing one
-- (`charges_one_live_per_order` counts every status but `failed`), no money
-- has moved, and the storefront needs what the provider gave to finish the
-- authentication. Its `lease_until` is then the end of the window the buyer
-- has: past it, the completer cancels the payment at the provider (once,
-- with a derived key) and records the charge `failed`.
ALTER TABLE charges DROP CONSTRAINT charges_status_check;
ALTER TABLE charges ADD CONSTRAINT charges_status_check
    CHECK (status IN ('processing', 'requires_action', 'succeeded', 'failed')) NOT VALID;
ALTER TABLE charges VALIDATE CONSTRAINT charges_status_check;

ALTER TABLE card_charges
    -- the provider's `next_action` (Stripe.js finishes the authentication with it)
    ADD COLUMN next_action jsonb,
    -- the payment's client secret, for the storefront's front end only
    ADD COLUMN client_secret text;
