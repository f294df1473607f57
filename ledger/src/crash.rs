//! Named points where a test or the fault campaign makes the process die on
//! purpose, to prove that what happened before the point is not lost and what
//! comes after is not doubled.
//!
//! Compiled in only with the `crash-points` feature (on for `make test` and
//! the campaign, off for `make run` and release builds); even then a point
//! does nothing unless `LEDGER_CRASH_AT=<name>` names it.
//!
//! Points: `api-after-key-lock`, `api-after-commit` (the API),
//! `relay-after-publish`, `inventory-after-commit`, `email-after-ack`,
//! `email-after-send` (the workers).

/// Aborts the process when `LEDGER_CRASH_AT` names this point (with the
/// `crash-points` feature); a no-op otherwise.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("LEDGER_CRASH_AT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("crash point `{name}` reached: aborting");
        std::process::abort();
    }
}

/// Built without the `crash-points` feature: never crashes.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether this build can crash at its points.
pub const ENABLED: bool = cfg!(feature = "crash-points");
