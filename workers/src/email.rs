//! The email worker: one order confirmation per paid order, at most once.
//!
//! The delivery is acked before anything else, so a crash afterwards loses
//! the email rather than sending it twice. (Before the ack it takes a
//! database connection, waiting while PostgreSQL is away: an outage is no
//! reason to lose an email.) The order is then claimed in the `emails` table
//! (one row per order, ever) and the send attempt recorded, in one
//! statement, so a republished duplicate finds the claim and sends nothing;
//! the row is marked sent after the mail server took the email.
//!
//! What was lost is what `reconcile-emails` finds: an order never claimed is
//! sent (`--send`), once; a claim never marked sent is an email whose
//! outcome is unknown (the worker may have died after the server took it),
//! listed for an operator and sent again only on `--resend-claimed`, which
//! may duplicate it. Every attempt carries the same `Message-ID`, derived
//! from the tenant and the order, so that a receiving system can drop a
//! duplicate.

use deadpool_postgres::Pool;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use ledger::emails::{Lost, Sender, Unsent};
use ledger::events::Envelope;
use lettre::message::Mailbox;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::{self, Outcome};
use crate::shutdown::{supervise, Shutdown};
use crate::{consumer, outage};
use crate::{crash_point, in_database, within, Error};

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

/// The `Message-ID` of an order's confirmation, `<order-HEX@DOMAIN>`: the
/// same for every attempt (the worker's, reconciliation's, an operator's
/// resend), so a receiving system that remembers the ids it has seen drops
/// a second copy. HEX is 128 bits of SHA-256 over the tenant and the order
/// id (which may hold any character); DOMAIN is EMAIL_FROM's.
pub fn message_id(tenant: Uuid, order_id: &str, from: &str) -> Result<String, Error> {
    let from = sender(from)?;
    let digest = Sha256::new().chain_update(tenant.as_bytes()).chain_update(order_id.as_bytes()).finalize();
    Ok(format!("<order-{}@{}>", hex::encode(&digest[..16]), from.email.domain()))
}

fn sender(from: &str) -> Result<Mailbox, Error> {
    from.parse::<Mailbox>().map_err(|e| Error::Setting { setting: "EMAIL_FROM", detail: e.to_string() })
}

/// What an order confirmation says.
struct Confirmation<'a> {
    tenant: Uuid,
    order_id: &'a str,
    charge_id: Uuid,
    recipient: &'a str,
    amount: String,
    currency: &'a str,
}

impl<'a> Confirmation<'a> {
    fn of_lost(l: &'a Lost) -> Confirmation<'a> {
        Confirmation {
            tenant: l.tenant_id,
            order_id: &l.order_id,
            charge_id: l.charge_id,
            recipient: &l.recipient,
            amount: l.amount.to_string(),
            currency: l.currency.code(),
        }
    }

    fn message(&self, from: &str) -> Result<Message, Error> {
        Ok(Message::builder()
            .message_id(Some(message_id(self.tenant, self.order_id, from)?))
            .from(sender(from)?)
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
            let held = stop.clone();
            let bound = config.database_bound();
            consumer::consume(
                &config,
                |n| &n.email,
                CONSUMER,
                stop,
                connected,
                |d| handle(&pool, bound, &mailer, &from, d, held.clone()),
            )
            .await
        }
    })
    .await
}

/// What a confirmation needs of a paid order's event: the fields
/// `charge.succeeded` and `charge.captured` (an authorization captured)
/// share, under the same names; the rest of either is ignored.
#[derive(Debug, serde::Deserialize)]
struct Paid {
    id: Uuid,
    order_id: String,
    /// What was taken (a capture: what was captured).
    amount: rust_decimal::Decimal,
    currency: ledger::Currency,
    receipt_email: Option<String>,
}

async fn handle(
    pool: &Pool,
    bound: std::time::Duration,
    mailer: &Mailer,
    from: &str,
    delivery: Delivery,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let envelope: Envelope<Paid> = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "unparseable message dead-lettered");
            within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            metrics::consumed(CONSUMER, Outcome::DeadLettered);
            return Ok(());
        }
    };
    // The database first, before the ack: while PostgreSQL is away the
    // delivery is held (its delivery count unspent) rather than acked and
    // lost. On shutdown meanwhile it returns to its queue with the channel.
    let checkout = || in_database("the order email", bound, pool.get());
    match outage::through("the order email", &mut shutdown, checkout).await {
        None => return Ok(()),
        Some(client) => drop(client?),
    }
    // Ack first: from here on, a crash loses this email instead of doubling it.
    // If the ack cannot be sent the channel is gone and the broker redelivers.
    within("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
    crash_point("email-after-ack");
    match deliver(pool, bound, &mut shutdown, mailer, from, envelope.tenant_id, &envelope.data).await {
        Ok(true) => {
            tracing::info!(order_id = %envelope.data.order_id, "order email sent");
            metrics::consumed(CONSUMER, Outcome::Applied);
            metrics::email("sent");
        }
        Ok(false) => metrics::consumed(CONSUMER, Outcome::Duplicate),
        Err(e) => {
            // at most once: not retried here; reconcile-emails finds it
            tracing::error!(error = %e, order_id = %envelope.data.order_id, "order email not sent");
            metrics::consumed(CONSUMER, Outcome::Applied);
            metrics::email("lost");
        }
    }
    Ok(())
}

