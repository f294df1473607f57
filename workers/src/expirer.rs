//! The expirer: voids authorizations whose deadline has passed (reason
//! `expired`), giving their hold back to the buyer, once each; and releases
//! held reservations past their deadline whose order no charge holds (stock
//! held for a checkout that was never paid comes back).
//!
//! Each is voided in its own transaction under the charge's row lock
//! (`ledger::holds::expire`), which first reads the charge's status: a
//! capture or a void that got there first wins, and the expirer writes
//! nothing. Two expirers may scan the same charges; the second finds them
//! voided. A capture after the deadline is refused by the database's clock
//! even before the expirer has run, so a late capture and an expiry never
//! both win.

use std::time::Duration;

use deadpool_postgres::Pool;
use ledger::TenantId;
use uuid::Uuid;

use crate::config::Config;
use crate::shutdown::{backoff, Shutdown};
use crate::Error;

/// Authorizations voided per scan.
const BATCH: i64 = 100;

/// Runs until shutdown: a scan every `EXPIRER_POLL_MS`, at once again after
/// a full batch.
pub async fn run(config: Config, pool: Pool, mut shutdown: Shutdown) {
    let poll = Duration::from_millis(config.expirer_poll_ms);
    let mut failures = 0;
    while !shutdown.is_set() {
        let wait = match crate::in_database("an expirer scan", config.database_bound(), once(&pool)).await {
            Ok(scanned) if scanned as i64 >= BATCH => Duration::ZERO,
            Ok(_) => {
                failures = 0;
                poll
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "expirer: scan failed");
                backoff(failures)
            }
        };
        if !wait.is_zero() && !shutdown.sleep(wait).await {
            break;
        }
    }
}

/// One scan: voids each authorization past its deadline that nothing else
/// ended first, then releases each reservation past its deadline that no
/// charge holds. Returns how many it found due.
pub async fn once(pool: &Pool) -> Result<usize, Error> {
    let (due, stock) = {
        let client = pool.get().await?;
        (ledger::holds::due(&**client, BATCH).await?, ledger::inventory::due(&**client, BATCH).await?)
    };
    for (tenant, id) in &due {
        if expire(pool, *tenant, *id).await? {
            // voided and committed: a crash here leaves the rest of the scan to the next one
            crate::crash_point("expirer-after-void");
            metrics::counter!("ledger_authorizations_expired_total").increment(1);
            tracing::info!(charge_id = %id, "expirer: authorization expired, its hold released");
        }
    }
    for (tenant, id) in &stock {
        if release(pool, *tenant, *id).await? {
            metrics::counter!("ledger_reservations_expired_total").increment(1);
            tracing::info!(reservation_id = %id, "expirer: reservation expired, its stock released");
        }
    }
    Ok(due.len().max(stock.len()))
}

async fn release(pool: &Pool, tenant: TenantId, id: Uuid) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let released = ledger::inventory::expire(&tx, tenant, id).await?;
    tx.commit().await?;
    Ok(released.is_some())
}

async fn expire(pool: &Pool, tenant: TenantId, id: Uuid) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let voided = ledger::holds::expire(&tx, tenant, id).await?;
    tx.commit().await?;
    Ok(voided.is_some())
}
