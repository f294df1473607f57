//! The asynchronous half of the purchase pipeline: the outbox relay and the
//! RabbitMQ consumers. AMQP only: every statement they run is `ledger`'s.

pub mod checkpointer;
pub mod completer;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod email;
mod error;
pub mod expirer;
pub mod forward;
pub mod inventory;
pub mod metrics;
pub mod nodes;
pub mod outage;
pub mod reconcile_payments;
pub mod relay;
pub mod replay;
pub mod request_id;
mod roles;
pub mod shutdown;
pub mod topology;
pub mod upgrade;
pub mod webhooks;

pub use error::{in_database, within, Error};
pub use roles::{spawn, Role};

/// A named point where tests make the process die on purpose; see [`ledger::crash`].
pub use ledger::crash::point as crash_point;
