//! The asynchronous half of the purchase pipeline: the outbox relay and the
//! RabbitMQ consumers.

pub mod config;
pub mod consumer;
pub mod dlq;
pub mod email;
pub mod inventory;
pub mod purge;
pub mod relay;
pub mod replay;
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

/// Bounds a broker or database call: a call on a connection that died
/// without telling us must not hang a worker forever. A timeout is an error,
/// and the supervising loop reconnects.
pub async fn within<T, E>(what: &str, fut: impl std::future::Future<Output = Result<T, E>>) -> Result<T, Error>
where
    Error: From<E>,
{
    match tokio::time::timeout(std::time::Duration::from_secs(15), fut).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Other(format!("{what} timed out"))),
    }
}

/// A named point where tests make the process die on purpose; see [`ledger::crash`].
pub use ledger::crash::point as crash_point;
