//! The checkpointer: moves the history horizon forward every second and
//! writes the balance checkpoints the entries behind it complete
//! (`ledger::checkpoints`), so that an account's balance at a past instant
//! and each entry's `balance_after` cost index lookups, not its history.
//! Runs beside the expirer (the same role: periodic upkeep of the ledger).
//! Several processes may run it: they take turns on the horizon's row.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::shutdown::{backoff, Shutdown};

const EVERY: Duration = Duration::from_secs(1);

pub async fn run(pool: Pool, mut shutdown: Shutdown) {
    let mut failures = 0;
    while !shutdown.is_set() {
        let pass = async {
            let mut client = pool.get().await?;
            Ok::<_, crate::Error>(ledger::checkpoints::advance(&mut client, ledger::checkpoints::EVERY).await?)
        };
        let wait = match pass.await {
            Ok(written) => {
                failures = 0;
                if let Some(n) = written.filter(|n| *n > 0) {
                    metrics::counter!("ledger_balance_checkpoints_total").increment(n);
                }
                EVERY
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "checkpointer: pass failed");
                backoff(failures)
            }
        };
        if !shutdown.sleep(wait).await {
            break;
        }
    }
}