/// Claims the order's email, recording the attempt, sends it and marks it
/// sent. Returns false when the order already has a claim (sent, or claimed
/// by another delivery or by reconciliation). The claim and the mark wait
/// out a database outage (`outage`): both are safe to retry, the claim
/// because it sends nothing until it is committed, the mark because the
/// email is sent. Only a crash, or a shutdown during an outage, between the
/// send and the mark leaves an outcome unknown.
async fn deliver(
    pool: &Pool,
    bound: std::time::Duration,
    shutdown: &mut Shutdown,
    mailer: &Mailer,
    from: &str,
    tenant: Uuid,
    charge: &Paid,
) -> Result<bool, Error> {
    let Some(recipient) = charge.receipt_email.as_deref() else { return Ok(false) };
    let order = charge.order_id.as_str();
    // Built before the claim: an address that cannot be used sends nothing
    // and claims nothing.
    let message = Confirmation {
        tenant,
        order_id: order,
        charge_id: charge.id,
        recipient,
        amount: charge.amount.to_string(),
        currency: charge.currency.code(),
    }
    .message(from)?;
    // One attempt id across the retries: a claim that committed while its
    // answer was lost is recognised as ours, not taken for another's.
    let attempt = Uuid::now_v7();
    let claim = || {
        in_database("claiming the order email", bound, async {
            let client = pool.get().await?;
            let claimed =
                ledger::emails::claim(&**client, tenant, order, charge.id, recipient, Sender::Worker, attempt).await?;
            Ok::<_, Error>(claimed)
        })
    };
    match outage::through("claiming the order email", shutdown, claim).await {
        None => return Ok(false),
        Some(claimed) => {
            if !claimed? {
                return Ok(false);
            }
        }
    }
    // The attempt is recorded: if the process dies from here until the
    // mark, the outcome is unknown and only an operator sends it again.
    mailer.send(message).await?;
    crash_point("email-after-send");
    let mark = || {
        in_database("marking the order email sent", bound, async {
            let client = pool.get().await?;
            Ok::<_, Error>(ledger::emails::mark_sent(&**client, tenant, order).await?)
        })
    };
    if let Some(marked) = outage::through("marking the order email sent", shutdown, mark).await {
        marked?;
    }
    Ok(true)
}

/// What `reconcile-emails` sends, besides listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sends {
    /// Send the confirmations of orders never claimed: they were never sent.
    pub never_claimed: bool,
    /// Also resend the ones claimed and never marked sent, whose outcome is
    /// unknown: this may send an order's email a second time (with the same
    /// Message-ID). An operator's decision, recorded as a resend.
    pub resend_claimed: bool,
}

/// A confirmation reconciliation found, and whether it sent it now.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub lost: Lost,
    pub sent: bool,
    /// The Message-ID every attempt of this email carries.
    pub message_id: String,
}

/// Paid orders older than `grace_secs` with a receipt address and no sent
/// email; with `send`, sends the ones never claimed (once). Claims never
/// marked sent are listed, not sent: their outcome is unknown.
pub async fn reconcile(
    pool: &Pool,
    mailer: &Mailer,
    from: &str,
    grace_secs: u64,
    send: bool,
) -> Result<Vec<Lost>, Error> {
    let sends = Sends { never_claimed: send, resend_claimed: false };
    Ok(reconcile_with(pool, mailer, from, grace_secs, sends).await?.into_iter().map(|r| r.lost).collect())
}

/// [`reconcile`], with the operator's choice of what to send.
pub async fn reconcile_with(
    pool: &Pool,
    mailer: &Mailer,
    from: &str,
    grace_secs: u64,
    sends: Sends,
) -> Result<Vec<Reconciled>, Error> {
    let client = pool.get().await?;
    let grace = grace_secs as f64;
    let lost = ledger::emails::lost(&**client, grace).await?;
    let mut out = Vec::with_capacity(lost.len());
    for l in lost {
        let message = Confirmation::of_lost(&l).message(from)?;
        // Each takes the order in the database first, so that a concurrent
        // run or a late event cannot send it too.
        let taken = match l.state {
            Unsent::NeverClaimed if sends.never_claimed => {
                let attempt = Uuid::now_v7();
                ledger::emails::claim(
                    &**client,
                    l.tenant_id,
                    &l.order_id,
                    l.charge_id,
                    &l.recipient,
                    Sender::Reconcile,
                    attempt,
                )
                .await?
            }
            Unsent::Claimed if sends.resend_claimed => ledger::emails::claim_resend(&**client, &l, grace).await?,
            _ => false,
        };
        if taken {
            mailer.send(message).await?;
            ledger::emails::mark_sent(&**client, l.tenant_id, &l.order_id).await?;
            metrics::email("reconciled");
        }
        let message_id = message_id(l.tenant_id, &l.order_id, from)?;
        out.push(Reconciled { lost: l, sent: taken, message_id });
    }
    Ok(out)
}
