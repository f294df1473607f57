//! The event feed: a tenant's events as the outbox holds them, one at a
//! time or a page at a time, so that a client can catch up without a
//! message broker. An event is the outbox row's message ([`Message`]), read
//! as the relay reads it: its body is the envelope the relay publishes, byte
//! for byte. The feed keeps what the outbox keeps: a published row goes
//! `OUTBOX_RETENTION_SECS` after its first publication (`purge_published`).
//!
//! Order: the outbox's `id`, a sequence the database draws at each insert,
//! is the order the events were written in, whichever process wrote them
//! (the relay publishes in that order too). The message id is a UUIDv7 of
//! the writing process's clock, so between processes its order is only as
//! good as their clocks: the feed orders by `id`, and a cursor (a message
//! id) stands for its row's `id`.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::outbox::{message, Message, MESSAGE_COLUMNS};
use crate::pagination::{Cursor, Page};
use crate::{Error, Result, TenantId};

/// Which of a tenant's events a page lists; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct EventFilter<'a> {
    /// Exactly this event type (`charge.succeeded`).
    pub event_type: Option<&'a str>,
    /// Written at or after (the outbox row's `created_at`).
    pub created_gte: Option<DateTime<Utc>>,
    /// Written before.
    pub created_lt: Option<DateTime<Utc>>,
}

/// One of the tenant's events, by its message id.
pub async fn get(client: &impl GenericClient, tenant: TenantId, message_id: Uuid) -> Result<Message> {
    let row = client
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM outbox WHERE message_id = $1 AND tenant_id = $2"),
            &[&message_id, &tenant.0],
        )
        .await?
        .ok_or(Error::EventNotFound(message_id))?;
    Ok(message(&row))
}

/// A page of the tenant's events, newest first, from `cursor`: the message
/// id of one of the tenant's events (else `EventNotFound`, as for any id
/// that is not the tenant's, so a cursor never reaches another tenant's
/// rows). One probe of the unique message id, then one range of
/// `(tenant_id, id)`, or of `(tenant_id, event_type, id)` with a type.
///
/// Planned for its values (`plan_cache_mode = force_custom_plan`, for its
/// own transaction): the pool's sessions plan every statement once,
/// generically, and a generic plan of this page does not know the tenant
/// nor the type, so it walks the outbox by `id` and filters, through every
/// other tenant's rows down to the cursor. Planned with the values, a page
/// is one index range.
pub async fn list(
    client: &mut deadpool_postgres::Client,
    tenant: TenantId,
    filter: &EventFilter<'_>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Message>> {
    let (op, order) = cursor.sql();
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan").await?;
    let bound: Option<i64> = match cursor.item() {
        None => None,
        Some(message_id) => Some(
            tx.query_opt("SELECT id FROM outbox WHERE message_id = $1 AND tenant_id = $2", &[&message_id, &tenant.0])
                .await?
                .ok_or(Error::EventNotFound(message_id))?
                .get(0),
        ),
    };
    let rows = tx
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM outbox \
                  WHERE tenant_id = $1 \
                    AND ($2::text IS NULL OR event_type = $2) \
                    AND ($3::timestamptz IS NULL OR created_at >= $3) \
                    AND ($4::timestamptz IS NULL OR created_at < $4) \
                    AND ($5::bigint IS NULL OR id {op} $5) \
                  ORDER BY id {order} LIMIT $6"
            ),
            &[&tenant.0, &filter.event_type, &filter.created_gte, &filter.created_lt, &bound, &(limit + 1)],
        )
        .await?;
    tx.commit().await?;
    Ok(Page::read(rows.iter().map(message).collect(), limit, cursor))
}
