//! Replay: republish outbox events through the live path.
//!
//! Replay writes no business effect. It marks the chosen outbox rows
//! unpublished again, a bounded batch per statement, and wakes the relay,
//! which publishes them as it publishes any row: same `message_id`, same
//! payload, with publisher confirms. The consumers' inboxes absorb what they
//! already handled and process only what they missed. The email worker
//! claims one email per order, so a replay never resends an email that was
//! sent or claimed (lost emails are `reconcile-emails`' job).
//!
//! Only rows the outbox still holds can be replayed: OUTBOX_RETENTION_SECS
//! bounds how far back, and the inbox outlives it (see `ledger::retention`).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ledger::retention::PURGE_BATCH;
use uuid::Uuid;

use crate::Error;

/// Which outbox events to replay; every field narrows the selection.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<Uuid>,
    /// Only this order's events.
    #[arg(long)]
    pub order: Option<String>,
    /// Only events written at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only events written before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only events of this type, e.g. charge.succeeded.
    #[arg(long = "type")]
    pub event_type: Option<String>,
}

/// One event a replay republishes.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub order_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const WHERE: &str = "published_at IS NOT NULL \
     AND ($1::uuid IS NULL OR tenant_id = $1) \
     AND ($2::text IS NULL OR order_id = $2) \
     AND ($3::timestamptz IS NULL OR created_at >= $3) \
     AND ($4::timestamptz IS NULL OR created_at < $4) \
     AND ($5::text IS NULL OR event_type = $5) \
     AND id > $6";

impl Filter {
    /// A replay of everything would be a mistake more often than a wish.
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.order.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.event_type.is_none()
    }
}

/// The published events the filter selects (what a dry run prints).
pub async fn plan(pool: &Pool, filter: &Filter) -> Result<Vec<Event>, Error> {
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let rows = client
        .query(
            &format!(
                "SELECT id, message_id, tenant_id, event_type, order_id, created_at FROM outbox WHERE {WHERE} ORDER BY id"
            ),
            &[&filter.tenant, &filter.order, &filter.since, &filter.until, &filter.event_type, &0i64],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            id: r.get(0),
            message_id: r.get(1),
            tenant_id: r.get(2),
            event_type: r.get(3),
            order_id: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

/// Marks the selected events unpublished, at most PURGE_BATCH rows per
/// statement, and wakes the relay; returns how many were marked.
pub async fn replay(pool: &Pool, filter: &Filter) -> Result<u64, Error> {
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let mut total = 0u64;
    // Walk by id, so that a row the relay republishes (and marks again)
    // while the replay runs is not selected a second time.
    let mut after = 0i64;
    loop {
        let marked = client
            .query(
                &format!(
                    "UPDATE outbox SET published_at = NULL WHERE id IN ( \
                         SELECT id FROM outbox WHERE {WHERE} ORDER BY id LIMIT $7) \
                     RETURNING id"
                ),
                &[
                    &filter.tenant,
                    &filter.order,
                    &filter.since,
                    &filter.until,
                    &filter.event_type,
                    &after,
                    &PURGE_BATCH,
                ],
            )
            .await?;
        if marked.is_empty() {
            break;
        }
        total += marked.len() as u64;
        after = marked.iter().map(|r| r.get::<_, i64>(0)).max().unwrap_or(after);
        client.execute("SELECT pg_notify('outbox', '')", &[]).await?;
    }
    tracing::info!(events = total, "outbox events marked for republishing");
    Ok(total)
}
