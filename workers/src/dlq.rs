//! The dead-letter queue: list what died and why, and redrive chosen
//! messages back to the queue they died in, after a fix.
//!
//! Listing takes each message with `basic.get` and never acks it: closing
//! the channel puts every one back, in order. Redrive publishes a copy of a
//! chosen message, same body, `message_id` and type, straight to its
//! original queue (through the default exchange, so no other consumer gets
//! a copy), waits for the broker's confirm, and only then acks it from the
//! dead-letter queue: a crash in between leaves a duplicate, never a loss,
//! and the consumer's inbox absorbs the duplicate. The redriven message goes
//! through the same consumer code and inbox as any other.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;

use crate::config::Config;
use crate::topology::{self, Names};
use crate::{forward, within, Error};

/// A dead-lettered message, as `dlq list` shows it.
#[derive(Debug, Clone)]
pub struct Dead {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub order_id: Option<String>,
    /// The queue it died in (where a redrive sends it).
    pub queue: Option<String>,
    /// Why: `rejected` (by its consumer: unparseable, or failed
    /// AMQP_DELIVERY_LIMIT times, which the worker's log line says),
    /// `delivery_limit` (came back AMQP_QUEUE_DELIVERY_LIMIT times without
    /// failing: it kept killing its consumer), `expired`...
    pub reason: Option<String>,
    /// Deliveries before it died, when the reason tells: `>N` for one that
    /// came back more than the queue's limit N. The broker does not carry
    /// the source queue's count over to the dead-letter queue (which counts
    /// its own), so a rejected message's count is in the worker's log only.
    pub deliveries: Option<String>,
    /// Times it was dead-lettered (x-death count).
    pub deaths: Option<i64>,
}

/// Which dead messages to redrive.
#[derive(Debug, Clone)]
pub enum Select {
    All,
    Ids(Vec<String>),
}

impl Select {
    fn wants(&self, d: &Dead) -> bool {
        match self {
            Select::All => true,
            Select::Ids(ids) => d.message_id.as_ref().is_some_and(|m| ids.contains(m)),
        }
    }
}

fn header<'a>(headers: &'a Option<FieldTable>, name: &str) -> Option<&'a AMQPValue> {
    headers.as_ref()?.inner().get(name)
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn int(v: Option<&AMQPValue>) -> Option<i64> {
    match v? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// What the headers and the body say about a dead message.
pub fn describe(delivery: &Delivery, delivery_limit: i64) -> Dead {
    let props = &delivery.properties;
    let headers = props.headers();
    // The first x-death entry is the most recent death.
    let death = match header(headers, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().find_map(|v| match v {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    let from_death = |k: &str| death.as_ref().and_then(|t| t.inner().get(k).cloned());
    let body: Option<serde_json::Value> = serde_json::from_slice(&delivery.data).ok();
    let reason = text(header(headers, "x-first-death-reason")).or_else(|| text(from_death("reason").as_ref()));
    let deliveries = match reason.as_deref() {
        Some("delivery_limit") => Some(format!(">{delivery_limit}")),
        _ => None,
    };
    Dead {
        message_id: props.message_id().as_ref().map(|s| s.as_str().to_owned()),
        event_type: props
            .kind()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .or_else(|| body.as_ref().and_then(|b| b["type"].as_str().map(str::to_owned))),
        order_id: body.as_ref().and_then(|b| b["order_id"].as_str().map(str::to_owned)),
        queue: text(header(headers, "x-first-death-queue")).or_else(|| text(from_death("queue").as_ref())),
        reason,
        deliveries,
        deaths: int(from_death("count").as_ref()),
    }
}

/// A session on the dead-letter queue, and how many messages it held when
/// opened: listing and redriving look at those and stop, so that a message
/// dying again meanwhile is not taken twice.
async fn open(config: &Config) -> Result<(Connection, lapin::Channel, Names, u32), Error> {
    let conn = crate::nodes::connect(&config.amqp_url).await?;
    let ch = within("open a channel", conn.create_channel()).await?;
    let names = Names::new(&config.amqp_prefix);
    within("declare the topology", topology::declare(&ch, &names, config.queue_delivery_limit)).await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = within(
        "count the dead-letter queue",
        ch.queue_declare(names.dead_letter_queue.as_str().into(), passive, FieldTable::default()),
    )
    .await?;
    Ok((conn, ch, names, q.message_count()))
}

async fn next(
    ch: &lapin::Channel,
    names: &Names,
    left: &mut u32,
) -> Result<Option<lapin::message::BasicGetMessage>, Error> {
    if *left == 0 {
        return Ok(None);
    }
    *left -= 1;
    within("basic.get", ch.basic_get(names.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })).await
}

/// Every message in the dead-letter queue, left where it is.
pub async fn list(config: &Config) -> Result<Vec<Dead>, Error> {
    let (conn, ch, names, mut left) = open(config).await?;
    let mut out = Vec::new();
    while let Some(m) = next(&ch, &names, &mut left).await? {
        out.push(describe(&m.delivery, config.queue_delivery_limit));
    }
    // Unacked: closing returns every message to the dead-letter queue.
    let _ = conn.close(200, "listed".into()).await;
    Ok(out)
}

/// Moves the selected messages back to their queues (or, for a queue an
/// upgrade retired, its successor); returns them. Messages not selected, or
/// whose queue is unknown, stay dead-lettered.
pub async fn redrive(config: &Config, select: &Select) -> Result<Vec<Dead>, Error> {
    let (conn, ch, names, mut left) = open(config).await?;
    let publisher = within("open a channel", conn.create_channel()).await?;
    within("confirm mode", publisher.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut moved = Vec::new();
    while let Some(m) = next(&ch, &names, &mut left).await? {
        let dead = describe(&m.delivery, config.queue_delivery_limit);
        if !select.wants(&dead) {
            continue;
        }
        let Some(queue) = dead.queue.clone() else {
            tracing::warn!(message_id = ?dead.message_id, "dead message without its original queue; left in place");
            continue;
        };
        // A queue retired by an upgrade is redriven into its successor.
        let queue = names.current(&queue);
        forward::copy_into(&publisher, &m.delivery, queue).await?;
        // Confirmed in its queue: only now remove it from the dead-letter queue.
        within("ack", m.delivery.acker.ack(BasicAckOptions::default())).await?;
        tracing::info!(message_id = ?dead.message_id, %queue, "redriven");
        moved.push(dead);
    }
    let _ = conn.close(200, "redriven".into()).await;
    Ok(moved)
}
