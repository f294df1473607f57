//! The webhooks worker: every event, delivered at least once to each live
//! endpoint of its tenant subscribed to its type, signed the Standard
//! Webhooks way (`service::signing`).
//!
//! Two loops. [`run`] consumes the `webhooks` queue (the relay puts every
//! event there, mandatory, as for the other consumers) and makes the
//! event's deliveries in PostgreSQL (`ledger::webhook_deliveries::schedule`)
//! before it acks: a crash before the ack redelivers the message, and the
//! deliveries' UNIQUE (endpoint, event) makes that a no-op. [`deliver`]
//! sends what is due: it leases each delivery past the attempt's timeout
//! first, so one whose sender died is sent again once the lease passes,
//! then POSTs the event's envelope (the bytes the relay published, the
//! same on every attempt) with `webhook-id` = the event id, and records the
//! attempt: a 2xx within the timeout is delivered; anything else (an error
//! status, a timeout, a refused or cut connection, a redirect: none is
//! followed) is retried on the schedule (`WEBHOOK_SCHEDULE`, with jitter),
//! and failed once it runs out. Order across events is not promised.
//!
//! Isolation: a scan leases at most `WEBHOOK_PER_ENDPOINT` deliveries of any
//! one endpoint and sends up to `WEBHOOK_CONCURRENCY` at once, each bounded
//! by the timeout, so a slow or dead endpoint holds up only its own. The
//! destination is checked again before each attempt against what its name
//! resolves to then (DNS rebinding), and the connection goes to exactly
//! those addresses; answers are read up to 1 KiB.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::stream::{self, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use ledger::events::Envelope;
use ledger::webhook_deliveries::{After, Attempt, Due};
use ledger::TenantId;
use rand::Rng;

use crate::config::Config;
use crate::metrics::{self, Outcome};
use crate::shutdown::{backoff, supervise, Shutdown};
use crate::{consumer, outage};
use crate::{crash_point, in_database, within, Error};

pub const CONSUMER: &str = "webhooks";

/// How much of an endpoint's answer is read and kept.
const EXCERPT: usize = 1024;

/// Wakes this process's delivery loop ([`deliver`]) when the fan-out
/// ([`run`]) has made deliveries, rather than leaving them to its next scan
/// (`WEBHOOK_POLL_MS` later). A wake while the loop is sending is kept for
/// its next wait. Deliveries made by another process wait for the scan.
pub type Wake = std::sync::Arc<tokio::sync::Notify>;

/// Consumes the `webhooks` queue until shutdown, making each event's
/// deliveries.
pub async fn run(config: Config, pool: Pool, shutdown: Shutdown, wake: Wake) {
    let bound = config.database_bound();
    supervise("webhooks worker", shutdown, |stop, connected| {
        let (config, pool, wake) = (config.clone(), pool.clone(), wake.clone());
        async move {
            let held = stop.clone();
            consumer::consume(
                &config,
                |n| &n.webhooks,
                CONSUMER,
                stop,
                connected,
                |delivery| fan_out(pool.clone(), bound, delivery, held.clone(), wake.clone()),
            )
            .await
        }
    })
    .await
}

/// Makes one event's deliveries, then acks it. A message that is no
/// envelope never will be: dead-lettered.
async fn fan_out(
    pool: Pool,
    bound: Duration,
    delivery: Delivery,
    mut shutdown: Shutdown,
    wake: Wake,
) -> Result<(), Error> {
    let envelope: Envelope<serde_json::Value> = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "unparseable message dead-lettered");
            within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            metrics::consumed(CONSUMER, Outcome::DeadLettered);
            return Ok(());
        }
    };
    let work = || {
        in_database("the webhook deliveries of an event", bound, async {
            let client = pool.get().await?;
            let tenant = TenantId(envelope.tenant_id);
            let scheduled = ledger::webhook_deliveries::schedule(
                &**client,
                tenant,
                envelope.message_id,
                &envelope.event_type,
                &delivery.data,
            )
            .await?;
            Ok::<_, Error>(scheduled)
        })
    };
    match outage::through("the webhook deliveries of an event", &mut shutdown, work).await {
        // shutting down while the database is away: the delivery returns to its queue
        None => Ok(()),
        Some(Ok(scheduled)) => {
            if scheduled > 0 {
                wake.notify_one();
            }
            within("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
            // applied: no delivery made is an event no endpoint wants, or a
            // redelivery whose deliveries exist (the two look alike here)
            tracing::debug!(message_id = %envelope.message_id, scheduled, "webhook deliveries made");
            metrics::consumed(CONSUMER, Outcome::Applied);
            Ok(())
        }
        Some(Err(e)) => Err(e),
    }
}

