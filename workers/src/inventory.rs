//! The inventory worker: commits an order's reservations when its charge
//! succeeded. At least once: the message is acked only after the database
//! transaction that did the work committed, and that transaction records the
//! message in the inbox, so a redelivery or a republished duplicate finds
//! itself there and changes nothing. While PostgreSQL is unavailable the
//! delivery is held and retried (`outage`), spending none of its delivery
//! count; only a failure of the message's own is handed back to the broker.

use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use ledger::events::{ChargeSucceededV1, Envelope, Event};
use ledger::TenantId;

use crate::config::Config;
use crate::metrics::{self, Outcome};
use crate::shutdown::{supervise, Shutdown};
use crate::{consumer, outage};
use crate::{crash_point, within, Error};

pub const CONSUMER: &str = "inventory";

pub async fn run(config: Config, pool: Pool, shutdown: Shutdown) {
    supervise("inventory worker", shutdown, |stop, connected| {
        let (config, pool) = (config.clone(), pool.clone());
        async move {
            let held = stop.clone();
            consumer::consume(&config, |n| &n.inventory, CONSUMER, stop, connected, |d| handle(&pool, d, held.clone()))
                .await
        }
    })
    .await
}

async fn handle(pool: &Pool, delivery: Delivery, mut shutdown: Shutdown) -> Result<(), Error> {
    let envelope: Envelope<serde_json::Value> = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(e) => {
            // A message that cannot be parsed never will be: straight to the dead-letter queue.
            tracing::error!(error = %e, "unparseable message dead-lettered");
            within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            metrics::consumed(CONSUMER, Outcome::DeadLettered);
            return Ok(());
        }
    };
    match outage::through("the inventory event", &mut shutdown, || apply(pool, &envelope)).await {
        // Shutting down while the database is away: the delivery returns to
        // its queue when the channel closes.
        None => {}
        Some(Ok(applied)) => {
            crash_point("inventory-after-commit");
            tracing::info!(message_id = %envelope.message_id, applied, "inventory event handled");
            within("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
            metrics::consumed(CONSUMER, if applied { Outcome::Applied } else { Outcome::Duplicate });
        }
        Some(Err(e)) => {
            // The message's own failure: retry a few times; past the delivery
            // limit the broker dead-letters it, so it never blocks the queue.
            tracing::warn!(error = %e, message_id = %envelope.message_id, "inventory event failed; requeued");
            tokio::time::sleep(Duration::from_millis(200)).await;
            within("nack", delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false })).await?;
            metrics::consumed(CONSUMER, Outcome::Requeued);
        }
    }
    Ok(())
}

/// Applies an event once: returns false when the inbox says it was already applied.
pub async fn apply(pool: &Pool, envelope: &Envelope<serde_json::Value>) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if !ledger::inbox::record(&tx, CONSUMER, envelope.message_id).await? {
        return Ok(false);
    }
    if envelope.event_type == ChargeSucceededV1::TYPE {
        let order_id = envelope.order_id.as_deref().ok_or(Error::EventWithoutOrder)?;
        ledger::inventory::commit_order(&tx, TenantId(envelope.tenant_id), order_id).await?;
    }
    tx.commit().await?;
    Ok(true)
}
