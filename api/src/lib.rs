//! The ledger's REST API.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod idempotency;
pub mod openapi;
pub mod purge;
pub mod routes;
pub mod startup;
