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
use crate::pagination::{Cursor, Filters, Page};
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
/// `(tenant_id, id)`, or of `(tenant_id, event_type, id)` with a type: the
/// page's statement holds only the filters given, so that its generic plan
/// (the pool's sessions plan every statement generically) knows them
/// ([`Filters`]).
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    filter: &EventFilter<'_>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Message>> {
    let bound: Option<i64> = match cursor.item() {
        None => None,
        Some(message_id) => Some(
            client
                .query_opt("SELECT id FROM outbox WHERE message_id = $1 AND tenant_id = $2", &[&message_id, &tenant.0])
                .await?
                .ok_or(Error::EventNotFound(message_id))?
                .get(0),
        ),
    };
    let (sql, params) = list_statement(tenant, filter, cursor, bound, limit);
    let rows = client.query(&sql, &params.params()).await?;
    Ok(Page::read(rows.iter().map(message).collect(), limit, cursor))
}

/// The statement [`list`] runs for `filter` and `cursor` (its text depends
/// on which filters are given and on the cursor, not on their values).
pub fn list_sql(filter: &EventFilter<'_>, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), filter, cursor, cursor.item().map(|_| 0), 0).0
}

/// A page's statement: the given filters, and the cursor's outbox `id`
/// (`bound`) when the page is read from an event.
fn list_statement<'a>(
    tenant: TenantId,
    filter: &EventFilter<'a>,
    cursor: Cursor,
    bound: Option<i64>,
    limit: i64,
) -> (String, Filters<'a>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("tenant_id =", tenant.0)
        .and_some("event_type =", filter.event_type)
        .and_some("created_at >=", filter.created_gte)
        .and_some("created_at <", filter.created_lt)
        .cursor("id", cursor, bound);
    let limit = w.bind(limit + 1);
    (format!("SELECT {MESSAGE_COLUMNS} FROM outbox WHERE {} ORDER BY id {order} LIMIT {limit}", w.sql()), w)
}
