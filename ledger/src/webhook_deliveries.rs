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

use crate::pagination::{Cursor, Page};
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
/// slow endpoint with a backlog takes a bounded share of a scan. Each
/// live endpoint's oldest due deliveries are read from its own range of
/// `webhook_deliveries_endpoint_due`, then the oldest of those win: a
/// backlog older than everything else (a dead endpoint's) never fills the
/// scan's view of what is due. A
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
            "WITH picked AS ( \
                 SELECT x.id FROM webhook_endpoints e \
                  CROSS JOIN LATERAL ( \
                        SELECT d.id, d.next_attempt_at FROM webhook_deliveries d \
                         WHERE d.endpoint_id = e.id AND d.delivered_at IS NULL AND d.failed_at IS NULL \
                           AND d.next_attempt_at <= now() \
                         ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED) x \
                  WHERE e.enabled AND e.deleted_at IS NULL \
                  ORDER BY x.next_attempt_at LIMIT $2 \
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
/// schedule has none left (`None`). The endpoint's `failing_since` is
/// written only when it changes (set by a failure of a healthy endpoint,
/// cleared by a delivery to a failing one): every attempt writing it made
/// the records of one endpoint queue on its row's lock, one commit after
/// another, until a scan's records outlasted the pool's wait.
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
             ), f AS ( \
                 UPDATE webhook_endpoints \
                    SET failing_since = CASE WHEN $7 THEN NULL ELSE now() END \
                  WHERE id = $2 AND (failing_since IS NULL) = NOT $7 \
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

/// Disables an endpoint that has failed every attempt for longer than
/// `after` (since its `failing_since`), and records
/// `webhook_endpoint.disabled`, in `tx`. `None`: it is not failing that
/// long, or is disabled or deleted already.
pub async fn disable_if_failing(
    tx: &deadpool_postgres::Transaction<'_>,
    endpoint: Uuid,
    after: Duration,
) -> Result<Option<crate::events::WebhookEndpointDisabledV1>> {
    let row = tx
        .query_opt(
            "UPDATE webhook_endpoints \
                SET enabled = false, updated_at = now(), \
                    disabled_reason = 'every delivery attempt failed from ' || failing_since || ' on' \
              WHERE id = $1 AND enabled AND deleted_at IS NULL \
                AND failing_since < now() - make_interval(secs => $2) \
             RETURNING tenant_id, id, url, failing_since, now()",
            &[&endpoint, &after.as_secs_f64()],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let event = crate::events::WebhookEndpointDisabledV1 {
        id: row.get(1),
        url: row.get(2),
        failing_since: row.get(3),
        disabled_at: row.get(4),
    };
    crate::outbox::enqueue(tx, TenantId(row.get(0)), None, &event).await?;
    Ok(Some(event))
}

/// An enabled endpoint that is failing, or has a delivery waiting.
#[derive(Debug, Clone)]
pub struct Health {
    pub endpoint: Uuid,
    /// For how long every attempt has failed (0 when not failing).
    pub failing_secs: f64,
    /// The age of its oldest delivery not yet delivered nor failed.
    pub oldest_undelivered_secs: f64,
}

/// The enabled endpoints that are failing or have deliveries waiting: what
/// the workers' metrics report per endpoint.
pub async fn health(client: &impl GenericClient) -> Result<Vec<Health>> {
    let rows = client
        .query(
            "SELECT e.id, coalesce(extract(epoch FROM now() - e.failing_since), 0)::float8, \
                    coalesce((SELECT extract(epoch FROM now() - min(d.created_at)) FROM webhook_deliveries d \
                               WHERE d.endpoint_id = e.id AND d.delivered_at IS NULL AND d.failed_at IS NULL), 0)::float8 \
               FROM webhook_endpoints e \
              WHERE e.enabled AND e.deleted_at IS NULL \
                AND (e.failing_since IS NOT NULL \
                     OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id \
                                  AND d.delivered_at IS NULL AND d.failed_at IS NULL))",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Health { endpoint: r.get(0), failing_secs: r.get(1), oldest_undelivered_secs: r.get(2) })
        .collect())
}

/// One attempt as the attempts list shows it.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub id: i64,
    pub message_id: Uuid,
    pub event_type: String,
    pub attempted_at: DateTime<Utc>,
    pub status: Option<i32>,
    pub latency_ms: i32,
    pub excerpt: Option<String>,
    pub error: Option<String>,
}

/// A page of an endpoint's attempts, newest first: those older than
/// `after` (an attempt id), or newer than `before`, or the newest. Returns
/// the page and whether the list goes on in the direction read. An id that
/// is not one of the endpoint's attempts is `WebhookAttemptNotFound`.
pub async fn attempts(
    client: &impl GenericClient,
    endpoint: Uuid,
    cursor: Cursor<i64>,
    limit: i64,
) -> Result<Page<AttemptRow>> {
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM webhook_attempts WHERE id = $1 AND endpoint_id = $2", &[&id, &endpoint])
            .await?;
        if known.is_none() {
            return Err(crate::Error::WebhookAttemptNotFound(id));
        }
    }
    // attempt ids are the list's order: from the cursor (the newest page:
    // below every id) in the direction `Cursor::sql` reads
    let (op, order) = cursor.sql();
    let rows = client
        .query(
            &format!(
                "SELECT a.id, d.message_id, d.event_type, a.attempted_at, a.status_code, a.latency_ms, \
                        a.response_excerpt, a.error \
                   FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
                  WHERE a.endpoint_id = $1 AND a.id {op} $2 ORDER BY a.id {order} LIMIT $3"
            ),
            &[&endpoint, &cursor.item().unwrap_or(i64::MAX), &(limit + 1)],
        )
        .await?;
    let attempts = rows
        .iter()
        .map(|r| AttemptRow {
            id: r.get(0),
            message_id: r.get(1),
            event_type: r.get(2),
            attempted_at: r.get(3),
            status: r.get(4),
            latency_ms: r.get(5),
            excerpt: r.get(6),
            error: r.get(7),
        })
        .collect();
    Ok(Page::read(attempts, limit, cursor))
}

/// Sends an event again: to `endpoint`, or to every live, enabled endpoint
/// of the tenant subscribed to its type. A delivery already made (sent or
/// failed) starts over from its first attempt, due now; one not made yet
/// (an endpoint registered after the event) is made. Its earlier attempts
/// stay in the log. Returns the endpoints it goes to.
pub async fn redeliver(
    client: &impl GenericClient,
    tenant: TenantId,
    message_id: Uuid,
    event_type: &str,
    payload: &[u8],
    endpoint: Option<Uuid>,
) -> Result<Vec<Uuid>> {
    let rows = client
        .query(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, message_id, event_type, payload) \
             SELECT $1, e.id, $2, $3, $4 FROM webhook_endpoints e \
              WHERE e.tenant_id = $1 AND e.deleted_at IS NULL \
                AND CASE WHEN $5::uuid IS NULL \
                         THEN e.enabled AND ($3 = ANY(e.enabled_events) OR $6 = ANY(e.enabled_events)) \
                         ELSE e.id = $5::uuid END \
             ON CONFLICT (endpoint_id, message_id) DO UPDATE \
                SET delivered_at = NULL, failed_at = NULL, attempts = 0, next_attempt_at = now() \
             RETURNING endpoint_id",
            &[&tenant.0, &message_id, &event_type, &payload, &endpoint, &ALL],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
