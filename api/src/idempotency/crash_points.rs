//! The crash points of a key's transaction, alone or batched, in one place
//! (`ledger::crash`; the tests kill the process at each): an effect at the
//! provider has its own (`service::effects::Effect`).

/// The transaction holds its keys' rows, no effect has run.
pub(super) fn keys_locked() {
    ledger::crash::point("api-after-key-lock");
}

/// The effect and its answer are committed, the client has not heard back.
pub(super) fn committed() {
    ledger::crash::point("api-after-commit");
}
