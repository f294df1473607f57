//! Replay: republish outbox events through the live path.
//!
//! Replay writes no business effect. It marks the chosen outbox rows
//! unpublished again, a bounded batch per statement, and the relay (at its
//! next poll) publishes them as it publishes any row: same `message_id`, same
//! payload, with publisher confirms. The consumers' inboxes absorb what they
//! already handled and process only what they missed. The email worker
//! claims one email per order, so a replay never resends an email that was
//! sent or claimed (lost emails are `reconcile-emails`' job).
//!
//! Only rows first published within OUTBOX_RETENTION_SECS can be replayed,
//! and the inbox outlives that window (see `ledger::retention`). The window
//! runs from a row's first publication, not its last: a row replayed before
//! is not replayable for longer, and a replayed row the relay has not
//! republished when its window ends is never published (the purge takes it).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ledger::outbox::{Published, ReplayFilter};
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
    /// Only events first published less than this long ago (the command sets
    /// OUTBOX_RETENTION_SECS). Without it the selection ignores the window,
    /// and the relay still never republishes a row past it.
    #[arg(skip)]
    pub window: Option<std::time::Duration>,
}

impl Filter {
    fn selection(&self) -> ReplayFilter {
        ReplayFilter {
            tenant: self.tenant,
            order: self.order.clone(),
            since: self.since,
            until: self.until,
            event_type: self.event_type.clone(),
            window_secs: self.window.map(|w| w.as_secs_f64()),
        }
    }

    /// A replay of everything would be a mistake more often than a wish.
    pub fn is_empty(&self) -> bool {
        self.selection().is_empty()
    }
}

/// The published events the filter selects (what a dry run prints).
pub async fn plan(pool: &Pool, filter: &Filter) -> Result<Vec<Published>, Error> {
    let client = pool.get().await?;
    Ok(ledger::outbox::replay_plan(&**client, &filter.selection()).await?)
}

/// Marks the selected events unpublished, at most PURGE_BATCH rows per
/// statement; returns how many were marked.
pub async fn replay(pool: &Pool, filter: &Filter) -> Result<u64, Error> {
    let client = pool.get().await?;
    let total = ledger::outbox::mark_for_replay(&**client, &filter.selection(), PURGE_BATCH).await?;
    tracing::info!(events = total, "outbox events marked for republishing");
    Ok(total)
}
