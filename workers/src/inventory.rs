//! The inventory worker: commits an order's reservations when its charge
//! succeeded. At least once: the message is acked only after the database
//! transaction that did the work committed, and that transaction records the
//! message in the inbox, so a redelivery or a republished duplicate finds
//! itself there and changes nothing. The deliveries that have arrived
//! together (up to INVENTORY_BATCH) are applied in one transaction, one
//! commit for all, and acked with one multiple ack after it; when that
//! transaction fails for a reason of a message's own, the batch is applied
//! again one message per transaction, so one bad message never fails its
//! neighbours. While PostgreSQL is unavailable the
//! delivery is held and retried (`outage`), spending none of its delivery
//! count; only a failure of the message's own is handed back to the broker.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::try_join_all;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use ledger::events::{ChargeSucceededV1, Envelope, Event};
use ledger::TenantId;

use crate::config::Config;
use crate::metrics::{self, Outcome};
use crate::shutdown::{supervise, Shutdown};
use crate::{consumer, correlation, outage};
use crate::{crash_point, within, Error};

pub const CONSUMER: &str = "inventory";

pub async fn run(config: Config, pool: Pool, shutdown: Shutdown) {
    supervise("inventory worker", shutdown, |stop, connected| {
        let (config, pool) = (config.clone(), pool.clone());
        async move {
            let held = stop.clone();
            let max = config.inventory_batch;
            consumer::consume_batches(
                &config,
                |n| &n.inventory,
                CONSUMER,
                stop,
                connected,
                max,
                |batch| handle_batch(&pool, batch, held.clone()),
            )
            .await
        }
    })
    .await
}

/// Parses a delivery; one that cannot be parsed never will be: it goes
/// straight to the dead-letter queue, and `None` says it is settled.
async fn parse(delivery: &Delivery) -> Result<Option<Envelope<serde_json::Value>>, Error> {
    match serde_json::from_slice(&delivery.data) {
        Ok(e) => Ok(Some(e)),
        Err(e) => {
            tracing::error!(error = %e, "unparseable message dead-lettered");
            within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
            metrics::consumed(CONSUMER, Outcome::DeadLettered);
            Ok(None)
        }
    }
}

/// A batch of deliveries: one transaction, one multiple ack after its
/// commit; one by one when the batch fails for a reason of its own.
async fn handle_batch(pool: &Pool, deliveries: Vec<Delivery>, mut shutdown: Shutdown) -> Result<(), Error> {
    let mut parsed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if let Some(envelope) = parse(&delivery).await? {
            parsed.push((delivery, envelope));
        }
    }
    if parsed.len() <= 1 {
        for (delivery, envelope) in parsed {
            handle(pool, delivery, envelope, shutdown.clone()).await?;
        }
        return Ok(());
    }
    let envelopes: Vec<&Envelope<serde_json::Value>> = parsed.iter().map(|(_, e)| e).collect();
    match outage::through("a batch of inventory events", &mut shutdown, || apply_batch(pool, &envelopes)).await {
        // Shutting down while the database is away: the deliveries return to
        // their queue when the channel closes.
        None => {}
        Some(Ok(applied)) => {
            crash_point("inventory-after-commit");
            tracing::debug!(messages = parsed.len(), applied, "inventory batch handled");
            // Every delivery of the batch, with one ack: all deliveries of
            // this channel up to the last one's tag are settled (the earlier
            // ones by this batch or before it, in order).
            let (last, _) = parsed.last().expect("a batch of two or more");
            within("ack", last.acker.ack(BasicAckOptions { multiple: true })).await?;
            for (i, (delivery, envelope)) in parsed.iter().enumerate() {
                correlation::span(CONSUMER, delivery).in_scope(
                    || tracing::info!(message_id = %envelope.message_id, "inventory event handled in a batch"),
                );
                let outcome = if i < applied { Outcome::Applied } else { Outcome::Duplicate };
                metrics::consumed(CONSUMER, outcome);
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, messages = parsed.len(), "inventory batch failed; applying it one message at a time");
            for (delivery, envelope) in parsed {
                handle(pool, delivery, envelope, shutdown.clone()).await?;
            }
        }
    }
    Ok(())
}

async fn handle(
    pool: &Pool,
    delivery: Delivery,
    envelope: Envelope<serde_json::Value>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
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

/// Applies a batch of events in one transaction, each once: the inbox takes
/// all their ids in one statement and says which are new; the new payments'
/// orders are committed with their statements pipelined on the one
/// connection. Returns how many were applied (the others were already).
pub async fn apply_batch(pool: &Pool, envelopes: &[&Envelope<serde_json::Value>]) -> Result<usize, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.message_id).collect();
    let fresh: HashSet<uuid::Uuid> = ledger::inbox::record_many(&tx, CONSUMER, &ids).await?.into_iter().collect();
    // Each new payment's order once: a message id twice in one batch is one
    // message, and a second payment event of an order finds nothing held.
    let mut orders: Vec<(TenantId, &str)> = Vec::new();
    for e in envelopes.iter().filter(|e| e.event_type == ChargeSucceededV1::TYPE && fresh.contains(&e.message_id)) {
        let order = (TenantId(e.tenant_id), e.order_id.as_deref().ok_or(Error::EventWithoutOrder)?);
        if !orders.contains(&order) {
            orders.push(order);
        }
    }
    try_join_all(orders.iter().map(|(tenant, order)| ledger::inventory::commit_order(&tx, *tenant, order))).await?;
    tx.commit().await?;
    Ok(fresh.len())
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
