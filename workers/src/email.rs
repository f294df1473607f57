//! The email worker: one order confirmation per paid order, at most once.
//!
//! The delivery is acked before anything else, so a crash afterwards loses
//! the email rather than sending it twice. The order is then claimed in the
//! `emails` table (one row per order, ever), so a republished duplicate finds
//! the claim and sends nothing; the row is marked sent after sending. What
//! was lost (no row, or a claim never marked sent) is what
//! `reconcile-emails` finds and, when asked, sends.

use deadpool_postgres::Pool;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use ledger::charges::Charge;
use ledger::outbox::Envelope;
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use crate::config::Config;
use crate::consumer;
use crate::shutdown::{supervise, Shutdown};
use crate::{crash_point, within, Error};

pub const CONSUMER: &str = "email";

/// Where emails go: SMTP, or files when no SMTP server is configured.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    pub fn from_config(config: &Config) -> Result<Mailer, Error> {
        match &config.smtp_url {
            Some(url) => {
                // Plain SMTP (a local relay or a test listener); TLS is not built in.
                let bad = || Error::Other(format!("SMTP_URL `{url}` is not smtp://host:port"));
                let rest = url.strip_prefix("smtp://").ok_or_else(bad)?;
                let (host, port) = rest.trim_end_matches('/').rsplit_once(':').ok_or_else(bad)?;
                let port: u16 = port.parse().map_err(|_| bad())?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&config.email_dir).map_err(|e| Error::Other(format!("EMAIL_DIR: {e}")))?;
                Ok(Mailer::Files(AsyncFileTransport::new(&config.email_dir)))
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), Error> {
        match self {
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| Error::Other(format!("SMTP: {e}"))),
            Mailer::Files(t) => t.send(message).await.map(|_| ()).map_err(|e| Error::Other(format!("email file: {e}"))),
        }
    }
}

pub async fn run(config: Config, pool: Pool, shutdown: Shutdown) {
    let mailer = match Mailer::from_config(&config) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "email worker cannot start");
            return;
        }
    };
    supervise("email worker", shutdown, |stop, connected| {
        let (config, pool, mailer) = (config.clone(), pool.clone(), mailer.clone());
        async move {
            let from = config.email_from.clone();
            consumer::consume(&config, |n| &n.email, CONSUMER, stop, connected, |d| handle(&pool, &mailer, &from, d))
                .await
        }
    })
    .await
}

async fn handle(pool: &Pool, mailer: &Mailer, from: &str, delivery: Delivery) -> Result<(), Error> {
    let envelope: Envelope<Charge> = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "unparseable message dead-lettered");
            within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            return Ok(());
        }
    };
    // Ack first: from here on, a crash loses this email instead of doubling it.
    // If the ack cannot be sent the channel is gone and the broker redelivers.
    within("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
    crash_point("email-after-ack");
    if let Err(e) = deliver(pool, mailer, from, envelope.tenant_id, &envelope.data).await {
        // at most once: not retried here; reconcile-emails finds it
        tracing::error!(error = %e, order_id = %envelope.data.order_id, "order email not sent");
    }
    Ok(())
}

