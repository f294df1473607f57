//! The one purge loop: rows past their retention window, deleted a bounded
//! batch per statement (the statements are `ledger`'s), on an interval,
//! until shutdown. The API runs it for Idempotency-Keys, the inventory
//! worker for its inbox.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::shutdown::Shutdown;

/// What a purge deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Idempotency-Keys older than IDEMPOTENCY_RETENTION_SECS.
    IdempotencyKeys,
    /// Inbox rows older than INBOX_RETENTION_SECS.
    Inbox,
    /// Published outbox rows older than OUTBOX_RETENTION_SECS.
    PublishedOutbox,
}

impl Target {
    fn what(self) -> &'static str {
        match self {
            Target::IdempotencyKeys => "expired idempotency keys",
            Target::Inbox => "expired inbox rows",
            Target::PublishedOutbox => "published outbox rows",
        }
    }
}

/// Deletes `target`'s rows older than `retention` now; returns how many.
pub async fn once(pool: &Pool, target: Target, retention: Duration) -> ledger::Result<u64> {
    let client = pool.get().await?;
    let secs = retention.as_secs_f64();
    let n = match target {
        Target::IdempotencyKeys => ledger::idempotency::purge_expired(&**client, secs).await?,
        Target::Inbox => ledger::inbox::purge(&**client, secs).await?,
        Target::PublishedOutbox => ledger::outbox::purge_published(&**client, secs).await?,
    };
    if n > 0 {
        tracing::info!(removed = n, "purged {}", target.what());
    }
    Ok(n)
}

/// Purges `target` every `every` until shutdown; a failure is logged and
/// retried at the next tick.
pub async fn run(pool: Pool, target: Target, retention: Duration, every: Duration, mut shutdown: Shutdown) {
    loop {
        if let Err(e) = once(&pool, target, retention).await {
            tracing::warn!(error = %e, "purge of {} failed; will retry", target.what());
        }
        if !shutdown.sleep(every).await {
            return;
        }
    }
}
