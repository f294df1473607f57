//! What both binaries (`ledger-api` and `ledger-workers`) run around the
//! domain: settings read from the environment, declared once; logging; the
//! shutdown signal; the periodic purges of the retention windows; and the
//! signatures of the webhooks sent to storefronts (`signing`).

pub mod destinations;
pub mod effects;
pub mod provider;
pub mod purge;
pub mod settings;
pub mod shutdown;
pub mod signing;
pub mod telemetry;
