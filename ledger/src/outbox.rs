//! The transactional outbox. Events are written in the caller's transaction,
//! beside the effect they report, so there is never an effect without its
//! event nor an event without its effect. The relay claims, publishes and
//! marks them; replay marks published ones unpublished again.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::db::Cached;
use crate::events::{Envelope, Event};
use crate::pagination::Filters;
use crate::retention::purge_in_batches;
use crate::{Result, TenantId};

/// The statement that writes an event (`ledger-bench` runs it in pgbench too).
pub const ENQUEUE_SQL: &str = "INSERT INTO outbox (message_id, tenant_id, event_type, order_id, payload, request_id) \
                               VALUES ($1, $2, $3, $4, $5, $6)";

/// Writes an event into the outbox within `tx`, with the id of the request
/// it is written for (`request_id`); returns its message id.
pub async fn enqueue<E: Event>(
    tx: &Transaction<'_>,
    tenant: TenantId,
    order_id: Option<&str>,
    data: &E,
) -> Result<Uuid> {
    let (message_id, payload) = envelope(tenant, order_id, data, Utc::now());
    let request_id = crate::request_id::current();
    tx.cached_execute(ENQUEUE_SQL, &[&message_id, &tenant.0, &E::TYPE, &order_id, &payload, &request_id]).await?;
    Ok(message_id)
}

/// A new event's message id and envelope, as the outbox stores it.
fn envelope<E: Event>(
    tenant: TenantId,
    order_id: Option<&str>,
    data: &E,
    occurred_at: DateTime<Utc>,
) -> (Uuid, serde_json::Value) {
    let envelope = Envelope {
        message_id: Uuid::now_v7(),
        event_type: E::TYPE.to_owned(),
        version: E::VERSION,
        tenant_id: tenant.0,
        order_id: order_id.map(str::to_owned),
        occurred_at,
        data,
    };
    (envelope.message_id, serde_json::to_value(&envelope).expect("events serialize"))
}

/// Writes many events of one type in one statement, within `tx` (a batch
/// of requests in one transaction): for each, its tenant, its order and the
/// id of the request it is written for; returns their message ids in order.
pub async fn enqueue_many<E: Event>(
    tx: &Transaction<'_>,
    events: &[(TenantId, Option<&str>, Option<&str>, E)],
) -> Result<Vec<Uuid>> {
    let now = Utc::now();
    let (mut ids, mut tenants, mut orders, mut payloads, mut requests) = (vec![], vec![], vec![], vec![], vec![]);
    for (tenant, order_id, request_id, data) in events {
        let (message_id, payload) = envelope(*tenant, *order_id, data, now);
        payloads.push(payload);
        ids.push(message_id);
        tenants.push(tenant.0);
        orders.push(*order_id);
        requests.push(*request_id);
    }
    tx.cached_execute(
        "INSERT INTO outbox (message_id, tenant_id, event_type, order_id, payload, request_id) \
         SELECT m, t, $3, o, p, r FROM unnest($1::uuid[], $2::uuid[], $4::text[], $5::jsonb[], $6::text[]) \
             AS e(m, t, o, p, r)",
        &[&ids, &tenants, &E::TYPE, &orders, &payloads, &requests],
    )
    .await?;
    Ok(ids)
}

/// An outbox row as a message: what the relay publishes (a row it claimed)
/// and what the event feed serves (`feed`). Both read it with
/// [`MESSAGE_COLUMNS`] and [`message`], so they give the same bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: i64,
    pub message_id: Uuid,
    pub event_type: String,
    /// The envelope's JSON text, the message body: the stored `jsonb` as
    /// PostgreSQL prints it, the same bytes every time it is read.
    pub payload: String,
    /// The request that wrote it, if one did.
    pub request_id: Option<String>,
}

/// The columns of an outbox row that [`message`] reads, in its order.
pub const MESSAGE_COLUMNS: &str = "id, message_id, event_type, payload::text, request_id";

