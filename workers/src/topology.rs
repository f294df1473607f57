//! Exchanges, queues and routes, declared idempotently (same arguments every
//! time) by every process that uses them, before it publishes or consumes.
//!
//! An event reaches its consumers by two paths:
//! - **Required**: into each queue that must have it (the inventory,
//!   email and webhooks workers' queues), straight through the default exchange, the
//!   routing key being the queue's name, published mandatory and confirmed
//!   copy by copy. A queue that is missing returns its copy, and the relay
//!   keeps the event unpublished: a missing binding cannot drop it, as
//!   these queues have none to lose.
//! - **Optional**: once into the topic exchange `<prefix>.events` (routing
//!   key = event type), for whoever else subscribes, not mandatory: an event
//!   type with no subscriber (`reservation.*`, `charge.refunded` today) is
//!   dropped by the broker, and a subscriber's queue that refuses it holds
//!   nothing back. The consumers' queues are not bound there, so they get
//!   one copy, not two.
//!
//! The consumers' queues are quorum queues with a delivery limit, a
//! dead-letter exchange and at-least-once dead-lettering (a dead letter
//! stays in its queue until the dead-letter queue confirmed it), which
//! RabbitMQ (3.10) allows only with `x-overflow: reject-publish`. Their
//! names carry the version of these arguments, `.v3`: RabbitMQ refuses to
//! redeclare a queue with other arguments (`x-delivery-limit` included), so
//! the queues of the versions before are retired rather than changed (see
//! `upgrade`): `<prefix>.inventory`,
//! `<prefix>.email` (at-most-once dead-lettering, bound to the topic
//! exchange), and `.v2` (the delivery limit was the message's failures,
//! 5, and lost connections used it up; now the consumer counts failures
//! and the queue's limit is a backstop, `AMQP_QUEUE_DELIVERY_LIMIT`).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use ledger::events::{ChargeCapturedV1, ChargeSucceededV1, ChargeVoidedV1, Event};

/// Event types the inventory worker acts on: a paid order's stock leaves
/// the shelf (`charge.succeeded`, `charge.captured`), a voided
/// authorization's comes back (`charge.voided`).
pub const INVENTORY_EVENTS: &[&str] = &[ChargeSucceededV1::TYPE, ChargeCapturedV1::TYPE, ChargeVoidedV1::TYPE];
/// Event types the email worker acts on: a paid order (at once, or an
/// authorization captured) gets its confirmation.
pub const EMAIL_EVENTS: &[&str] = &[ChargeSucceededV1::TYPE, ChargeCapturedV1::TYPE];
/// Event types the webhooks worker delivers: every one an endpoint may
/// subscribe to (`ledger::webhook_endpoints::EVENT_TYPES`).
pub const WEBHOOK_EVENTS: &[&str] = ledger::webhook_endpoints::EVENT_TYPES;

#[derive(Debug, Clone)]
pub struct Names {
    /// Durable topic exchange for optional subscribers; the routing key is
    /// the event type.
    pub events: String,
    /// Where poison messages go.
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub inventory: String,
    pub email: String,
    pub webhooks: String,
    /// An exclusive queue held by the one process retiring old queues.
    pub upgrade_lock: String,
    prefix: String,
}

/// A queue of an older version, and what replaced it.
#[derive(Debug, Clone)]
pub struct Retired<'a> {
    pub name: String,
    pub successor: &'a str,
    /// The event types it was bound to the topic exchange for.
    pub events: &'static [&'static str],
}

/// Where the relay sends one copy of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// The queue that must take this copy (published mandatory); `None` for
    /// the topic exchange's copy, which nobody has to take.
    pub required: Option<&'a str>,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            events: format!("{prefix}.events"),
            dead_letter_exchange: format!("{prefix}.dead-letter"),
            dead_letter_queue: format!("{prefix}.dead-letter"),
            inventory: format!("{prefix}.inventory.v3"),
            email: format!("{prefix}.email.v3"),
            webhooks: format!("{prefix}.webhooks.v1"),
            upgrade_lock: format!("{prefix}.upgrade-lock"),
            prefix: prefix.to_owned(),
        }
    }

    pub fn queues(&self) -> [&str; 4] {
        [&self.inventory, &self.email, &self.webhooks, &self.dead_letter_queue]
    }

    /// The consumers' queues, each with the event types it must receive.
    pub fn consumers(&self) -> [(&str, &'static [&'static str]); 3] {
        [(&self.inventory, INVENTORY_EVENTS), (&self.email, EMAIL_EVENTS), (&self.webhooks, WEBHOOK_EVENTS)]
    }

    /// The queues that must receive an event of this type.
    pub fn required(&self, event_type: &str) -> Vec<&str> {
        self.consumers().into_iter().filter(|(_, events)| events.contains(&event_type)).map(|(q, _)| q).collect()
    }

    /// Every copy of an event of this type: one into each queue that must
    /// have it, then one into the topic exchange.
    pub fn routes<'a>(&'a self, event_type: &'a str) -> Vec<Route<'a>> {
        let mut routes: Vec<Route<'a>> = self
            .required(event_type)
            .into_iter()
            .map(|q| Route { exchange: "", routing_key: q, required: Some(q) })
            .collect();
        routes.push(Route { exchange: &self.events, routing_key: event_type, required: None });
        routes
    }

    /// The queues of older versions: the inventory and email queues before
    /// at-least-once dead-lettering, and `.v2`, whose delivery limit was the
    /// messages' failures (unbinding them from the topic exchange, where
    /// they never were, changes nothing).
    pub fn retired(&self) -> Vec<Retired<'_>> {
        let mut retired = Vec::new();
        for version in ["", ".v2"] {
            retired.push(Retired {
                name: format!("{}.inventory{version}", self.prefix),
                successor: &self.inventory,
                events: INVENTORY_EVENTS,
            });
            retired.push(Retired {
                name: format!("{}.email{version}", self.prefix),
                successor: &self.email,
                events: EMAIL_EVENTS,
            });
        }
        retired
    }

    /// The queue that now does the job of `queue`: its successor when it is
    /// a retired queue (a dead letter from before an upgrade names the queue
    /// it died in), else itself.
    pub fn current<'a>(&'a self, queue: &'a str) -> &'a str {
        self.retired().into_iter().find(|r| r.name == queue).map(|r| r.successor).unwrap_or(queue)
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

/// The arguments of a consumer's queue.
fn consumer_queue(names: &Names, delivery_limit: i64) -> FieldTable {
    let mut args = quorum();
    // Quorum queues on RabbitMQ 3.10 have no default delivery limit: without
    // one, and a dead-letter exchange, a message that kills its consumer
    // loops forever. It is a backstop: each lost connection counts one for
    // every delivery its consumer held, and the consumer dead-letters a
    // message that failed itself (`inventory::Failures`).
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.dead_letter_exchange.as_str().into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(delivery_limit));
    // The default, at-most-once, drops a dead letter that the dead-letter
    // queue does not take (missing, unbound, refusing); at-least-once keeps
    // it in this queue and retries until the dead-letter queue confirms it.
    args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    args
}

pub async fn declare(ch: &Channel, names: &Names, delivery_limit: i64) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(names.events.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    ch.exchange_declare(
        names.dead_letter_exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    let queue = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(names.dead_letter_queue.as_str().into(), queue, quorum()).await?;
    ch.queue_bind(
        names.dead_letter_queue.as_str().into(),
        names.dead_letter_exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for (name, _) in names.consumers() {
        // Fed by the relay through the default exchange: no binding.
        ch.queue_declare(name.into(), queue, consumer_queue(names, delivery_limit)).await?;
    }
    Ok(())
}
