//! What must hold, as predicates over one state: the promises of
//! docs/guarantees.md for card charges and refunds, and of the pipeline.
//! "Quiet" (nothing left to do for anyone, `PaymentModel::quiet`) is the
//! caller's; the predicates here only read the state.

use crate::bounds::Bounds;
use crate::state::{elapsed, ChargeStatus, Effect, LedgerEvent, RefundStatus, State, Step, KEY_WINDOW};

pub const ONE_PAYMENT_PER_ATTEMPT: &str = "at most one provider payment per (order, attempt)";
pub const ONE_REFUND_PER_REFERENCE: &str = "at most one provider refund per (charge, reference)";
pub const ORDER_PAID_ONCE: &str = "at most one succeeded provider payment per order";
pub const NOTHING_REFUSED: &str = "nothing reaches the provider that it refuses";
pub const NOTHING_MADE_FOR_FINAL: &str = "nothing is made at the provider for an effect the ledger recorded final";
pub const QUIET_LEDGER_EQUALS_PROVIDER: &str = "once quiet, the ledger equals the provider";
pub const QUIET_NOTHING_IN_FLIGHT: &str = "once quiet, no charge processing and no refund pending";
pub const QUIET_FLAG_MEANS_DISAGREEMENT: &str = "once quiet, a flag stands beside a real disagreement";
pub const EVENTS_APPLIED_ONCE: &str = "every committed event applied exactly once";
pub const SOMETIMES_FOUND_PAST_WINDOW: &str = "the completer is to send an effect made under a forgotten key";
pub const SOMETIMES_RECORDED_BY_ANOTHER: &str = "a request holds an answer someone else recorded first";
pub const SOMETIMES_REFUND_REVERSED: &str = "a posted refund is reversed";
pub const SOMETIMES_EVENT_TWICE: &str = "the queue holds an event twice";

pub fn one_payment_per_attempt(bounds: &Bounds, s: &State) -> bool {
    (0..bounds.attempts).all(|a| s.provider.payments.iter().filter(|p| p.attempt == a).count() <= 1)
}

pub fn one_refund_per_reference(bounds: &Bounds, s: &State) -> bool {
    (0..bounds.references()).all(|r| s.provider.refunds.iter().filter(|f| f.reference == r).count() <= 1)
}

pub fn order_paid_once(s: &State) -> bool {
    s.provider.payments.iter().filter(|p| p.paid).count() <= 1
}

/// The ledger's refund rules keep every refund within what remains of the
/// payment, so the provider never refuses one (an invalid request there
/// would leave the refund pending forever).
pub fn nothing_refused(s: &State) -> bool {
    !s.provider.refused
}

/// Every send reads the row right before it: the provider makes no payment
/// or refund for an effect the ledger has already recorded final (a failed
/// attempt charged, a failed refund made).
pub fn nothing_made_for_final(s: &State) -> bool {
    !s.provider.made_for_final
}

/// Each attempt's status and payment, the amount taken, each refund's
/// status and the amount refunded, as the provider has them.
pub fn ledger_equals_provider(bounds: &Bounds, s: &State) -> bool {
    let amounts = &bounds.refund_amounts;
    for a in 0..bounds.attempts {
        let made = s.provider.payments.iter().enumerate().filter(|(_, p)| p.attempt == a);
        let paid: Vec<u8> = made.clone().filter(|(_, p)| p.paid).map(|(i, _)| i as u8).collect();
        let agrees = match s.ledger.charges[a as usize] {
            // never recorded (or abandoned): nothing may exist at the provider
            None => made.count() == 0,
            Some(row) => match row.status {
                ChargeStatus::Succeeded => paid.len() == 1 && row.payment == Some(paid[0]),
                ChargeStatus::Failed => paid.is_empty(),
                ChargeStatus::Processing => false,
            },
        };
        if !agrees {
            return false;
        }
    }
    let refunded_at_provider: u8 =
        s.provider.refunds.iter().filter(|f| !f.failed).map(|f| amounts[f.reference as usize]).sum();
    if s.ledger.refunded != refunded_at_provider {
        return false;
    }
    for r in 0..bounds.references() {
        let at_provider = s.provider.refunds.iter().any(|f| f.reference == r && !f.failed);
        let agrees = match s.ledger.refunds[r as usize] {
            None => !at_provider,
            Some(row) => match row.status {
                RefundStatus::Succeeded => at_provider,
                RefundStatus::Failed => !at_provider,
                RefundStatus::Pending => false,
            },
        };
        if !agrees {
            return false;
        }
    }
    true
}

/// A contradiction a webhook flagged for an operator (`provider_flags`) is a
/// real one: the ledger and the provider disagree, the flag is no artefact
/// of the order the webhooks came in.
pub fn flag_means_disagreement(bounds: &Bounds, s: &State) -> bool {
    !s.ledger.flagged || !ledger_equals_provider(bounds, s)
}

pub fn nothing_in_flight(bounds: &Bounds, s: &State) -> bool {
    let charges = (0..bounds.attempts).map(Effect::Charge);
    let mut effects = charges.chain((0..bounds.references()).map(Effect::Refund));
    effects.all(|e| !s.in_flight(e))
}

pub fn applied_at_most_once(s: &State) -> bool {
    s.ledger.outbox.iter().all(|row| row.applied <= 1)
}

pub fn every_event_applied(s: &State) -> bool {
    s.ledger.outbox.iter().all(|row| row.published && row.applied == 1)
}

/// The completer holds an effect in flight whose key the provider forgot,
/// and which the provider made: only its look-up stands between it and a
/// second payment or refund.
pub fn found_past_window(s: &State) -> bool {
    let Some(crate::state::Job { effect, asked: None }) = s.completer else { return false };
    let made = match effect {
        Effect::Charge(a) => s.provider.payments.iter().any(|p| p.attempt == a),
        Effect::Refund(r) => s.provider.refunds.iter().any(|f| f.reference == r),
    };
    let past = matches!(s.first_sent(effect), Some(sent) if elapsed(s.clock, sent) >= KEY_WINDOW);
    made && past && s.in_flight(effect) && s.provider.keys[effect.slot()].is_none()
}

/// A request holds the provider's answer for an effect that a webhook, the
/// completer or a retry has already recorded.
pub fn recorded_by_another(s: &State) -> bool {
    s.requests.iter().any(|r| matches!(r.step, Step::Asked(crate::state::Asked::Answer(_))) && !s.in_flight(r.effect))
}

pub fn refund_reversed(s: &State) -> bool {
    s.ledger.outbox.iter().any(|row| matches!(row.event, LedgerEvent::RefundFailed(_)))
}

pub fn event_queued_twice(s: &State) -> bool {
    s.pipeline.queue.windows(2).any(|w| w[0] == w[1])
}