/// Claims the order's email and sends it. Returns false when the order
/// already has a claim (sent, or claimed by another delivery).
pub async fn deliver(pool: &Pool, mailer: &Mailer, from: &str, tenant: Uuid, charge: &Charge) -> Result<bool, Error> {
    let Some(recipient) = charge.receipt_email.as_deref() else { return Ok(false) };
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let claimed = client
        .execute(
            "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) VALUES ($1, $2, $3, $4, 'claimed') \
             ON CONFLICT DO NOTHING",
            &[&tenant, &charge.order_id, &charge.id, &recipient],
        )
        .await?;
    if claimed == 0 {
        return Ok(false);
    }
    send_and_mark(
        &client,
        mailer,
        from,
        tenant,
        charge.id,
        &charge.order_id,
        recipient,
        &charge.amount.to_string(),
        charge.currency.code(),
    )
    .await?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
async fn send_and_mark(
    client: &deadpool_postgres::Client,
    mailer: &Mailer,
    from: &str,
    tenant: Uuid,
    charge_id: Uuid,
    order_id: &str,
    recipient: &str,
    amount: &str,
    currency: &str,
) -> Result<(), Error> {
    let message = Message::builder()
        .from(from.parse::<Mailbox>().map_err(|e| Error::Other(format!("EMAIL_FROM: {e}")))?)
        .to(recipient.parse::<Mailbox>().map_err(|e| Error::Other(format!("recipient: {e}")))?)
        .subject(format!("Order {order_id} confirmed"))
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(format!(
            "Thank you. Your payment of {amount} {currency} for order {order_id} was received.\n\nCharge {charge_id}\n"
        ))
        .map_err(|e| Error::Other(format!("email: {e}")))?;
    mailer.send(message).await?;
    client
        .execute(
            "UPDATE emails SET status = 'sent', sent_at = now() WHERE tenant_id = $1 AND order_id = $2",
            &[&tenant, &order_id],
        )
        .await?;
    Ok(())
}

/// A paid order whose confirmation email was lost.
#[derive(Debug, Clone)]
pub struct Lost {
    pub tenant_id: Uuid,
    pub order_id: String,
    pub charge_id: Uuid,
    pub recipient: String,
    pub amount: String,
    pub currency: String,
    /// `None`: the event never reached a send; `Some("claimed")`: claimed, never sent.
    pub state: Option<String>,
}

/// Paid orders older than `grace_secs` with a receipt address and no sent
/// email; with `send`, sends each of them now (and marks it sent).
pub async fn reconcile(
    pool: &Pool,
    mailer: &Mailer,
    from: &str,
    grace_secs: u64,
    send: bool,
) -> Result<Vec<Lost>, Error> {
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let rows = client
        .query(
            "SELECT DISTINCT ON (c.tenant_id, c.order_id) c.tenant_id, c.order_id, c.id, c.receipt_email, \
                    c.amount::text, c.currency, e.status \
               FROM charges c LEFT JOIN emails e ON e.tenant_id = c.tenant_id AND e.order_id = c.order_id \
              WHERE c.receipt_email IS NOT NULL \
                AND c.created_at < now() - make_interval(secs => $1) \
                AND (e.status IS NULL OR (e.status = 'claimed' AND e.claimed_at < now() - make_interval(secs => $1))) \
              ORDER BY c.tenant_id, c.order_id, c.attempt",
            &[&(grace_secs as f64)],
        )
        .await?;
    let lost: Vec<Lost> = rows
        .iter()
        .map(|r| {
            let currency: String = r.get(5);
            let amount: String = r.get(4);
            let amount = currency
                .parse::<ledger::Currency>()
                .map(|c| c.normalize(amount.parse().unwrap_or_default()).to_string())
                .unwrap_or(amount);
            Lost {
                tenant_id: r.get(0),
                order_id: r.get(1),
                charge_id: r.get(2),
                recipient: r.get(3),
                amount,
                currency,
                state: r.get(6),
            }
        })
        .collect();
    if send {
        for l in &lost {
            // Claim (or re-claim a stale claim) so that a concurrent run or a
            // late event cannot send the same order twice.
            let claimed = client
                .execute(
                    "INSERT INTO emails (tenant_id, order_id, charge_id, recipient, status) VALUES ($1, $2, $3, $4, 'claimed') \
                     ON CONFLICT (tenant_id, order_id) DO UPDATE SET claimed_at = now() \
                      WHERE emails.status = 'claimed' AND emails.claimed_at < now() - make_interval(secs => $5)",
                    &[&l.tenant_id, &l.order_id, &l.charge_id, &l.recipient, &(grace_secs as f64)],
                )
                .await?;
            if claimed == 1 {
                send_and_mark(
                    &client,
                    mailer,
                    from,
                    l.tenant_id,
                    l.charge_id,
                    &l.order_id,
                    &l.recipient,
                    &l.amount,
                    &l.currency,
                )
                .await?;
            }
        }
    }
    Ok(lost)
}
