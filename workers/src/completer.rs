//! The completer: finishes card charges left `processing` (a lost provider
//! answer, a client that never retried, a process that died between the
//! provider call and its second transaction).
//!
//! It takes charges whose lease has passed (`ledger::cards::claim_stale`,
//! which leases them again, so two completers never take one charge at
//! once), asks the provider with the charge's own provider key (past the
//! provider's key window it looks the payment up by its metadata before it
//! ever sends again; `service::payments`), and records the answer under the
//! charge's row lock (`ledger::cards::complete`). A client retrying the same
//! charge meanwhile sends the same key, and whichever second transaction
//! comes second finds the charge final and writes nothing: one provider
//! payment, one ledger transaction. An unknown outcome leaves the charge for
//! the next lease.

use std::time::Duration;

use deadpool_postgres::Pool;
use ledger::cards::{Completion, Owned};
use service::payments::{Asked, Payments};

use crate::config::Config;
use crate::shutdown::{backoff, Shutdown};
use crate::Error;

/// Charges taken per scan.
const BATCH: i64 = 50;

/// What one charge came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its final status is recorded (now, or by someone else first).
    Final,
    /// Still no answer: left for the next lease.
    Unknown,
}

/// Runs until shutdown: a scan every `COMPLETER_POLL_MS`, at once again
/// after a full batch.
pub async fn run(config: Config, pool: Pool, mut shutdown: Shutdown) {
    let payments = match Payments::new(&config.gateway) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "completer: the payment provider client could not be built");
            return;
        }
    };
    let poll = Duration::from_millis(config.completer_poll_ms);
    // A scan asks the provider too (GATEWAY_TIMEOUT_MS per charge, BATCH
    // charges at most); a scan past this bound is abandoned, and its
    // charges, leased again, wait for the lease to pass.
    let bound = config.database_bound() + Duration::from_millis(config.gateway.gateway_timeout_ms) * BATCH as u32;
    let mut failures = 0;
    while !shutdown.is_set() {
        let wait = match crate::in_database("a completer scan", bound, once(&pool, &payments)).await {
            Ok(done) if done.len() as i64 >= BATCH => Duration::ZERO,
            Ok(_) => {
                failures = 0;
                poll
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "completer: scan failed");
                backoff(failures)
            }
        };
        if !wait.is_zero() && !shutdown.sleep(wait).await {
            break;
        }
    }
}

/// One scan: takes the charges whose lease passed and drives each once.
pub async fn once(pool: &Pool, payments: &Payments) -> Result<Vec<Done>, Error> {
    let stale = {
        let client = pool.get().await?;
        ledger::cards::claim_stale(&**client, payments.lease(), BATCH).await?
    };
    let mut done = Vec::with_capacity(stale.len());
    for owned in stale {
        done.push(complete(pool, payments, owned).await?);
    }
    Ok(done)
}

/// Asks the provider for one charge and records a final answer.
pub async fn complete(pool: &Pool, payments: &Payments, Owned { tenant, charge }: Owned) -> Result<Done, Error> {
    let asked = payments.ask(tenant, &charge).await;
    // the provider answered (or not), nothing of it recorded yet
    crate::crash_point("completer-after-provider");
    let answer = match asked {
        Asked::Answer(answer) => answer,
        Asked::Unknown(why) => {
            tracing::info!(charge = %charge.id, %why, "completer: provider outcome still unknown");
            return Ok(Done::Unknown);
        }
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await.map_err(ledger::Error::from)?;
    let completion = ledger::cards::complete(&tx, tenant, charge.id, Some(&answer)).await?;
    tx.commit().await.map_err(ledger::Error::from)?;
    Ok(match completion {
        Completion::Final(_) => {
            tracing::info!(charge = %charge.id, order = %charge.order_id, "completer: card charge completed");
            Done::Final
        }
        Completion::Processing(_) => Done::Unknown,
    })
}