/// The message of a row selected with [`MESSAGE_COLUMNS`].
pub fn message(row: &Row) -> Message {
    Message {
        id: row.get(0),
        message_id: row.get(1),
        event_type: row.get(2),
        payload: row.get(3),
        request_id: row.get(4),
    }
}

/// Claims up to `limit` unpublished events, oldest first, for the lifetime
/// of `tx`. `SKIP LOCKED`: several relays (or two lanes of one) never claim
/// the same row, and none waits for another. Skipped too: a row waiting for
/// its retry (a queue that must have it did not take it), and a row marked
/// for replay whose first publication is older than `window_secs`
/// (OUTBOX_RETENTION_SECS): a copy published now could reach a consumer
/// after its inbox forgot the first one; the purge removes it instead.
pub async fn claim_unpublished(tx: &Transaction<'_>, limit: i64, window_secs: f64) -> Result<Vec<Message>> {
    let rows = tx
        .cached_query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM outbox \
                  WHERE published_at IS NULL AND (retry_at IS NULL OR retry_at <= now()) \
                    AND (first_published_at IS NULL OR first_published_at >= now() - make_interval(secs => $2)) \
                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            &[&limit, &window_secs],
        )
        .await?;
    Ok(rows.iter().map(message).collect())
}

/// Marks claimed events published (after the broker confirmed them into
/// every queue that must have them). The first publication is kept: a
/// replay's republication does not restart the row's retention.
pub async fn mark_published(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    tx.cached_execute(
        "UPDATE outbox SET published_at = now(), first_published_at = coalesce(first_published_at, now()), \
                publish_attempts = 0, retry_at = NULL, last_error = NULL \
          WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(())
}

/// Longest wait before an unroutable event is tried again.
pub const RETRY_MAX_SECS: f64 = 60.0;

/// Leaves claimed events unpublished, each with why (`reasons`, in the same
/// order as `ids`), to be tried again after 1 s, doubling to
/// [`RETRY_MAX_SECS`] per attempt: a queue that must have them did not take
/// them. The claim skips them until then, so they hold back nothing else.
pub async fn defer(tx: &Transaction<'_>, ids: &[i64], reasons: &[String]) -> Result<()> {
    tx.cached_execute(
        "UPDATE outbox o SET publish_attempts = o.publish_attempts + 1, last_error = d.reason, \
                retry_at = now() + make_interval(secs => least($3, power(2.0::float8, least(o.publish_attempts, 30)))) \
           FROM unnest($1::bigint[], $2::text[]) AS d (id, reason) \
          WHERE o.id = d.id",
        &[&ids, &reasons, &RETRY_MAX_SECS],
    )
    .await?;
    Ok(())
}

/// An event held back because a queue that must have it did not take it.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub id: i64,
    pub message_id: Uuid,
    pub event_type: String,
    pub order_id: Option<String>,
    pub publish_attempts: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Every unpublished event the broker returned at least once, oldest first
/// (what an operator looks at when the relay logs unroutable events).
pub async fn deferred(client: &impl GenericClient) -> Result<Vec<Deferred>> {
    let rows = client
        .query(
            "SELECT id, message_id, event_type, order_id, publish_attempts, retry_at, last_error FROM outbox \
              WHERE published_at IS NULL AND publish_attempts > 0 ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Deferred {
            id: r.get(0),
            message_id: r.get(1),
            event_type: r.get(2),
            order_id: r.get(3),
            publish_attempts: r.get(4),
            retry_at: r.get(5),
            last_error: r.get(6),
        })
        .collect())
}

/// Deletes rows first published longer ago than the retention, a bounded
/// batch per statement; returns how many went. By the first publication,
/// not the last: a replayed row keeps the window of its first publication
/// (which its inbox rows, aged from the first receipt, cover), and a row
/// still marked for a replay when that window ends goes too, unpublished.
pub async fn purge_published(client: &impl GenericClient, retention_secs: f64) -> Result<u64> {
    Ok(purge_in_batches(
        client,
        "DELETE FROM outbox WHERE id IN ( \
             SELECT id FROM outbox WHERE first_published_at < now() - make_interval(secs => $1) \
              ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        retention_secs,
    )
    .await?)
}

