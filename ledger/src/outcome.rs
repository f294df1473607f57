//! What an effect did, as a final answer: applied now, found already applied
//! under its natural key, or declined for a business reason. Each of them is
//! the answer to the request that asked for it; an `Err` is not an answer (a
//! validation failure, a conflict, a fault) and nothing was written.

use rust_decimal::Decimal;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub enum Outcome<T> {
    /// The effect happened in this transaction.
    Applied(T),
    /// The natural key already named an equal effect: it is returned as it
    /// is and nothing is written.
    Existing(T),
    /// A business decline: nothing is written, and the decline is the answer.
    Declined(Decline),
}

impl<T> Outcome<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Applied(t) => Outcome::Applied(f(t)),
            Outcome::Existing(t) => Outcome::Existing(f(t)),
            Outcome::Declined(d) => Outcome::Declined(d),
        }
    }

    /// The resource, unless the effect was declined.
    pub fn resource(&self) -> Option<&T> {
        match self {
            Outcome::Applied(t) | Outcome::Existing(t) => Some(t),
            Outcome::Declined(_) => None,
        }
    }
}

/// What a batch (group commit) made of one request's effect: its outcome,
/// or the error that refuses it, or nothing, left to run alone after the
/// batch. (One per request, short-lived: the size of what it carries is not
/// worth a box.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Batched<T> {
    /// Its outcome, or the error that refuses it (nothing of it written).
    Done(crate::Result<Outcome<T>>),
    /// Not decided here: run it alone once the batch has committed.
    Alone,
}

/// Why an effect was declined. A decline is a business answer, not a fault:
/// it is final for the request that got it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Decline {
    #[error("account {account} has insufficient funds")]
    InsufficientFunds { account: Uuid },
    #[error("only {available} of SKU `{sku}` available, {requested} requested")]
    OutOfStock { sku: String, available: i64, requested: i64 },
    #[error("the refund exceeds what remains of the charge ({remaining})")]
    RefundExceedsCharge { remaining: Decimal },
    /// The payment provider declined the card (its code, e.g.
    /// `card_declined/insufficient_funds`). Final for this attempt; the
    /// order's next attempt may follow.
    #[error("the card was declined ({code})")]
    CardDeclined { code: String },
    /// The payment provider failed a card refund (its reason, e.g.
    /// `lost_or_stolen_card`): the refund's ledger transaction was undone.
    /// Final for this reference; another reference may ask again.
    #[error("the payment provider failed the refund ({code})")]
    RefundFailed { code: String },
    /// A card authorization ended at the provider before its capture (its
    /// hold expired there, or it was cancelled): the charge is `voided`,
    /// nothing was taken.
    #[error("the authorization expired at the payment provider before the capture")]
    AuthorizationExpired,
}

/// The kinds of [`Decline`], without their details: what the API maps to a
/// status and a problem code, and what its documentation enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineKind {
    InsufficientFunds,
    OutOfStock,
    RefundExceedsCharge,
    CardDeclined,
    RefundFailed,
    AuthorizationExpired,
}

impl DeclineKind {
    pub const ALL: [DeclineKind; 6] = [
        DeclineKind::InsufficientFunds,
        DeclineKind::OutOfStock,
        DeclineKind::RefundExceedsCharge,
        DeclineKind::CardDeclined,
        DeclineKind::RefundFailed,
        DeclineKind::AuthorizationExpired,
    ];
}

impl Decline {
    pub fn kind(&self) -> DeclineKind {
        match self {
            Decline::InsufficientFunds { .. } => DeclineKind::InsufficientFunds,
            Decline::OutOfStock { .. } => DeclineKind::OutOfStock,
            Decline::RefundExceedsCharge { .. } => DeclineKind::RefundExceedsCharge,
            Decline::CardDeclined { .. } => DeclineKind::CardDeclined,
            Decline::RefundFailed { .. } => DeclineKind::RefundFailed,
            Decline::AuthorizationExpired => DeclineKind::AuthorizationExpired,
        }
    }
}
