//! The outbox relay: publishes committed outbox rows to RabbitMQ, at least
//! once into every queue that must have them.
//!
//! A batch is claimed with `FOR UPDATE SKIP LOCKED`, so several relays never
//! publish the same row at once; each event is published persistent with
//! publisher confirms, one copy straight into each queue that must have it
//! (mandatory) and one into the topic exchange for optional subscribers
//! (`topology`); and marked published, in the claiming transaction, only
//! after the broker confirmed every required copy into its queue. A crash in
//! between leaves the rows unpublished and they go out again: consumers
//! deduplicate on `message_id`, which is the same every time.
//!
//! What the broker answers, per copy:
//! - a required copy confirmed with its message returned (in lapin 4.12 that
//!   is still an ack, `Confirmation::Ack(Some(returned))`): the queue is
//!   missing. The event stays unpublished, with the reason, and is retried
//!   after 1 s doubling to a minute (`ledger::outbox::defer`); the rest of
//!   the batch is marked. An operator sees it in the log and in the
//!   outbox's `last_error`, and `audit --quiesced` names it.
//! - a required copy nacked (the queue refused it: full, or the broker in
//!   trouble): the whole batch stays unpublished and the session starts over
//!   with backoff.
//! - the topic exchange's copy returned or nacked: logged, and the event is
//!   still published; an optional subscriber never holds the relay back.

use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use service::purge::{self, Target};

