//! Exchanges and queues, declared idempotently (same arguments every time)
//! by every process that uses them, before it publishes or consumes.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use ledger::events::{ChargeSucceededV1, Event};

/// Event types the inventory worker acts on.
pub const INVENTORY_EVENTS: &[&str] = &[ChargeSucceededV1::TYPE];
/// Event types the email worker acts on.
pub const EMAIL_EVENTS: &[&str] = &[ChargeSucceededV1::TYPE];

#[derive(Debug, Clone)]
pub struct Names {
    /// Durable topic exchange; the routing key is the event type.
    pub events: String,
    /// Where poison messages go.
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub inventory: String,
    pub email: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            events: format!("{prefix}.events"),
            dead_letter_exchange: format!("{prefix}.dead-letter"),
            dead_letter_queue: format!("{prefix}.dead-letter"),
            inventory: format!("{prefix}.inventory"),
            email: format!("{prefix}.email"),
        }
    }

    pub fn queues(&self) -> [&str; 3] {
        [&self.inventory, &self.email, &self.dead_letter_queue]
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
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
    for (name, events) in [(&names.inventory, INVENTORY_EVENTS), (&names.email, EMAIL_EVENTS)] {
        // Quorum queues on RabbitMQ 3.10 have no default delivery limit: without
        // one, and a dead-letter exchange, a poison message loops forever.
        let mut args = quorum();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.dead_letter_exchange.as_str().into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(delivery_limit));
        ch.queue_declare(name.as_str().into(), queue, args).await?;
        for event in events {
            ch.queue_bind(
                name.as_str().into(),
                names.events.as_str().into(),
                (*event).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    Ok(())
}
