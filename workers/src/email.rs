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
use ledger::emails::Lost;
use ledger::events::{ChargeSucceededV1, Envelope};
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
                let bad = || Error::Setting { setting: "SMTP_URL", detail: format!("`{url}` is not smtp://host:port") };
                let rest = url.strip_prefix("smtp://").ok_or_else(bad)?;
                let (host, port) = rest.trim_end_matches('/').rsplit_once(':').ok_or_else(bad)?;
                let port: u16 = port.parse().map_err(|_| bad())?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&config.email_dir)
                    .map_err(|e| Error::Setting { setting: "EMAIL_DIR", detail: e.to_string() })?;
                Ok(Mailer::Files(AsyncFileTransport::new(&config.email_dir)))
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), Error> {
        match self {
            Mailer::Smtp(t) => t.send(message).await.map(|_| ())?,
            Mailer::Files(t) => t.send(message).await.map(|_| ())?,
        }
        Ok(())
    }
}

/// What an order confirmation says.
struct Confirmation<'a> {
    order_id: &'a str,
    charge_id: Uuid,
    recipient: &'a str,
    amount: String,
    currency: &'a str,
}

impl Confirmation<'_> {
    fn message(&self, from: &str) -> Result<Message, Error> {
        let from =
            from.parse::<Mailbox>().map_err(|e| Error::Setting { setting: "EMAIL_FROM", detail: e.to_string() })?;
        Ok(Message::builder()
            .from(from)
            .to(self.recipient.parse::<Mailbox>()?)
            .subject(format!("Order {} confirmed", self.order_id))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(format!(
                "Thank you. Your payment of {} {} for order {} was received.\n\nCharge {}\n",
                self.amount, self.currency, self.order_id, self.charge_id
            ))?)
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
    let envelope: Envelope<ChargeSucceededV1> = match serde_json::from_slice(&delivery.data) {
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
pub async fn deliver(
    pool: &Pool,
    mailer: &Mailer,
    from: &str,
    tenant: Uuid,
    charge: &ChargeSucceededV1,
) -> Result<bool, Error> {
    let Some(recipient) = charge.receipt_email.as_deref() else { return Ok(false) };
    let client = pool.get().await?;
    if !ledger::emails::claim(&**client, tenant, &charge.order_id, charge.id, recipient).await? {
        return Ok(false);
    }
    let confirmation = Confirmation {
        order_id: &charge.order_id,
        charge_id: charge.id,
        recipient,
        amount: charge.amount.to_string(),
        currency: charge.currency.code(),
    };
    mailer.send(confirmation.message(from)?).await?;
    ledger::emails::mark_sent(&**client, tenant, &charge.order_id).await?;
    Ok(true)
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
    let client = pool.get().await?;
    let grace = grace_secs as f64;
    let lost = ledger::emails::lost(&**client, grace).await?;
    if send {
        for l in &lost {
            // Claim (or re-claim a stale claim) so that a concurrent run or a
            // late event cannot send the same order twice.
            if ledger::emails::reclaim(&**client, l, grace).await? {
                let confirmation = Confirmation {
                    order_id: &l.order_id,
                    charge_id: l.charge_id,
                    recipient: &l.recipient,
                    amount: l.amount.to_string(),
                    currency: l.currency.code(),
                };
                mailer.send(confirmation.message(from)?).await?;
                ledger::emails::mark_sent(&**client, l.tenant_id, &l.order_id).await?;
            }
        }
    }
    Ok(lost)
}
