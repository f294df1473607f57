-- Every attempt to hand an order's confirmation to the mail server, recorded
-- (and committed) before the SMTP call. A claim that is not marked `sent` has
-- an attempt whose outcome is unknown: the server may have taken the email,
-- so it is never sent again automatically. The email worker and
-- `reconcile-emails --send` make at most one attempt per order between them
-- (the unique index); an operator's `--resend-claimed` is recorded as a
-- `resend`, apart.
CREATE TABLE email_sends (
    id            bigserial PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    order_id      text NOT NULL,
    sender        text NOT NULL CHECK (sender IN ('worker', 'reconcile', 'resend')),
    -- Chosen by the sender before it claims, so that a claim whose commit it
    -- did not hear about (the connection dropped) is recognised as its own
    -- when it retries, rather than taken for somebody else's.
    attempt       uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, order_id) REFERENCES emails (tenant_id, order_id)
);
CREATE UNIQUE INDEX email_sends_automatic_once ON email_sends (tenant_id, order_id) WHERE sender <> 'resend';

-- Claims made before attempts were recorded: each of them may have been
-- sent, so each counts as one attempt (a claim never marked sent becomes an
-- unknown outcome for an operator, not an automatic resend).
INSERT INTO email_sends (tenant_id, order_id, sender, attempted_at)
SELECT tenant_id, order_id, 'worker', claimed_at FROM emails;
