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
//!
//! A card authorization's expiry is a void at the provider: the expirer
//! commits it `voiding` (the same checks, the same lock) and then asks the
//! provider to cancel it, through the protocol every effect there shares
//! (`service::effects`). Killed in between, or left without an answer, the
//! void is the completer's once its lease has passed.

use std::time::Duration;

use deadpool_postgres::Pool;
use ledger::holds::Expired;
use ledger::TenantId;
use service::effects::CardVoid;
use service::provider::Provider;
use uuid::Uuid;

use crate::config::Config;
use crate::shutdown::{backoff, Shutdown};
use crate::Error;

/// Authorizations voided per scan.
const BATCH: i64 = 100;

/// Runs until shutdown: a scan every `EXPIRER_POLL_MS`, at once again after
/// a full batch.
pub async fn run(config: Config, pool: Pool, mut shutdown: Shutdown) {
    let payments = match Provider::new(&config.gateway) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "expirer: the payment provider client could not be built");
            return;
        }
    };
    let poll = Duration::from_millis(config.expirer_poll_ms);
    // a scan may ask the provider to cancel each card authorization it expires
    let bound = config.database_bound() + Duration::from_millis(config.gateway.gateway_timeout_ms) * BATCH as u32;
    let mut failures = 0;
    while !shutdown.is_set() {
        let wait = match crate::in_database("an expirer scan", bound, once(&pool, Some(&payments))).await {
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
/// charge holds. Returns how many it found due. A card authorization is
/// cancelled at the provider with `payments`; without it (wallets only) it
/// is left `voiding` for the completer.
pub async fn once(pool: &Pool, payments: Option<&Provider>) -> Result<usize, Error> {
    let (due, stock) = {
        let client = pool.get().await?;
        (ledger::holds::due(&**client, BATCH).await?, ledger::inventory::due(&**client, BATCH).await?)
    };
    let lease = payments.map_or(Duration::from_secs(30), Provider::lease);
    for (tenant, id) in &due {
        match expire(pool, *tenant, *id, lease).await? {
            None => {}
            Some(Expired::Released(_)) => {
                // voided and committed: a crash here leaves the rest of the scan to the next one
                crate::crash_point("expirer-after-void");
                metrics::counter!("ledger_authorizations_expired_total").increment(1);
                tracing::info!(charge_id = %id, "expirer: authorization expired, its hold released");
            }
            Some(Expired::Cancelling(_)) => {
                // `voiding` and committed, the provider not asked: the completer's once the lease passes
                crate::crash_point("expirer-after-void");
                metrics::counter!("ledger_authorizations_expired_total").increment(1);
                tracing::info!(charge_id = %id, "expirer: card authorization expired, cancelling it at the provider");
                if let Some(payments) = payments {
                    service::effects::drive::<CardVoid>(pool, payments, *tenant, *id, "expirer-after-provider").await?;
                }
            }
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

async fn expire(pool: &Pool, tenant: TenantId, id: Uuid, lease: Duration) -> Result<Option<Expired>, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let expired = ledger::holds::expire(&tx, tenant, id, lease).await?;
    tx.commit().await?;
    Ok(expired)
}
