//! The workers' Prometheus metrics, served at `GET /metrics` on
//! WORKERS_METRICS_ADDR (when set) by a small listener of their own: no
//! HTTP framework for one read-only page. Names start with `ledger_`:
//!
//! - `ledger_relay_published_total`, `ledger_relay_deferred_total`: events
//!   the relay marked published, or kept back because a queue that must
//!   have them did not take them; `ledger_relay_confirms_total{copy,result}`:
//!   the broker's answers (`ack`, `nack`, `returned`) per copy (`required`
//!   into a consumer's queue, `optional` into the topic exchange);
//! - `ledger_consumer_messages_total{consumer,outcome}`: each delivery's
//!   fate: `applied`, `duplicate` (the inbox or the email claim knew it),
//!   `requeued` (its own failure, handed back), `dead_lettered` (rejected);
//! - `ledger_emails_total{outcome}`: confirmations `sent`, `lost` (the send
//!   failed after the ack; `reconcile-emails` finds it), `reconciled`;
//! - sampled at each scrape: `ledger_outbox_unpublished` and
//!   `ledger_outbox_oldest_unpublished_age_seconds` (from the database),
//!   `ledger_queue_messages{queue}` and `ledger_queue_consumers{queue}` for
//!   the consumers' queues and the dead-letter queue (from the broker), the
//!   pool's `ledger_db_pool_*{pool="workers"}`; and
//!   `ledger_metrics_source_up{source}`, 0 when the database or the broker
//!   did not answer the scrape (the gauges from it keep their last value).

use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::topology::Names;
use crate::{within, Error};

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Requeued,
    DeadLettered,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Requeued => "requeued",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

pub fn consumed(consumer: &'static str, outcome: Outcome) {
    metrics::counter!("ledger_consumer_messages_total", "consumer" => consumer, "outcome" => outcome.label())
        .increment(1);
}

/// An order confirmation `sent`, `lost` or `reconciled`.
pub fn email(outcome: &'static str) {
    metrics::counter!("ledger_emails_total", "outcome" => outcome).increment(1);
}

/// The broker's answer to one copy of an event.
pub fn confirmed(required: bool, acked: bool, returned: bool) {
    let result = match (acked, returned) {
        (true, true) => "returned",
        (true, false) => "ack",
        (false, _) => "nack",
    };
    let copy = if required { "required" } else { "optional" };
    metrics::counter!("ledger_relay_confirms_total", "copy" => copy, "result" => result).increment(1);
}

/// A relay batch committed: `published` events marked, `deferred` kept back.
pub fn relayed(published: usize, deferred: usize) {
    metrics::counter!("ledger_relay_published_total").increment(published as u64);
    metrics::counter!("ledger_relay_deferred_total").increment(deferred as u64);
}

