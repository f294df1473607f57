//! The shape every effect at the payment provider shares (a card charge, a
//! card refund): a first transaction that decides everything the ledger can
//! decide and leaves the effect in flight ([`Begun`]), the provider call with
//! no transaction open, and a second transaction that records the answer
//! ([`Completion`]). `service::effects` drives them; each effect's module
//! (`cards`, `refunds`) owns its statements.

use crate::Outcome;

/// What an effect's first transaction found or made.
#[derive(Debug)]
pub enum Begun<T> {
    /// The answer is known without the provider (found by its natural key,
    /// declined by the ledger, or an effect the ledger makes alone).
    Final(Outcome<T>),
    /// In flight: ask the provider, with the effect's own provider key.
    InFlight(T),
}

/// What an effect's second transaction left.
#[derive(Debug)]
pub enum Completion<T> {
    /// The effect's final answer (recorded now or before).
    Final(Outcome<T>),
    /// Still in flight: no answer yet, or one that could not be recorded
    /// (flagged for an operator).
    Processing(T),
}