use crate::config::Config;
use crate::shutdown::{supervise, Connected, Shutdown};
use crate::topology::{self, Names, Route};
use crate::{crash_point, in_database, metrics, request_id, upgrade, within, Error};

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
    let conn = crate::nodes::connect(&config.amqp_url).await?;
    let ch = within("open a channel", conn.create_channel()).await?;
    let names = Names::new(&config.amqp_prefix);
    // The relay declares the consumers' queues too, so that nothing it
    // publishes is dropped for want of a queue, whichever process starts first.
    within("declare the topology", topology::declare(&ch, &names, config.queue_delivery_limit)).await?;
    upgrade::retire(&conn, &names).await;
    within("confirm mode", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut last_purge = tokio::time::Instant::now() - Duration::from_secs(3600);
    connected.mark();
    tracing::info!("relay connected");
    let window = config.retention.outbox().as_secs_f64();
    // A batch waits on the database and on the broker's confirms (each
    // bounded by `within`); one left unanswered ends the session, and its
    // rows, unmarked, go out again with the next.
    let batch_bound = config.database_bound() + Duration::from_secs(30);
    loop {
        let (published, drained) = drain(pool, &ch, &names, config.relay_batch, window, batch_bound).await?;
        if published > 0 {
            tracing::debug!(published, "outbox batch published");
        }
        if last_purge.elapsed() > Duration::from_secs(60) {
            let purge = purge::once(pool, Target::PublishedOutbox, config.retention.outbox());
            in_database("the outbox purge", config.database_bound(), purge).await?;
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
async fn drain(
    pool: &Pool,
    ch: &Channel,
    names: &Names,
    limit: i64,
    window: f64,
    bound: Duration,
) -> Result<(usize, bool), Error> {
    let lane = |start_after: Duration| async move {
        tokio::time::sleep(start_after).await;
        let mut total = 0;
        for _ in 0..ROUNDS {
            let n = in_database("an outbox batch", bound, publish_batch(pool, ch, names, limit, window)).await?;
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

/// One copy of an event on its way: where to, and the broker's confirm.
pub struct Copy {
    /// The queue that must take it; `None` for the topic exchange's copy.
    pub required: Option<String>,
    pub confirm: PublisherConfirm,
}

/// Publishes every copy of one event (`Names::routes`): persistent, with its
/// message id, type and content type; the required ones mandatory. Returns
/// the copies, whose confirms the caller awaits with [`settle`] (a batch
/// publishes everything first, then awaits).
pub async fn publish_event(
    ch: &Channel,
    names: &Names,
    message_id: &str,
    event_type: &str,
    payload: &[u8],
) -> Result<Vec<Copy>, Error> {
    publish_event_for(ch, names, message_id, event_type, payload, None).await
}

/// [`publish_event`], carrying the id of the request that wrote the event
/// (`request_id`): its `correlation_id` and `traceparent`.
pub async fn publish_event_for(
    ch: &Channel,
    names: &Names,
    message_id: &str,
    event_type: &str,
    payload: &[u8],
    request_id: Option<&str>,
) -> Result<Vec<Copy>, Error> {
    let routes = names.routes(event_type);
    let mut copies = Vec::with_capacity(routes.len());
    for route in &routes {
        copies.push(publish_copy(ch, route, message_id, event_type, payload, request_id).await?);
    }
    Ok(copies)
}

/// Publishes one copy of an event ([`publish_event_for`] publishes every
/// route's), the required one mandatory.
pub async fn publish_copy(
    ch: &Channel,
    route: &Route<'_>,
    message_id: &str,
    event_type: &str,
    payload: &[u8],
    request_id: Option<&str>,
) -> Result<Copy, Error> {
    let props = BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type(event_type.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let props = request_id::stamp(props, request_id, message_id);
    let confirm = within(
        "publish",
        ch.basic_publish(
            route.exchange.into(),
            route.routing_key.into(),
            BasicPublishOptions { mandatory: route.required.is_some(), ..Default::default() },
            payload,
            props,
        ),
    )
    .await?;
    Ok(Copy { required: route.required.map(str::to_owned), confirm })
}

/// What the broker did with an event's copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every queue that must have it took it.
    Delivered,
    /// A queue that must have it is missing: the broker returned the copy.
    Returned(String),
}

/// Awaits the confirms of one event's copies ([`settle_all`] of one).
pub async fn settle(message_id: &str, copies: Vec<Copy>) -> Result<Settled, Error> {
    let mut settled = settle_all(vec![(message_id.to_owned(), copies)]).await?;
    Ok(settled.pop().expect("one event in, one answer out"))
}

/// Awaits the confirms of a batch's events, in order; answers what became
/// of each. A nacked required copy is an error (nothing of the batch may be
/// marked); an event a required queue returned is [`Settled::Returned`];
/// the topic exchange's copy never decides.
///
/// A returned message is matched to its event by message id and queue, not
/// by the confirm that carries it: lapin hands a returned message to the
/// next confirm it completes, and a `multiple` ack completes its tags in
/// hash order, so the return may ride on another copy's confirm, or on
/// another event's of the same batch. Every confirm of the batch is awaited
/// before anything is decided, and the batch holds every publish still
/// unconfirmed on the channel (the previous batch was settled before this
/// one was published), so every return of the batch is among them.
pub async fn settle_all(events: Vec<(String, Vec<Copy>)>) -> Result<Vec<Settled>, Error> {
    let mut returned = Vec::new();
    let mut answered = Vec::with_capacity(events.len());
    for (message_id, copies) in events {
        let mut answers = Vec::with_capacity(copies.len());
        for copy in copies {
            let confirmation = within("publisher confirm", copy.confirm).await?;
            let acked = match confirmation {
                Confirmation::NotRequested => return Err(Error::Unconfirmed),
                Confirmation::Ack(message) => {
                    returned.extend(message);
                    true
                }
                Confirmation::Nack(message) => {
                    returned.extend(message);
                    false
                }
            };
            answers.push((copy.required, acked));
        }
        answered.push((message_id, answers));
    }
    let returned_from = |message_id: &str, queue: &str| {
        returned.iter().find(|r| {
            r.delivery.routing_key.as_str() == queue
                && r.delivery.properties.message_id().as_ref().is_some_and(|id| id.as_str() == message_id)
        })
    };
    let mut settled = Vec::with_capacity(answered.len());
    for (message_id, answers) in answered {
        let mut outcome = Settled::Delivered;
        for (required, acked) in answers {
            let back = required.as_deref().and_then(|queue| returned_from(&message_id, queue).map(|r| (queue, r)));
            metrics::confirmed(required.is_some(), acked, back.is_some());
            match (required.is_some(), acked, back) {
                (true, false, _) => return Err(Error::Nacked),
                (true, true, Some((queue, r))) => {
                    if outcome == Settled::Delivered {
                        outcome = Settled::Returned(format!(
                            "{queue} did not take it: {} {}",
                            r.reply_code,
                            r.reply_text.as_str()
                        ));
                    }
                }
                (true, true, None) | (false, true, _) => {}
                (false, false, _) => {
                    tracing::warn!(%message_id, "an optional subscriber of the topic exchange refused an event (nack)");
                }
            }
        }
        settled.push(outcome);
    }
    Ok(settled)
}

/// Publishes up to `limit` unpublished rows; returns how many it claimed.
/// `window` is OUTBOX_RETENTION_SECS: a row replayed too late is not
/// published (`ledger::outbox::claim_unpublished`).
pub async fn publish_batch(pool: &Pool, ch: &Channel, names: &Names, limit: i64, window: f64) -> Result<usize, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = ledger::outbox::claim_unpublished(&tx, limit, window).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut sent = Vec::with_capacity(rows.len());
    for row in &rows {
        let message_id = row.message_id.to_string();
        let copies = publish_event_for(
            ch,
            names,
            &message_id,
            &row.event_type,
            row.payload.as_bytes(),
            row.request_id.as_deref(),
        )
        .await?;
        sent.push((message_id, copies));
    }
    // Await the whole batch's confirms together: one round of waiting, not one per message.
    let (mut published, mut deferred, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    for ((row, message_id), settled) in rows.iter().zip(ids).zip(settle_all(sent).await?) {
        match settled {
            Settled::Delivered => published.push(row.id),
            Settled::Returned(reason) => {
                tracing::warn!(%message_id, event_type = %row.event_type, %reason, "event kept unpublished, retried later");
                deferred.push(row.id);
                reasons.push(reason);
            }
        }
    }
    crash_point("relay-after-publish");
    if !deferred.is_empty() {
        ledger::outbox::defer(&tx, &deferred, &reasons).await?;
    }
    ledger::outbox::mark_published(&tx, &published).await?;
    tx.commit().await?;
    metrics::relayed(published.len(), deferred.len());
    Ok(rows.len())
}