/// The outbox's backlog, as the workers' metrics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// Events not published yet (waiting for the relay, or for a retry).
    pub unpublished: i64,
    /// Seconds since the oldest of them was written; 0 when there is none.
    pub oldest_age_secs: f64,
}

/// How many events wait for publication and how old the oldest is: the
/// relay's health at a glance (an outbox that only grows, or one old event
/// stuck). A count over the partial index of unpublished rows.
pub async fn backlog(client: &impl GenericClient) -> Result<Backlog> {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) \
               FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await?;
    Ok(Backlog { unpublished: row.get(0), oldest_age_secs: row.get(1) })
}

/// Which published events a replay selects; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub tenant: Option<Uuid>,
    pub order: Option<String>,
    /// Written at or after.
    pub since: Option<DateTime<Utc>>,
    /// Written before.
    pub until: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    /// Only events first published less than this many seconds ago
    /// (OUTBOX_RETENTION_SECS): an older one could reach a consumer after
    /// its inbox row expired. `None` selects by the other fields alone; the
    /// relay still never publishes such a row.
    pub window_secs: Option<f64>,
}

impl ReplayFilter {
    /// A replay of everything would be a mistake more often than a wish.
    pub fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.order.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.event_type.is_none()
    }

    /// The WHERE clause of the rows the filter selects after the row `after`
    /// (by id), only the given filters in its text: a generic plan of one
    /// text for every combination (`$2::text IS NULL OR order_id = $2`)
    /// could read no filter's index (`pagination::Filters`).
    fn selection(&self, after: i64) -> Filters<'_> {
        let mut w = Filters::new();
        w.push("published_at IS NOT NULL".to_owned());
        w.and_some("tenant_id =", self.tenant);
        w.and_some("order_id =", self.order.as_deref());
        w.and_some("created_at >=", self.since);
        w.and_some("created_at <", self.until);
        w.and_some("event_type =", self.event_type.as_deref());
        if let Some(secs) = self.window_secs {
            let p = w.bind(secs);
            w.push(format!("first_published_at >= now() - make_interval(secs => {p})"));
        }
        w.and("id >", after);
        w
    }
}

/// One published event a replay selects.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: i64,
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub order_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The published events the filter selects (what a dry run prints).
pub async fn replay_plan(client: &impl GenericClient, filter: &ReplayFilter) -> Result<Vec<Published>> {
    let w = filter.selection(0);
    let sql = format!(
        "SELECT id, message_id, tenant_id, event_type, order_id, created_at FROM outbox WHERE {} ORDER BY id",
        w.sql()
    );
    let rows = client.query(&sql, &w.params()).await?;
    Ok(rows
        .iter()
        .map(|r| Published {
            id: r.get(0),
            message_id: r.get(1),
            tenant_id: r.get(2),
            event_type: r.get(3),
            order_id: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

/// Marks the selected events unpublished, at most `batch` rows per
/// statement (the relays find them at their next poll); returns how many
/// were marked.
pub async fn mark_for_replay(client: &impl GenericClient, filter: &ReplayFilter, batch: i64) -> Result<u64> {
    let mut total = 0u64;
    // Walk by id, so that a row the relay republishes (and marks again)
    // while the replay runs is not selected a second time.
    let mut after = 0i64;
    loop {
        let mut w = filter.selection(after);
        let limit = w.bind(batch);
        let sql = format!(
            "UPDATE outbox SET published_at = NULL WHERE id IN ( \
                 SELECT id FROM outbox WHERE {} ORDER BY id LIMIT {limit}) \
             RETURNING id",
            w.sql()
        );
        let marked = client.query(&sql, &w.params()).await?;
        if marked.is_empty() {
            return Ok(total);
        }
        total += marked.len() as u64;
        after = marked.iter().map(|r| r.get::<_, i64>(0)).max().unwrap_or(after);
    }
}
