//! The asynchronous half of the purchase pipeline: the outbox relay and the
//! RabbitMQ consumers.

pub mod config;
pub mod email;
pub mod inventory;
pub mod relay;
pub mod shutdown;
pub mod topology;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("{0}")]
    Other(String),
}

/// A named point where tests make the process die on purpose, to prove that
/// what happened before it is not lost and what comes after is not doubled.
/// Armed by `LEDGER_CRASH_AT=<name>`; a no-op otherwise.
pub fn crash_point(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("LEDGER_CRASH_AT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("crash point `{name}` reached: aborting");
        std::process::abort();
    }
}
