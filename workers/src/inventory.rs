//! The inventory worker: commits an order's reservations when its charge
//! succeeded. At least once: the message is acked only after the database
//! transaction that did the work committed, and that transaction records the
//! message in the inbox, so a redelivery or a republished duplicate finds
//! itself there and changes nothing. While PostgreSQL is unavailable the
//! delivery is held and retried (`outage`); only a failure of the message's
//! own is handed back to the broker.
//!
//! The worker counts those failures itself ([`Failures`]) and dead-letters
//! the message (a reject) at `AMQP_DELIVERY_LIMIT` of them. The broker's
//! count cannot tell them apart: RabbitMQ 3.10 counts a delivery each time a
//! message comes back, and every lost connection (a broker restart, a
//! network cut, a worker killed) brings back all that consumer's
//! unacknowledged deliveries, up to AMQP_PREFETCH of them, none of which
//! failed. So the queue's own delivery limit is only a backstop, far higher
//! (`AMQP_QUEUE_DELIVERY_LIMIT`), for a message that never gets as far as
//! failing (one that kills its consumer each time).
//!
//! The deliveries that have arrived together (up to INVENTORY_BATCH) are
//! applied in one transaction, one commit for all, and acked with one
//! multiple ack after it; when that transaction fails, the batch is applied
//! again one message per transaction, where each message's own failures are
//! counted, so one bad message never fails its neighbours.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::future::try_join_all;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use ledger::events::{ChargeCapturedV1, ChargeSucceededV1, ChargeVoidedV1, Envelope, Event};
use ledger::TenantId;

use crate::config::Config;
use crate::metrics::{self, Outcome};
use crate::shutdown::{supervise, Shutdown};
use crate::{consumer, outage, request_id};
use crate::{crash_point, in_database, within, Error};

pub const CONSUMER: &str = "inventory";

/// Failures of a message's own, counted by this process per message id
/// across its broker sessions (a lost connection loses no count). A
/// restarted worker starts again from zero, so a message that always fails
/// is dead-lettered after at most AMQP_DELIVERY_LIMIT failures per worker
/// process; one that succeeds, or is dead-lettered, is forgotten.
#[derive(Clone, Default)]
pub struct Failures {
    counts: Arc<Mutex<HashMap<uuid::Uuid, u32>>>,
}

/// Messages counted at once: past it the counts start over, which only
/// delays a dead-lettering (the queue's backstop still holds).
const COUNTED: usize = 10_000;

impl Failures {
    /// Counts one more failure of `message`; returns how many it has had.
    pub fn fail(&self, message: uuid::Uuid) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= COUNTED && !counts.contains_key(&message) {
            counts.clear();
        }
        let n = counts.entry(message).or_insert(0);
        *n += 1;
        *n
    }

    /// The message is done with (applied, or dead-lettered).
    pub fn forget(&self, message: uuid::Uuid) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).remove(&message);
    }
}

/// What a delivery needs besides itself.
#[derive(Clone)]
struct Context {
    pool: Pool,
    failures: Failures,
    /// AMQP_DELIVERY_LIMIT: failures of its own before a message is dead-lettered.
    limit: u32,
    /// Config::database_bound.
    bound: Duration,
}

pub async fn run(config: Config, pool: Pool, shutdown: Shutdown) {
    let cx = Context {
        pool,
        failures: Failures::default(),
        limit: config.delivery_limit.clamp(1, u32::MAX as i64) as u32,
        bound: config.database_bound(),
    };
    supervise("inventory worker", shutdown, |stop, connected| {
        let (config, cx) = (config.clone(), cx.clone());
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
                |batch| handle_batch(&cx, batch, held.clone()),
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
async fn handle_batch(cx: &Context, deliveries: Vec<Delivery>, mut shutdown: Shutdown) -> Result<(), Error> {
    let mut parsed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if let Some(envelope) = parse(&delivery).await? {
            parsed.push((delivery, envelope));
        }
    }
    if parsed.len() <= 1 {
        for (delivery, envelope) in parsed {
            handle(cx, delivery, envelope, shutdown.clone()).await?;
        }
        return Ok(());
    }
    let envelopes: Vec<&Envelope<serde_json::Value>> = parsed.iter().map(|(_, e)| e).collect();
    let work = || in_database("a batch of inventory events", cx.bound, apply_batch(&cx.pool, &envelopes));
    match outage::through("a batch of inventory events", &mut shutdown, work).await {
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
                request_id::span(CONSUMER, delivery).in_scope(
                    || tracing::info!(message_id = %envelope.message_id, "inventory event handled in a batch"),
                );
                cx.failures.forget(envelope.message_id);
                let outcome = if i < applied { Outcome::Applied } else { Outcome::Duplicate };
                metrics::consumed(CONSUMER, outcome);
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, messages = parsed.len(), "inventory batch failed; applying it one message at a time");
            for (delivery, envelope) in parsed {
                handle(cx, delivery, envelope, shutdown.clone()).await?;
            }
        }
    }
    Ok(())
}

