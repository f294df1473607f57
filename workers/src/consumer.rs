//! One consuming session, shared by the workers: connect, declare the
//! topology, bound the prefetch, and hand each delivery to the worker's
//! handler until shutdown or until the connection fails.

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tracing::Instrument;

use crate::config::Config;
use crate::shutdown::{Connected, Shutdown};
use crate::topology::{self, Names};
use crate::{request_id, upgrade, within, Error};

/// Consumes `queue` (picked from the topology's names) with manual acks. The
/// handler acks, nacks or rejects each delivery itself; an error from it ends
/// the session, and its unacknowledged deliveries return to the queue.
pub async fn consume<H, Fut>(
    config: &Config,
    queue: fn(&Names) -> &str,
    tag: &str,
    mut shutdown: Shutdown,
    connected: Connected,
    mut handle: H,
) -> Result<(), Error>
where
    H: FnMut(Delivery) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut session = Session::open(config, queue, tag, connected).await?;
    while let Some(delivery) = session.next(&mut shutdown).await? {
        // Logged in the message's span; what the handler writes to the
        // outbox carries the same request id on.
        let span = request_id::span(tag, &delivery);
        let request_id = request_id::of(&delivery);
        in_message(span, request_id, handle(delivery)).await?;
    }
    Ok(())
}

/// As [`consume`], but hands the handler every delivery that has already
/// arrived, up to `max` at once, in delivery order: a batch never waits for
/// more deliveries to come, so a lone message is handled at once, and under a
/// backlog the batches fill from the prefetched deliveries by themselves.
/// The handler settles every delivery of its batch.
pub async fn consume_batches<H, Fut>(
    config: &Config,
    queue: fn(&Names) -> &str,
    tag: &str,
    mut shutdown: Shutdown,
    connected: Connected,
    max: usize,
    mut handle: H,
) -> Result<(), Error>
where
    H: FnMut(Vec<Delivery>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut session = Session::open(config, queue, tag, connected).await?;
    let max = max.max(1);
    while let Some(first) = session.next(&mut shutdown).await? {
        let mut batch = vec![first];
        // Whatever else has arrived already; an end of the stream met here
        // ends the session once this batch is handled.
        let mut end = None;
        while batch.len() < max {
            match session.deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                Some(Some(Err(e))) => {
                    end = Some(Error::from(e));
                    break;
                }
                Some(None) => {
                    end = Some(Error::ConsumerCancelled);
                    break;
                }
                None => break,
            }
        }
        // A lone delivery is handled in its message's span, as in `consume`;
        // the handler logs each message of a larger batch in its own.
        if batch.len() == 1 {
            let span = request_id::span(tag, &batch[0]);
            let request_id = request_id::of(&batch[0]);
            in_message(span, request_id, handle(batch)).await?;
        } else {
            handle(batch).await?;
        }
        if let Some(e) = end {
            return Err(e);
        }
    }
    Ok(())
}

/// One connection consuming one queue.
struct Session {
    conn: lapin::Connection,
    deliveries: lapin::Consumer,
}

impl Session {
    /// Connects, declares the topology, bounds the prefetch and starts
    /// consuming; `connected` is marked once deliveries can flow.
    async fn open(config: &Config, queue: fn(&Names) -> &str, tag: &str, connected: Connected) -> Result<Self, Error> {
        let conn = crate::nodes::connect(&config.amqp_url).await?;
        let ch = within("open a channel", conn.create_channel()).await?;
        let names = Names::new(&config.amqp_prefix);
        within("declare the topology", topology::declare(&ch, &names, config.queue_delivery_limit)).await?;
        upgrade::retire(&conn, &names).await;
        within("set prefetch", ch.basic_qos(config.prefetch, BasicQosOptions::default())).await?;
        let queue = queue(&names);
        let deliveries = within(
            "consume",
            ch.basic_consume(queue.into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default()),
        )
        .await?;
        connected.mark();
        tracing::info!(%queue, "{tag} worker consuming");
        Ok(Session { conn, deliveries })
    }

    /// The next delivery; `None` at shutdown, after closing the connection,
    /// which returns the unacknowledged deliveries to the queue.
    async fn next(&mut self, shutdown: &mut Shutdown) -> Result<Option<Delivery>, Error> {
        tokio::select! {
            _ = shutdown.wait() => {
                let _ = self.conn.close(200, "shutdown".into()).await;
                Ok(None)
            }
            next = self.deliveries.next() => match next {
                Some(Ok(delivery)) => Ok(Some(delivery)),
                Some(Err(e)) => Err(e.into()),
                None => Err(Error::ConsumerCancelled),
            }
        }
    }
}

/// Runs a message's work in its span and, when it carries one, with its
/// request id.
async fn in_message(
    span: tracing::Span,
    request_id: Option<String>,
    work: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    let work = work.instrument(span);
    match request_id {
        Some(id) => ledger::request_id::scope(id, work).await,
        None => work.await,
    }
}
