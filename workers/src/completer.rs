//! The completer: finishes card charges left `processing`, card refunds
//! left `pending`, and card authorizations left `capturing` or `voiding` (a
//! lost provider answer, a client that never retried, a
//! process that died between the provider call and its second transaction).
//!
//! It takes charges whose lease has passed (`ledger::cards::claim_stale`,
//! which leases them again, so two completers never take one charge at
//! once), asks the provider with the charge's own provider key (past the
//! provider's key window it looks the payment up by its metadata before it
//! ever sends again; `service::provider`), and records the answer under the
//! charge's row lock (`ledger::cards::complete`). A client retrying the same
//! charge meanwhile sends the same key, and whichever second transaction
//! comes second finds the charge final and writes nothing: one provider
//! payment, one ledger transaction. An unknown outcome leaves the charge for
//! the next lease.

use std::time::Duration;

use deadpool_postgres::Pool;
pub use service::effects::Done;
use service::effects::{complete_stale, CardCapture, CardCharge, CardRefund, CardVoid};
use service::provider::Provider;

use crate::config::Config;
use crate::shutdown::{backoff, Shutdown};
use crate::Error;

/// Effects of each kind taken per scan.
const BATCH: i64 = 50;
/// The crash point between the provider's answer and its record.
const AFTER_PROVIDER: &str = "completer-after-provider";

/// Runs until shutdown: a scan every `COMPLETER_POLL_MS`, at once again
/// after a full batch.
pub async fn run(config: Config, pool: Pool, mut shutdown: Shutdown) {
    let payments = match Provider::new(&config.gateway) {
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

/// One scan: takes the card charges, the card refunds and the ends of card
/// authorizations whose lease passed and drives each once, through the protocol every effect at the
/// provider shares (`service::effects`).
pub async fn once(pool: &Pool, payments: &Provider) -> Result<Vec<Done>, Error> {
    let mut done = complete_stale::<CardCharge>(pool, payments, BATCH, AFTER_PROVIDER).await?;
    done.extend(complete_stale::<CardRefund>(pool, payments, BATCH, AFTER_PROVIDER).await?);
    done.extend(complete_stale::<CardCapture>(pool, payments, BATCH, AFTER_PROVIDER).await?);
    done.extend(complete_stale::<CardVoid>(pool, payments, BATCH, AFTER_PROVIDER).await?);
    Ok(done)
}