async fn handle(
    cx: &Context,
    delivery: Delivery,
    envelope: Envelope<serde_json::Value>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    let work = || in_database("the inventory event", cx.bound, apply(&cx.pool, &envelope));
    match outage::through("the inventory event", &mut shutdown, work).await {
        // Shutting down while the database is away: the delivery returns to
        // its queue when the channel closes.
        None => {}
        Some(Ok(applied)) => {
            crash_point("inventory-after-commit");
            tracing::info!(message_id = %envelope.message_id, applied, "inventory event handled");
            within("ack", delivery.acker.ack(BasicAckOptions::default())).await?;
            cx.failures.forget(envelope.message_id);
            metrics::consumed(CONSUMER, if applied { Outcome::Applied } else { Outcome::Duplicate });
        }
        Some(Err(e)) => {
            // The message's own failure: retried a few times, then
            // dead-lettered by this worker, so it never blocks the queue.
            let failed = cx.failures.fail(envelope.message_id);
            if failed >= cx.limit {
                tracing::error!(error = %e, message_id = %envelope.message_id, failed, "inventory event failed; dead-lettered");
                within("reject", delivery.acker.reject(BasicRejectOptions { requeue: false })).await?;
                cx.failures.forget(envelope.message_id);
                metrics::consumed(CONSUMER, Outcome::DeadLettered);
            } else {
                tracing::warn!(error = %e, message_id = %envelope.message_id, failed, "inventory event failed; requeued");
                tokio::time::sleep(Duration::from_millis(200)).await;
                within("nack", delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false })).await?;
                metrics::consumed(CONSUMER, Outcome::Requeued);
            }
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
    let mut voided: Vec<(TenantId, &str)> = Vec::new();
    for e in envelopes.iter().filter(|e| fresh.contains(&e.message_id)) {
        let list = match Effect::of(&e.event_type) {
            Some(Effect::Commit) => &mut orders,
            Some(Effect::Release) => &mut voided,
            None => continue,
        };
        let order = (TenantId(e.tenant_id), e.order_id.as_deref().ok_or(Error::EventWithoutOrder)?);
        if !list.contains(&order) {
            list.push(order);
        }
    }
    try_join_all(orders.iter().map(|(tenant, order)| ledger::inventory::commit_order(&tx, *tenant, order))).await?;
    // After the commits: an order voided and then paid by a later attempt
    // in the same batch keeps nothing held either way.
    for (tenant, order) in &voided {
        ledger::inventory::release_order(&tx, *tenant, order).await?;
    }
    tx.commit().await?;
    Ok(fresh.len())
}

/// What an event does to its order's held stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Paid: the stock leaves the shelf.
    Commit,
    /// An authorization voided: the stock comes back.
    Release,
}

impl Effect {
    fn of(event_type: &str) -> Option<Effect> {
        match event_type {
            t if t == ChargeSucceededV1::TYPE || t == ChargeCapturedV1::TYPE => Some(Effect::Commit),
            t if t == ChargeVoidedV1::TYPE => Some(Effect::Release),
            _ => None,
        }
    }
}

/// Applies an event once: returns false when the inbox says it was already applied.
pub async fn apply(pool: &Pool, envelope: &Envelope<serde_json::Value>) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    if !ledger::inbox::record(&tx, CONSUMER, envelope.message_id).await? {
        return Ok(false);
    }
    if let Some(effect) = Effect::of(&envelope.event_type) {
        let (tenant, order_id) = (TenantId(envelope.tenant_id), envelope.order_id.as_deref());
        let order_id = order_id.ok_or(Error::EventWithoutOrder)?;
        match effect {
            Effect::Commit => ledger::inventory::commit_order(&tx, tenant, order_id).await?,
            Effect::Release => ledger::inventory::release_order(&tx, tenant, order_id).await?,
        };
    }
    tx.commit().await?;
    Ok(true)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_message_until_forgotten() {
        let failures = Failures::default();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert_eq!(failures.fail(a), 1);
        assert_eq!(failures.fail(a), 2);
        assert_eq!(failures.fail(b), 1);
        // a clone is the same count: what a new broker session of the process sees
        assert_eq!(failures.clone().fail(a), 3);
        failures.forget(a);
        assert_eq!(failures.fail(a), 1);
    }
}
