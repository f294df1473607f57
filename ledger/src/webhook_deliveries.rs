//! Webhooks out: the deliveries of each event to each live endpoint
//! subscribed to its type, their schedule and their attempts.
//!
//! 1. [`schedule`] (the `webhooks` worker, for each event off its queue)
//!    makes one delivery per endpoint that wants the event; the UNIQUE
//!    (endpoint, event) makes a redelivered message a no-op.
//! 2. [`claim_due`] leases what is due: its `next_attempt_at` moves past
//!    the attempt's timeout in the same statement, so two workers never send
//!    one delivery at once, and one whose sender died is due again after it.
//! 3. [`record`] keeps the attempt and decides what follows: delivered on a
//!    2xx; else the next attempt by the schedule, or failed once it ran out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::webhook_endpoints::ALL;
use crate::{Result, TenantId};

/// Makes the deliveries of one event: one per live, enabled endpoint of the
/// tenant subscribed to its type (or to `*`). Returns how many are new.
pub async fn schedule(
    client: &impl GenericClient,
    tenant: TenantId,
    message_id: Uuid,
    event_type: &str,
    payload: &[u8],
) -> Result<u64> {
    Ok(client
        .execute(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, message_id, event_type, payload) \
             SELECT $1, e.id, $2, $3, $4 FROM webhook_endpoints e \
              WHERE e.tenant_id = $1 AND e.enabled AND e.deleted_at IS NULL \
                AND ($3 = ANY(e.enabled_events) OR $5 = ANY(e.enabled_events)) \
             ON CONFLICT (endpoint_id, message_id) DO NOTHING",
            &[&tenant.0, &message_id, &event_type, &payload, &ALL],
        )
        .await?)
}

/// A delivery leased for one attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub endpoint_id: Uuid,
    pub message_id: Uuid,
    pub url: String,
    pub payload: Vec<u8>,
    /// The attempts made before this one.
    pub attempts: i32,
    /// The current secret, and the previous one while a rotation overlaps.
    pub secrets: Vec<String>,
}

/// Leases up to `limit` due deliveries for `lease` (longer than an
/// attempt's timeout), at most `per_endpoint` of any one endpoint, so a
/// slow endpoint with a backlog takes a bounded share of a scan. A
/// delivery of an endpoint since disabled or deleted is not sent; it waits
/// (it is sent if the endpoint is enabled again).
pub async fn claim_due(
    client: &impl GenericClient,
    lease: Duration,
    limit: i64,
    per_endpoint: i64,
) -> Result<Vec<Due>> {
    let rows = client
        .query(
            "WITH candidates AS ( \
                 SELECT d.id, d.endpoint_id, d.next_attempt_at \
                   FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
                  WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= now() \
                    AND e.enabled AND e.deleted_at IS NULL \
                  ORDER BY d.next_attempt_at LIMIT $2::int8 * 4 FOR UPDATE OF d SKIP LOCKED \
             ), picked AS ( \
                 SELECT id FROM (SELECT id, next_attempt_at, \
                                        row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at) AS n \
                                   FROM candidates) r \
                  WHERE n <= $3 ORDER BY next_attempt_at LIMIT $2 \
             ) \
             UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $1) \
               FROM picked p, webhook_endpoints e \
              WHERE d.id = p.id AND e.id = d.endpoint_id \
             RETURNING d.id, d.endpoint_id, d.message_id, e.url, d.payload, d.attempts, e.secret, \
                       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END",
            &[&lease.as_secs_f64(), &limit, &per_endpoint],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            id: r.get(0),
            endpoint_id: r.get(1),
            message_id: r.get(2),
            url: r.get(3),
            payload: r.get(4),
            attempts: r.get(5),
            secrets: std::iter::once(r.get::<_, String>(6)).chain(r.get::<_, Option<String>>(7)).collect(),
        })
        .collect())
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The endpoint's status code, when it answered.
    pub status: Option<u16>,
    pub latency: Duration,
    /// The first KiB of its answer's body.
    pub excerpt: Option<String>,
    /// Why there was no answer (refused destination, connection, timeout).
    pub error: Option<String>,
}

impl Attempt {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// How an attempt left its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Delivered,
    /// Another attempt at this time.
    Retry(DateTime<Utc>),
    /// The schedule ran out.
    Failed,
}

/// Records an attempt of a leased delivery and what follows it: delivered
/// on a 2xx, else the next attempt `next` from now, or failed when the
/// schedule has none left (`None`).
pub async fn record(
    client: &impl GenericClient,
    due: &Due,
    attempt: &Attempt,
    next: Option<Duration>,
) -> Result<After> {
    let status = attempt.status.map(i32::from);
    let latency = attempt.latency.as_millis().min(i32::MAX as u128) as i32;
    let delivered = attempt.delivered();
    let row = client
        .query_one(
            "WITH a AS ( \
                 INSERT INTO webhook_attempts (delivery_id, endpoint_id, status_code, latency_ms, response_excerpt, error) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
             ) \
             UPDATE webhook_deliveries SET attempts = attempts + 1, \
                    delivered_at = CASE WHEN $7 THEN now() END, \
                    failed_at = CASE WHEN NOT $7 AND $8::float8 IS NULL THEN now() END, \
                    next_attempt_at = CASE WHEN NOT $7 AND $8::float8 IS NOT NULL \
                                           THEN now() + make_interval(secs => $8::float8) ELSE next_attempt_at END \
              WHERE id = $1 RETURNING next_attempt_at",
            &[
                &due.id,
                &due.endpoint_id,
                &status,
                &latency,
                &attempt.excerpt,
                &attempt.error,
                &delivered,
                &next.map(|d| d.as_secs_f64()),
            ],
        )
        .await?;
    Ok(match (delivered, next) {
        (true, _) => After::Delivered,
        (false, Some(_)) => After::Retry(row.get(0)),
        (false, None) => After::Failed,
    })
}
