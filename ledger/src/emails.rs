//! Order confirmation emails, at most one per order. The order is claimed
//! before sending, so a duplicate event cannot send twice, and every send
//! attempt is recorded (committed) before the SMTP call, in the same
//! statement as the claim; the email is marked sent after. A claim that was
//! never marked sent is an email whose outcome is unknown: the mail server
//! may have taken it, so it is never sent again automatically, only listed
//! for an operator. Claims and attempts are never purged: they are what
//! keeps a replay from resending.

use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::money::Currency;
use crate::Result;

/// Who attempts a send; recorded with the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The email worker, on the order's `charge.succeeded`.
    Worker,
    /// `reconcile-emails --send`, for an order that was never claimed.
    Reconcile,
    /// An operator's `reconcile-emails --resend-claimed`: a second attempt
    /// for an email whose outcome is unknown, which may duplicate it.
    Resend,
}

impl Sender {
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Worker => "worker",
            Sender::Reconcile => "reconcile",
            Sender::Resend => "resend",
        }
    }
}

/// Claims the order's email and records the send attempt `attempt` (an id
/// the caller chose), in one statement; false when the order already has a
/// claim (sent, or claimed by another delivery or by reconciliation): send
/// nothing then. Safe to call again with the same `attempt` when the first
/// call's outcome is unknown (the connection dropped): a claim that did
/// commit is recognised as this caller's and answers true again.
pub async fn claim(
    client: &impl GenericClient,
    tenant: Uuid,
    order_id: &str,
    charge_id: Uuid,
    recipient: &str,
    sender: Sender,
    attempt: Uuid,
) -> Result<bool> {
    debug_assert!(sender != Sender::Resend, "a resend takes over an existing claim");
    let row = client
        .query_one(
            "WITH claimed AS ( \
                 INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) \
                 VALUES ($1, $2, $3, $4, 'claimed') ON CONFLICT DO NOTHING RETURNING tenant_id, order_id), \
             recorded AS ( \
                 INSERT INTO email_sends (tenant_id, order_id, sender, attempt) \
                 SELECT tenant_id, order_id, $5, $6 FROM claimed RETURNING attempt) \
             SELECT EXISTS (SELECT 1 FROM recorded) OR EXISTS (SELECT 1 FROM email_sends WHERE attempt = $6)",
            &[&tenant, &order_id, &charge_id, &recipient, &sender.as_str(), &attempt],
        )
        .await?;
    Ok(row.get(0))
}

/// Marks the order's email sent (the mail server took it).
pub async fn mark_sent(client: &impl GenericClient, tenant: Uuid, order_id: &str) -> Result<()> {
    client
        .execute(
            "UPDATE emails SET status = 'sent', sent_at = now() WHERE tenant_id = $1 AND order_id = $2",
            &[&tenant, &order_id],
        )
        .await?;
    Ok(())
}

/// Where a confirmation that is not known to be sent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The event never reached a send: no claim, no attempt. Safe to send.
    NeverClaimed,
    /// Claimed longer ago than the grace period with a send attempted and
    /// never marked sent: the outcome is unknown (the mail server may have
    /// taken it). Only an operator may resend it.
    Claimed,
}

/// A paid order whose confirmation email is not known to be sent.
#[derive(Debug, Clone)]
pub struct Lost {
    pub tenant_id: Uuid,
    pub order_id: String,
    pub charge_id: Uuid,
    pub recipient: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub state: Unsent,
    /// Send attempts recorded for the order so far (operator resends included).
    pub attempts: i64,
}

/// Paid orders older than `grace_secs` with a receipt address and no sent
/// email (the first attempt's charge of each order): never claimed, or
/// claimed longer than `grace_secs` ago and never marked sent.
pub async fn lost(client: &impl GenericClient, grace_secs: f64) -> Result<Vec<Lost>> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (c.tenant_id, c.order_id) c.tenant_id, c.order_id, c.id, c.receipt_email, \
                    c.amount, c.currency, e.status, \
                    (SELECT count(*) FROM email_sends s WHERE s.tenant_id = c.tenant_id AND s.order_id = c.order_id) \
               FROM charges c LEFT JOIN emails e ON e.tenant_id = c.tenant_id AND e.order_id = c.order_id \
              WHERE c.receipt_email IS NOT NULL AND c.status = 'succeeded' \
                AND c.created_at < now() - make_interval(secs => $1) \
                AND (e.status IS NULL OR (e.status = 'claimed' AND e.claimed_at < now() - make_interval(secs => $1))) \
              ORDER BY c.tenant_id, c.order_id, c.attempt",
            &[&grace_secs],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let currency = crate::stored::currency(r.get(5))?;
            let state = match r.get::<_, Option<&str>>(6) {
                None => Unsent::NeverClaimed,
                Some("claimed") => Unsent::Claimed,
                Some(other) => return Err(crate::Error::unknown("email status", other)),
            };
            Ok(Lost {
                tenant_id: r.get(0),
                order_id: r.get(1),
                charge_id: r.get(2),
                recipient: r.get(3),
                amount: currency.normalize(r.get(4)),
                currency,
                state,
                attempts: r.get(7),
            })
        })
        .collect()
}

/// An operator's resend of an email whose outcome is unknown: takes over a
/// claim older than the grace period (so that two concurrent runs do not
/// both resend) and records the attempt as a resend, in one statement; false
/// when the claim is fresh or the email was marked sent meanwhile.
pub async fn claim_resend(client: &impl GenericClient, lost: &Lost, grace_secs: f64) -> Result<bool> {
    let taken = client
        .execute(
            "WITH taken AS ( \
                 UPDATE emails SET claimed_at = now() \
                  WHERE tenant_id = $1 AND order_id = $2 AND status = 'claimed' \
                    AND claimed_at < now() - make_interval(secs => $3) \
                 RETURNING tenant_id, order_id) \
             INSERT INTO email_sends (tenant_id, order_id, sender) SELECT tenant_id, order_id, $4 FROM taken",
            &[&lost.tenant_id, &lost.order_id, &grace_secs, &Sender::Resend.as_str()],
        )
        .await?;
    Ok(taken == 1)
}
