//! Order confirmation emails, at most one per order: the order is claimed
//! before sending, so a duplicate event cannot send twice, and marked sent
//! after. Claims are never purged: they are what keeps a replay from
//! resending. What was claimed and never marked sent, or never claimed at
//! all, is what reconciliation finds.

use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::money::Currency;
use crate::Result;

/// Claims the order's email; false when the order already has a claim
/// (sent, or claimed by another delivery).
pub async fn claim(
    client: &impl GenericClient,
    tenant: Uuid,
    order_id: &str,
    charge_id: Uuid,
    recipient: &str,
) -> Result<bool> {
    let claimed = client
        .execute(
            "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) VALUES ($1, $2, $3, $4, 'claimed') \
             ON CONFLICT DO NOTHING",
            &[&tenant, &order_id, &charge_id, &recipient],
        )
        .await?;
    Ok(claimed == 1)
}

/// Marks the order's email sent.
pub async fn mark_sent(client: &impl GenericClient, tenant: Uuid, order_id: &str) -> Result<()> {
    client
        .execute(
            "UPDATE emails SET status = 'sent', sent_at = now() WHERE tenant_id = $1 AND order_id = $2",
            &[&tenant, &order_id],
        )
        .await?;
    Ok(())
}

/// Where a lost confirmation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The event never reached a send: no claim.
    NeverClaimed,
    /// Claimed longer ago than the grace period, never marked sent.
    Claimed,
}

/// A paid order whose confirmation email was not (known to be) sent.
#[derive(Debug, Clone)]
pub struct Lost {
    pub tenant_id: Uuid,
    pub order_id: String,
    pub charge_id: Uuid,
    pub recipient: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub state: Unsent,
}

/// Paid orders older than `grace_secs` with a receipt address and no sent
/// email (the first attempt's charge of each order).
pub async fn lost(client: &impl GenericClient, grace_secs: f64) -> Result<Vec<Lost>> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (c.tenant_id, c.order_id) c.tenant_id, c.order_id, c.id, c.receipt_email, \
                    c.amount, c.currency, e.status \
               FROM charges c LEFT JOIN emails e ON e.tenant_id = c.tenant_id AND e.order_id = c.order_id \
              WHERE c.receipt_email IS NOT NULL \
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
            })
        })
        .collect()
}

/// Claims a lost order's email for a resend, or takes over a claim older
/// than the grace period; false when someone else holds a fresh claim or it
/// was sent meanwhile.
pub async fn reclaim(client: &impl GenericClient, lost: &Lost, grace_secs: f64) -> Result<bool> {
    let claimed = client
        .execute(
            "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) VALUES ($1, $2, $3, $4, 'claimed') \
             ON CONFLICT (tenant_id, order_id) DO UPDATE SET claimed_at = now() \
              WHERE emails.status = 'claimed' AND emails.claimed_at < now() - make_interval(secs => $5)",
            &[&lost.tenant_id, &lost.order_id, &lost.charge_id, &lost.recipient, &grace_secs],
        )
        .await?;
    Ok(claimed == 1)
}
