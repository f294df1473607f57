//! Expired Idempotency-Keys are deleted in small batches, so that the purge
//! never holds many row locks or a long transaction.

use std::time::Duration;

use deadpool_postgres::Pool;

/// Deletes keys older than `retention`; returns how many.
pub async fn purge_expired(pool: &Pool, retention: Duration) -> Result<u64, ledger::Error> {
    let client = pool.get().await?;
    let total = ledger::retention::purge_in_batches(
        &**client,
        "DELETE FROM idempotency_keys k USING ( \
             SELECT tenant_id, key FROM idempotency_keys \
              WHERE created_at < now() - make_interval(secs => $1) \
              LIMIT $2 FOR UPDATE SKIP LOCKED) old \
          WHERE k.tenant_id = old.tenant_id AND k.key = old.key",
        retention.as_secs_f64(),
    )
    .await?;
    Ok(total)
}

pub async fn run(pool: Pool, retention: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match purge_expired(&pool, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "idempotency purge failed; will retry"),
        }
    }
}
