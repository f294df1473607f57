//! The workers' one error type, and the bounds every broker and database call
//! runs under (`within`, `in_database`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("PostgreSQL did not answer {0} in time")]
    DatabaseTimeout(&'static str),
    #[error("the broker refused a message (nack)")]
    Nacked,
    #[error("the channel is not in confirm mode: a publish was not confirmed")]
    Unconfirmed,
    #[error("the broker did not take the message into `{0}`")]
    NotTaken(String),
    #[error("the consumer was cancelled")]
    ConsumerCancelled,
    #[error("a `charge.succeeded` event without an order")]
    EventWithoutOrder,
    #[error("{setting}: {detail}")]
    Setting { setting: &'static str, detail: String },
    #[error("email: {0}")]
    Email(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("email file: {0}")]
    EmailFile(#[from] lettre::transport::file::Error),
    #[error("recipient: {0}")]
    Recipient(#[from] lettre::address::AddressError),
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Ledger(e.into())
    }
}

impl Error {
    /// PostgreSQL out of reach, not the work's fault (see `outage`).
    pub fn database_unavailable(&self) -> bool {
        match self {
            // No answer within the bound: the server or the path to it is
            // gone without saying so (a statement that is only slow is
            // cancelled by PostgreSQL first, and that answer is an error of
            // its own).
            Error::DatabaseTimeout(_) => true,
            Error::Database(e) => ledger::error::unavailable(e),
            Error::Ledger(e) => e.database_unavailable(),
            _ => false,
        }
    }
}

/// Bounds a broker or database call: a call on a connection that died
/// without telling us must not hang a worker forever. A timeout is an error,
/// and the supervising loop reconnects.
pub async fn within<T, E>(what: &'static str, fut: impl std::future::Future<Output = Result<T, E>>) -> Result<T, Error>
where
    Error: From<E>,
{
    match tokio::time::timeout(std::time::Duration::from_secs(15), fut).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout(what)),
    }
}

/// Bounds one unit of a worker's database work (a checkout and what it
/// runs). PostgreSQL bounds each statement itself (`DB_STATEMENT_TIMEOUT_MS`,
/// `DB_LOCK_TIMEOUT_MS`) and answers with an error; this bound, longer than
/// those (`Config::database_bound`), is for a connection that never answers
/// at all: a server killed or frozen whose socket was not closed, a session
/// stuck behind a lost packet. The timeout counts as the database being
/// unavailable (`Error::database_unavailable`): a consumer holds its
/// delivery and retries, a relay session starts over.
pub async fn in_database<T, E>(
    what: &'static str,
    bound: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error>
where
    Error: From<E>,
{
    match tokio::time::timeout(bound, fut).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::DatabaseTimeout(what)),
    }
}
