//! The ledger: money and stock, double entry, append-only, with natural keys
//! that make every effect happen at most once.
//!
//! Write functions take a pooled `deadpool_postgres::Transaction` so that the
//! caller composes them with its own writes (the idempotency record, the
//! outbox) in one commit, and so that their statements run prepared and
//! cached on the connection (`db::Cached`). Read functions take any client.

pub mod accounts;
pub mod audit;
pub mod charges;
pub mod crash;
pub mod db;
pub mod error;
pub mod inventory;
pub mod money;
pub mod outbox;
pub mod posting;
pub mod retention;
pub mod schema;
pub mod tenants;
pub mod transfers;

pub use error::{Error, Result};
pub use money::Currency;
pub use tenants::TenantId;

/// A write that found its natural key already taken by an equal request
/// returns the existing resource with `created: false`.
#[derive(Debug, Clone)]
pub struct Created<T> {
    pub resource: T,
    pub created: bool,
}
