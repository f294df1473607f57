//! What can go wrong in the ledger, in domain terms. No HTTP here: the API
//! maps these to status codes and problem codes in one place. Business
//! declines are not errors: they are an [`Outcome`](crate::Outcome).

use uuid::Uuid;

use crate::money::{AmountError, Currency};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("account {0} does not exist")]
    AccountNotFound(Uuid),
    #[error("charge {0} does not exist")]
    ChargeNotFound(Uuid),
    #[error("transfer {0} does not exist")]
    TransferNotFound(Uuid),
    #[error("reservation {0} does not exist")]
    ReservationNotFound(Uuid),
    /// Not one of the tenant's events the outbox still holds.
    #[error("event {0} does not exist")]
    EventNotFound(Uuid),
    /// Not a refund of the charge (a cursor of its list of refunds).
    #[error("refund {0} does not exist for this charge")]
    RefundNotFound(Uuid),
    /// Not an entry of the account (a cursor of its list of entries).
    #[error("entry {0} does not exist for this account")]
    EntryNotFound(i64),
    #[error("webhook endpoint {0} does not exist")]
    WebhookEndpointNotFound(Uuid),
    /// Not an attempt of the endpoint (a cursor of its attempts list).
    #[error("webhook attempt {0} does not exist for this endpoint")]
    WebhookAttemptNotFound(i64),
    #[error("SKU `{0}` does not exist")]
    SkuNotFound(String),
    #[error("account {account} holds {account_currency}, not {requested}")]
    CurrencyMismatch { account: Uuid, account_currency: Currency, requested: Currency },
    #[error("the accounts of one movement must be different accounts")]
    SameAccount,
    #[error("the platform fee cannot exceed the charged amount")]
    FeeTooLarge,
    #[error("{0}")]
    NaturalKeyConflict(String),
    /// Another attempt already paid this order: a second charge would charge
    /// the buyer twice.
    #[error("order `{order_id}` is already charged (charge {charge_id})")]
    OrderAlreadyCharged { order_id: String, charge_id: Uuid },
    #[error("reservation {id} is {status} and can no longer be released")]
    ReservationNotHeld { id: Uuid, status: &'static str },
    /// A refund of a charge that did not succeed (still `processing`, or
    /// declined): nothing to give back.
    #[error("charge {id} was not paid: nothing to refund")]
    ChargeNotPaid { id: Uuid },
    /// A capture or a void of a charge that is not an open authorization
    /// (made at once, captured, voided or expired already).
    #[error("charge {id} is {status}: only an authorized charge can be captured or voided")]
    ChargeNotAuthorized { id: Uuid, status: &'static str },
    /// A capture after the authorization's deadline (the expirer voids it).
    #[error("the authorization of charge {id} expired at {expires_at}")]
    AuthorizationExpired { id: Uuid, expires_at: chrono::DateTime<chrono::Utc> },
    #[error("charge {id} holds {authorized}: a capture cannot take more")]
    CaptureExceedsAuthorization { id: Uuid, authorized: rust_decimal::Decimal },
    /// An instant of history asked before it is settled: in the future, too
    /// recent, or with a transaction that may have begun before it still
    /// open (`statements::settle`).
    #[error("as_of {as_of} cannot be answered yet: {reason}")]
    AsOfTooRecent { as_of: chrono::DateTime<chrono::Utc>, reason: &'static str },
    /// A period whose start is not before its end.
    #[error("the period must end after it starts (from {from}, to {to})")]
    InvalidPeriod { from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc> },
    /// A statement with more entries than one JSON document holds.
    #[error("the period has more than {max} entries: ask for CSV (`Accept: text/csv` or `format=csv`), which streams any number, or a shorter period")]
    StatementTooLarge { max: i64 },
    /// A race the caller should retry (with the same Idempotency-Key).
    #[error("{0}; retry")]
    Contended(&'static str),
    /// The Idempotency-Key row disappeared between its claim and its read
    /// (purged in between, twice): the request should be retried.
    #[error("the Idempotency-Key changed under this request")]
    KeyChanged,
    /// A posting debited an account with a floor whose row lock it did not
    /// take: a bug in the caller, refused before anything is written.
    #[error("account {0} is debited but was not locked")]
    DebitNotLocked(Uuid),
    /// A value read from the database that this code does not know: a newer
    /// schema, or a corrupted row. Never guessed at.
    #[error("unknown {what} `{value}` read from the database")]
    UnknownValue { what: &'static str, value: String },
    #[error("a tenant name has 1 to 200 characters")]
    InvalidTenantName,
    #[error("no tenant with the id or name `{0}`")]
    TenantNotFound(String),
    #[error("a rate limit is 0 (no limit) to 2147483647 per second, with a burst of 1 to 2147483647")]
    InvalidRateLimit,
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(deadpool_postgres::PoolError),
    #[error("database pool settings: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    #[error("database: {0}")]
    Diesel(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    DieselConnection(#[from] diesel::ConnectionError),
    #[error("migrations: {0}")]
    Migration(Box<dyn std::error::Error + Send + Sync>),
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Database(e),
            other => {
                // Every checkout's error passes here: the one count of callers
                // that waited DB_POOL_WAIT_MS for a connection and gave up.
                if matches!(other, deadpool_postgres::PoolError::Timeout(_)) {
                    metrics::counter!("ledger_db_pool_timeouts_total").increment(1);
                }
                Error::Pool(other)
            }
        }
    }
}

impl Error {
    /// An unknown stored value of `what`.
    pub fn unknown(what: &'static str, value: impl Into<String>) -> Error {
        Error::UnknownValue { what, value: value.into() }
    }

    /// Whether this is PostgreSQL being out of reach (stopped, restarting,
    /// recovering, refusing connections, the connection lost) rather than
    /// anything about the work asked of it: retrying the same work later
    /// is the answer, and the work is not to blame.
    pub fn database_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => unavailable(e),
            Error::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
            Error::Pool(deadpool_postgres::PoolError::Backend(e)) => unavailable(e),
            _ => false,
        }
    }
}

/// A closed connection, one that could not be made (refused, reset: an I/O
/// error with no SQLSTATE), or a SQLSTATE that says the server is going
/// away or not yet there: a connection exception (class 08), an
/// administrator's or a crash's shutdown, a cluster still starting or in
/// recovery, no connection slot left; or a read-only transaction refusing a
/// write: HAProxy sends new sessions to a standby as soon as Patroni names it
/// the primary, a moment before its promotion completes, and a transaction
/// begun in that moment stays read-only (measured in `make chaos-ha`). The
/// statement wrote nothing, so the retry is safe.
pub fn unavailable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code)
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        }
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
