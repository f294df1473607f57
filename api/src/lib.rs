//! The ledger's REST API: HTTP only. Every statement it runs is `ledger`'s.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;
pub mod wire;
