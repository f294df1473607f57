//! What can go wrong in the ledger, in domain terms. No HTTP here: the API
//! maps these to status codes and problem codes in one place.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::money::{AmountError, Currency};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error("{0}")]
    Invalid(String),
    #[error("account {0} does not exist")]
    AccountNotFound(Uuid),
    #[error("charge {0} does not exist")]
    ChargeNotFound(Uuid),
    #[error("transfer {0} does not exist")]
    TransferNotFound(Uuid),
    #[error("reservation {0} does not exist")]
    ReservationNotFound(Uuid),
    #[error("SKU `{0}` does not exist")]
    SkuNotFound(String),
    #[error("account {account} holds {account_currency}, not {requested}")]
    CurrencyMismatch { account: Uuid, account_currency: Currency, requested: Currency },
    #[error("the accounts of one movement must be different accounts")]
    SameAccount,
    #[error("the platform fee cannot exceed the charged amount")]
    FeeTooLarge,
    #[error("account {account} has insufficient funds")]
    InsufficientFunds { account: Uuid },
    #[error("only {available} of SKU `{sku}` available, {requested} requested")]
    OutOfStock { sku: String, available: i64, requested: i64 },
    #[error("the refund exceeds what remains of the charge ({remaining})")]
    RefundExceedsCharge { remaining: Decimal },
    #[error("{0}")]
    NaturalKeyConflict(String),
    #[error("reservation {id} is {status} and can no longer be released")]
    ReservationNotHeld { id: Uuid, status: String },
    #[error("a concurrent request changed the same rows; retry")]
    Contention,
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(String),
}

impl Error {
    /// Whether this error is a business outcome that the idempotency layer
    /// stores and replays like a success (a decline is an answer, not a fault).
    pub fn is_business_outcome(&self) -> bool {
        matches!(self, Error::InsufficientFunds { .. } | Error::OutOfStock { .. } | Error::RefundExceedsCharge { .. })
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Database(e),
            other => Error::Pool(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
