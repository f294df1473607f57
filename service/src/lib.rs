//! What both binaries (`ledger-api` and `ledger-workers`) run around the
//! domain: settings read from the environment, declared once; logging; the
//! shutdown signal; and the periodic purges of the retention windows.

pub mod effects;
pub mod provider;
pub mod purge;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