/// Serves `/metrics` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, config: Config, pool: Pool, mut shutdown: Shutdown) {
    service::telemetry::metrics();
    let sampler = std::sync::Arc::new(tokio::sync::Mutex::new(Sampler {
        config,
        pool,
        broker: None,
        endpoints: Default::default(),
    }));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let sampler = sampler.clone();
                    tokio::spawn(async move {
                        // a slow or silent client is dropped, not waited for
                        let _ = tokio::time::timeout(Duration::from_secs(30), answer(stream, &sampler)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Binds WORKERS_METRICS_ADDR; the listener for [`serve`].
pub async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Setting { setting: "WORKERS_METRICS_ADDR", detail: format!("{addr}: {e}") })
}

/// One HTTP/1.x exchange: `GET /metrics` gets the metrics, anything else 404,
/// and the connection closes.
async fn answer(mut stream: TcpStream, sampler: &tokio::sync::Mutex<Sampler>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = if path == b"/metrics" && (method == b"GET" || method == b"HEAD") {
        sampler.lock().await.sample().await;
        let body = if method == b"GET" { service::telemetry::render() } else { String::new() };
        ("200 OK", service::telemetry::CONTENT_TYPE, body)
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads what is sampled at each scrape: the outbox, the queues, the pool.
struct Sampler {
    config: Config,
    pool: Pool,
    /// A channel kept between scrapes; reopened after a failure.
    broker: Option<(Connection, Channel)>,
    /// The webhook endpoints the last scrape reported on: one no longer
    /// failing nor behind is set back to 0, not left at its last value.
    endpoints: std::collections::HashSet<uuid::Uuid>,
}

impl Sampler {
    async fn sample(&mut self) {
        service::telemetry::record_pool("workers", &self.pool);
        let database = match self.outbox().await {
            Ok(()) => 1.0,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: the outbox could not be read");
                0.0
            }
        };
        metrics::gauge!("ledger_metrics_source_up", "source" => "database").set(database);
        if let Err(e) = self.webhooks().await {
            tracing::debug!(error = %e, "metrics: the webhook deliveries could not be read");
        }
        let broker = match self.queues().await {
            Ok(()) => 1.0,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: the queues could not be read");
                self.broker = None;
                0.0
            }
        };
        metrics::gauge!("ledger_metrics_source_up", "source" => "broker").set(broker);
    }

    /// Per endpoint that is failing or behind: for how long every attempt
    /// has failed, and the age of its oldest undelivered event.
    async fn webhooks(&mut self) -> Result<(), Error> {
        let client = within("a connection for the metrics", self.pool.get()).await?;
        let health = within("the webhook endpoints", ledger::webhook_deliveries::health(&**client)).await?;
        let now: std::collections::HashSet<uuid::Uuid> = health.iter().map(|h| h.endpoint).collect();
        for gone in self.endpoints.difference(&now) {
            let endpoint = gone.to_string();
            metrics::gauge!("ledger_webhook_endpoint_failing_seconds", "endpoint" => endpoint.clone()).set(0.0);
            metrics::gauge!("ledger_webhook_oldest_undelivered_age_seconds", "endpoint" => endpoint).set(0.0);
        }
        for h in &health {
            let endpoint = h.endpoint.to_string();
            metrics::gauge!("ledger_webhook_endpoint_failing_seconds", "endpoint" => endpoint.clone())
                .set(h.failing_secs);
            metrics::gauge!("ledger_webhook_oldest_undelivered_age_seconds", "endpoint" => endpoint)
                .set(h.oldest_undelivered_secs);
        }
        self.endpoints = now;
        Ok(())
    }

    async fn outbox(&self) -> Result<(), Error> {
        let client = within("a connection for the metrics", self.pool.get()).await?;
        let backlog = within("the outbox backlog", ledger::outbox::backlog(&**client)).await?;
        metrics::gauge!("ledger_outbox_unpublished").set(backlog.unpublished as f64);
        metrics::gauge!("ledger_outbox_oldest_unpublished_age_seconds").set(backlog.oldest_age_secs);
        Ok(())
    }

    async fn queues(&mut self) -> Result<(), Error> {
        if self.broker.as_ref().is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected()) {
            let conn = crate::nodes::connect(&self.config.amqp_url).await?;
            let ch = within("open a channel", conn.create_channel()).await?;
            self.broker = Some((conn, ch));
        }
        let (_, ch) = self.broker.as_ref().expect("connected above");
        let names = Names::new(&self.config.amqp_prefix);
        for (label, queue) in [
            ("inventory", &names.inventory),
            ("email", &names.email),
            ("webhooks", &names.webhooks),
            ("dead_letter", &names.dead_letter_queue),
        ] {
            // passive: only reads the counts, never creates the queue
            let q = within(
                "read a queue's depth",
                ch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                ),
            )
            .await?;
            metrics::gauge!("ledger_queue_messages", "queue" => label).set(f64::from(q.message_count()));
            metrics::gauge!("ledger_queue_consumers", "queue" => label).set(f64::from(q.consumer_count()));
        }
        Ok(())
    }
}
