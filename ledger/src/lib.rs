//! The ledger: money and stock, double entry, append-only, with natural keys
//! that make every effect happen at most once. Every SQL statement of the
//! service lives in this crate, beside the function that runs it; the crate
//! knows nothing of HTTP or AMQP. Its one wire format is [`events`], the
//! contract with the consumers of what it publishes.
//!
//! Write functions take a pooled `deadpool_postgres::Transaction` so that the
//! caller composes them with its own writes (the idempotency record, the
//! outbox) in one commit, and so that their statements run prepared and
//! cached on the connection (`db::Cached`). Read functions take any client.
//! Effects return an [`Outcome`]: applied, existing by natural key, or
//! declined; an `Err` means nothing was written.

pub mod accounts;
pub mod audit;
pub mod card_batch;
pub mod card_holds;
pub mod cards;
pub mod charge_batch;
pub mod charges;
pub mod checkpoints;
pub mod crash;
pub mod db;
pub mod emails;
pub mod error;
pub mod events;
pub mod feed;
pub mod holds;
pub mod idempotency;
pub mod inbox;
pub mod inventory;
pub mod money;
pub mod outbox;
pub mod outcome;
pub mod pagination;
pub mod phases;
pub mod posting;
pub mod provider_events;
pub mod refunds;
pub mod request_id;
pub mod reservation_batch;
pub mod retention;
pub mod schema;
pub mod statements;
pub mod stored;
pub mod tenants;
pub mod transfers;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

pub use error::{Error, Result};
pub use money::Currency;
pub use outcome::{Batched, Decline, DeclineKind, Outcome};
pub use tenants::TenantId;
