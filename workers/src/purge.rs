//! Purges of the consumers' inbox: rows older than INBOX_RETENTION_SECS,
//! deleted a bounded batch per statement so that no statement holds many
//! locks, with a log line of how many went.

use std::time::Duration;

use deadpool_postgres::Pool;
use ledger::retention::purge_in_batches;

use crate::shutdown::Shutdown;
use crate::Error;

/// Deletes inbox rows older than `retention_secs`; returns how many.
pub async fn purge_inbox(pool: &Pool, retention_secs: u64) -> Result<u64, Error> {
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let total = purge_in_batches(
        &**client,
        "DELETE FROM inbox i USING ( \
             SELECT consumer, message_id FROM inbox \
              WHERE received_at < now() - make_interval(secs => $1) \
              LIMIT $2 FOR UPDATE SKIP LOCKED) old \
          WHERE i.consumer = old.consumer AND i.message_id = old.message_id",
        retention_secs as f64,
    )
    .await?;
    if total > 0 {
        tracing::info!(removed = total, "purged expired inbox rows");
    }
    Ok(total)
}

/// Purges the inbox every `every` until shutdown.
pub async fn run(pool: Pool, retention_secs: u64, every: Duration, mut shutdown: Shutdown) {
    loop {
        if let Err(e) = purge_inbox(&pool, retention_secs).await {
            tracing::warn!(error = %e, "inbox purge failed; will retry");
        }
        if !shutdown.sleep(every).await {
            return;
        }
    }
}
