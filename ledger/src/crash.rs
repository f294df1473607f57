//! Named points where a test or the fault campaign makes the process die on
//! purpose, to prove that what happened before the point is not lost and what
//! comes after is not doubled; or freeze there, to prove that a process that
//! stops answering without closing its connections (a lost host, a paused
//! VM) cannot hold its locks for long.
//!
//! Compiled in only with the `crash-points` feature (on for `make test` and
//! the campaign, off for `make run` and release builds); even then a point
//! does nothing unless `LEDGER_CRASH_AT=<name>` names it (the process aborts
//! there) or `LEDGER_FREEZE_AT=<name>` does (the process stops itself with
//! SIGSTOP there: its sockets stay open and its database session stays in
//! its transaction until PostgreSQL ends it; SIGCONT resumes it, SIGKILL ends
//! it).
//!
//! Points: `api-after-key-lock`, `charge-after-account-lock`,
//! `api-after-commit`, and a card charge's phase boundaries
//! `card-after-charge-created`, `card-after-provider`, `card-after-complete`
//! (the API), `relay-after-publish`, `inventory-after-commit`,
//! `email-after-ack`, `email-after-send`, `completer-after-claim`,
//! `completer-after-provider` (the workers). A batch of charges (`charge_batch`, the API's group commit)
//! passes the first three as a lone charge does.

/// Aborts the process when `LEDGER_CRASH_AT` names this point, or stops it
/// when `LEDGER_FREEZE_AT` does (with the `crash-points` feature); a no-op
/// otherwise.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    use std::sync::OnceLock;
    static CRASH: OnceLock<Option<String>> = OnceLock::new();
    static FREEZE: OnceLock<Option<String>> = OnceLock::new();
    if CRASH.get_or_init(|| std::env::var("LEDGER_CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("crash point `{name}` reached: aborting");
        std::process::abort();
    }
    if FREEZE.get_or_init(|| std::env::var("LEDGER_FREEZE_AT").ok()).as_deref() == Some(name) {
        eprintln!("freeze point `{name}` reached: stopping (SIGSTOP)");
        // SAFETY: raise(3) sends a signal to this process; SIGSTOP cannot be
        // caught, so no handler runs and nothing else is touched.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Built without the `crash-points` feature: never crashes.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Whether this build can crash at its points.
pub const ENABLED: bool = cfg!(feature = "crash-points");
