//! What each consumer has already handled. A message is recorded in the
//! same transaction as the consumer's effect, so a redelivery or a
//! republished duplicate finds itself here and changes nothing.

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::Cached;
use crate::retention::purge_in_batches;
use crate::Result;

/// Records `message_id` for `consumer` within `tx`; false when it was
/// already there (the message was handled before: do nothing).
pub async fn record(tx: &Transaction<'_>, consumer: &str, message_id: Uuid) -> Result<bool> {
    let inserted = tx
        .cached_execute(
            "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&consumer, &message_id],
        )
        .await?;
    Ok(inserted == 1)
}

/// Records every one of `message_ids` for `consumer` within `tx` in one
/// statement; returns those that were not there yet (the others were handled
/// before, or appear earlier in `message_ids`: do nothing for them).
pub async fn record_many(tx: &Transaction<'_>, consumer: &str, message_ids: &[Uuid]) -> Result<Vec<Uuid>> {
    let rows = tx
        .cached_query(
            "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::uuid[]) \
             ON CONFLICT DO NOTHING RETURNING message_id",
            &[&consumer, &message_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes inbox rows older than the retention, a bounded batch per
/// statement so that no statement holds many locks; returns how many.
pub async fn purge(client: &impl GenericClient, retention_secs: f64) -> Result<u64> {
    Ok(purge_in_batches(
        client,
        "DELETE FROM inbox i USING ( \
             SELECT consumer, message_id FROM inbox \
              WHERE received_at < now() - make_interval(secs => $1) \
              LIMIT $2 FOR UPDATE SKIP LOCKED) old \
          WHERE i.consumer = old.consumer AND i.message_id = old.message_id",
        retention_secs,
    )
    .await?)
}