/// The waits of `WEBHOOK_SCHEDULE`.
pub fn schedule(config: &Config) -> Vec<Duration> {
    config
        .webhook_schedule
        .split(',')
        .filter_map(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .collect()
}

/// Sends due deliveries until shutdown: a scan every `WEBHOOK_POLL_MS`, at
/// once again after a full one or when this process's fan-out made some
/// (`wake`).
pub async fn deliver(config: Config, pool: Pool, mut shutdown: Shutdown, wake: Wake) {
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(config.webhook_timeout_ms))
        .user_agent(concat!("ledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: the HTTP client could not be built");
            return;
        }
    };
    let poll = Duration::from_millis(config.webhook_poll_ms);
    let mut failures = 0;
    while !shutdown.is_set() {
        let wait = match once(&config, &pool, &http).await {
            Ok(n) if n >= config.webhook_concurrency => Duration::ZERO,
            Ok(_) => {
                failures = 0;
                poll
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "webhooks: scan failed");
                backoff(failures)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                more = shutdown.sleep(wait) => if !more { break },
                () = wake.notified() => {}
            }
        }
    }
}

/// One scan: leases what is due and sends it, up to `WEBHOOK_CONCURRENCY`
/// at once. Returns how many it sent.
pub async fn once(config: &Config, pool: &Pool, http: &reqwest::Client) -> Result<usize, Error> {
    let timeout = Duration::from_millis(config.webhook_timeout_ms);
    // past the attempt's timeout and the resolution before it: a delivery
    // still leased is being sent, one past its lease lost its sender
    let lease = timeout * 2 + Duration::from_secs(5);
    let due = {
        let client = pool.get().await?;
        let limit = config.webhook_concurrency as i64;
        ledger::webhook_deliveries::claim_due(&**client, lease, limit, config.webhook_per_endpoint.max(1) as i64)
            .await?
    };
    let sent = due.len();
    let schedule = schedule(config);
    let results: Vec<Result<(), Error>> = stream::iter(due)
        .map(|d| attempt(config, pool, http, &schedule, d))
        .buffer_unordered(config.webhook_concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(sent)
}

/// One attempt of one delivery, and its record.
async fn attempt(
    config: &Config,
    pool: &Pool,
    http: &reqwest::Client,
    schedule: &[Duration],
    due: Due,
) -> Result<(), Error> {
    let attempt = send(config, http, &due).await;
    // sent, nothing recorded: the lease lets it go again (at least once)
    crash_point("webhooks-after-send");
    let next = schedule.get(due.attempts as usize).map(|wait| {
        let jitter = rand::rng().random_range(0.0..=0.1);
        wait.mul_f64(1.0 + jitter)
    });
    let mut client = pool.get().await?;
    let after = ledger::webhook_deliveries::record(&**client, &due, &attempt, next).await?;
    if !attempt.delivered() {
        let tx = client.transaction().await?;
        let window = Duration::from_secs(config.webhook_disable_after_secs);
        let disabled = ledger::webhook_deliveries::disable_if_failing(&tx, due.endpoint_id, window).await?;
        tx.commit().await?;
        if let Some(d) = disabled {
            ::metrics::counter!("ledger_webhook_endpoints_disabled_total").increment(1);
            tracing::warn!(endpoint = %d.id, url = %d.url, failing_since = %d.failing_since,
                           "webhooks: an endpoint failing for too long is disabled");
        }
    }
    let outcome = match after {
        After::Delivered => "delivered",
        After::Retry(_) => "retried",
        After::Failed => "failed",
    };
    ::metrics::counter!("ledger_webhook_attempts_total", "outcome" => outcome).increment(1);
    ::metrics::histogram!("ledger_webhook_attempt_seconds").record(attempt.latency.as_secs_f64());
    tracing::info!(endpoint = %due.endpoint_id, message_id = %due.message_id, status = ?attempt.status,
                   error = ?attempt.error, outcome, "webhook attempt");
    Ok(())
}

/// POSTs a delivery once, signed with every live secret of its endpoint.
async fn send(config: &Config, http: &reqwest::Client, due: &Due) -> Attempt {
    let started = Instant::now();
    let failed =
        |error: String| Attempt { status: None, latency: started.elapsed(), excerpt: None, error: Some(error) };
    let destination = match service::destinations::check(&due.url, config.webhook_allow_private).await {
        Ok(d) => d,
        Err(refused) => return failed(refused.to_string()),
    };
    let id = due.message_id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let secrets: Vec<&str> = due.secrets.iter().map(String::as_str).collect();
    let signature = match service::signing::header(&secrets, &id, timestamp, &due.payload) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    // the connection goes to the addresses just checked, not to whatever
    // the name resolves to a moment later
    let client = match destination.url.host_str() {
        Some(host) if host.parse::<std::net::IpAddr>().is_err() => {
            match reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_millis(config.webhook_timeout_ms))
                .resolve_to_addrs(host, &destination.addrs)
                .build()
            {
                Ok(c) => c,
                Err(e) => return failed(e.to_string()),
            }
        }
        _ => http.clone(),
    };
    let response = client
        .post(destination.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(due.payload.clone())
        .send()
        .await;
    match response {
        Err(e) => failed(if e.is_timeout() { "timed out".to_owned() } else { e.to_string() }),
        Ok(mut res) => {
            let status = res.status().as_u16();
            let mut body = Vec::new();
            while body.len() < EXCERPT {
                match res.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body.truncate(EXCERPT);
            Attempt {
                status: Some(status),
                latency: started.elapsed(),
                excerpt: Some(String::from_utf8_lossy(&body).into_owned()),
                error: None,
            }
        }
    }
}
