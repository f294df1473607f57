//! The outbox relay: publishes committed outbox rows to RabbitMQ, at least
//! once.
//!
//! A batch is claimed with `FOR UPDATE SKIP LOCKED`, so several relays never
//! publish the same row at once; published persistent with publisher
//! confirms; and marked published, in the claiming transaction, only after
//! the broker confirmed every message of the batch. A crash in between
//! leaves the rows unpublished and they go out again: consumers deduplicate
//! on `message_id`, which is the same every time.

use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use service::purge::{self, Target};

use crate::config::Config;
use crate::shutdown::{supervise, Connected, Shutdown};
use crate::topology::{self, Names};
use crate::{crash_point, within, Error};

pub async fn run(config: Config, pool: Pool, shutdown: Shutdown) {
    supervise("relay", shutdown, |stop, connected| {
        let (config, pool) = (config.clone(), pool.clone());
        async move { run_connected(&config, &pool, stop, connected).await }
    })
    .await
}

async fn run_connected(
    config: &Config,
    pool: &Pool,
    mut shutdown: Shutdown,
    connected: Connected,
) -> Result<(), Error> {
    let conn = within("connect", Connection::connect(&config.amqp_url, ConnectionProperties::default())).await?;
    let ch = within("open a channel", conn.create_channel()).await?;
    let names = Names::new(&config.amqp_prefix);
    // The relay declares the consumers' queues too, so that nothing it
    // publishes is dropped for want of a queue, whichever process starts first.
    within("declare the topology", topology::declare(&ch, &names, config.delivery_limit)).await?;
    within("confirm mode", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut wake = ledger::outbox::listen(&config.database.database_url).await?;
    let mut last_purge = tokio::time::Instant::now() - Duration::from_secs(3600);
    connected.mark();
    tracing::info!("relay connected");
    loop {
        let (published, drained) = drain(pool, &ch, &names, config.relay_batch).await?;
        if published > 0 {
            tracing::debug!(published, "outbox batch published");
        }
        if last_purge.elapsed() > Duration::from_secs(60) {
            purge::once(pool, Target::PublishedOutbox, config.retention.outbox()).await?;
            last_purge = tokio::time::Instant::now();
        }
        if !drained {
            continue; // more are waiting
        }
        tokio::select! {
            _ = shutdown.wait() => {
                let _ = conn.close(200, "shutdown".into()).await;
                return Ok(());
            }
            woke = wake.recv() => if woke.is_none() { return Err(Error::ListenerClosed) },
            _ = tokio::time::sleep(Duration::from_millis(config.relay_poll_ms)) => {}
        }
    }
}

/// Batches in flight at once while a backlog drains.
const LANES: usize = 2;

/// Full batches a lane publishes before the relay loop looks up (purge).
const ROUNDS: usize = 20;

/// Publishes with [`LANES`] batches in flight: while one waits on the
/// database (the claim, the mark, the commit's flush) the other keeps the
/// broker busy; `SKIP LOCKED` keeps their rows apart. Each lane stops at a
/// short batch or after [`ROUNDS`] full ones. Returns how many rows were
/// published and whether the backlog ran out.
async fn drain(pool: &Pool, ch: &Channel, names: &Names, limit: i64) -> Result<(usize, bool), Error> {
    let lane = |start_after: Duration| async move {
        tokio::time::sleep(start_after).await;
        let mut total = 0;
        for _ in 0..ROUNDS {
            let n = publish_batch(pool, ch, names, limit).await?;
            total += n;
            if (n as i64) < limit {
                return Ok::<_, Error>((total, true));
            }
        }
        Ok((total, false))
    };
    // The second lane starts a moment later so that the two drift apart
    // rather than claiming, publishing and committing in step.
    let lanes = (0..LANES).map(|i| lane(Duration::from_millis(5 * i as u64)));
    let done = futures::future::try_join_all(lanes).await?;
    Ok((done.iter().map(|d| d.0).sum(), done.iter().any(|d| d.1)))
}

/// Publishes up to `limit` unpublished rows; returns how many.
pub async fn publish_batch(pool: &Pool, ch: &Channel, names: &Names, limit: i64) -> Result<usize, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = ledger::outbox::claim_unpublished(&tx, limit).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut confirms = Vec::with_capacity(rows.len());
    for row in &rows {
        let props = BasicProperties::default()
            .with_message_id(row.message_id.to_string().into())
            .with_type(row.event_type.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = within(
            "publish",
            ch.basic_publish(
                names.events.as_str().into(),
                row.event_type.as_str().into(),
                BasicPublishOptions::default(),
                row.payload.as_bytes(),
                props,
            ),
        )
        .await?;
        confirms.push(confirm);
    }
    // Await the whole batch's confirms together: one round of waiting, not one per message.
    for confirm in confirms {
        let confirmation = within("publisher confirm", confirm).await?;
        if !confirmation.is_ack() {
            return Err(Error::Nacked);
        }
    }
    crash_point("relay-after-publish");
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    ledger::outbox::mark_published(&tx, &ids).await?;
    tx.commit().await?;
    Ok(rows.len())
}
