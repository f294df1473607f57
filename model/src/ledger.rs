//! The ledger's transactions, one function each, as `ledger::cards`,
//! `ledger::refunds` and `ledger::provider_events` make them: each is one
//! PostgreSQL transaction under the charge's row lock, so one step here.

use crate::bounds::{Bounds, Design, MAX_ATTEMPTS};
use crate::state::{elapsed, KEY_WINDOW};
use crate::state::{
    Answer, ChargeRow, ChargeStatus, Effect, KeyRow, LedgerEvent, OutboxRow, ProviderEvent, RefundRow, RefundStatus,
    Reply, State, CHARGE_AMOUNT,
};

/// What a first transaction found or made (`ledger::phases::Begun`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begun {
    /// The answer is known without the provider (stored for the key).
    Final(Reply),
    /// In flight: ask the provider.
    InFlight,
    /// Refused, nothing written, nothing stored (`order_already_charged`,
    /// `charge_not_paid`).
    Refused,
}

fn enqueue(state: &mut State, event: LedgerEvent) {
    state.ledger.outbox.push(OutboxRow { event, published: false, applied: 0 });
}

/// `cards::begin`: the attempt's charge found by its natural key, or made
/// `processing`; another attempt of an order that is paid
/// or still processing is refused.
pub fn begin_charge(state: &mut State, attempt: u8) -> Begun {
    if let Some(row) = state.ledger.charges[attempt as usize] {
        return match row.status {
            ChargeStatus::Processing => Begun::InFlight,
            ChargeStatus::Failed => Begun::Final(Reply::CardDeclined),
            ChargeStatus::Succeeded => Begun::Final(Reply::Paid),
        };
    }
    let taken =
        (0..MAX_ATTEMPTS).any(|a| matches!(state.ledger.charges[a], Some(c) if c.status != ChargeStatus::Failed));
    if taken {
        return Begun::Refused;
    }
    let incarnation = state.ledger.incarnations[attempt as usize];
    state.ledger.incarnations[attempt as usize] += 1;
    state.ledger.charges[attempt as usize] =
        Some(ChargeRow { status: ChargeStatus::Processing, payment: None, first_sent: None, sends: 0, incarnation });
    Begun::InFlight
}

/// `refunds::begin`: found by its reference, or decided whole under the
/// charge's lock (what remains, the seller's share) and posted `pending`.
/// In design (b) nothing is checked or posted here.
pub fn begin_refund(state: &mut State, design: Design, bounds: &Bounds, reference: u8) -> Begun {
    if state.paid_attempt().is_none() {
        return Begun::Refused;
    }
    if let Some(row) = state.ledger.refunds[reference as usize] {
        return match row.status {
            RefundStatus::Pending => Begun::InFlight,
            RefundStatus::Failed => Begun::Final(Reply::RefundFailed),
            RefundStatus::Succeeded => Begun::Final(Reply::Refunded),
        };
    }
    let amount = bounds.refund_amounts[reference as usize];
    let posted = design != Design::RefundRulesAfterProvider;
    if posted {
        // refund_exceeds_charge, insufficient_funds: declined before anything leaves
        if !allowed(state, amount) {
            return Begun::Final(Reply::RefundFailed);
        }
        state.ledger.seller -= amount;
        state.ledger.refunded += amount;
    }
    state.ledger.refunds[reference as usize] =
        Some(RefundRow { status: RefundStatus::Pending, provider_refund: None, first_sent: None, posted });
    Begun::InFlight
}

/// A refund's rules: no more than remains of the charge, and a seller who
/// can give its share back.
fn allowed(state: &State, amount: u8) -> bool {
    state.ledger.refunded + amount <= CHARGE_AMOUNT && state.ledger.seller >= amount
}

/// `cards::take`, `refunds::take`, right before a send: a fresh lease and
/// the first send time, when the effect is still in flight; whether it is.
/// A charge's send is counted (`card_charges.sends`).
pub fn take(state: &mut State, effect: Effect) -> bool {
    if !state.in_flight(effect) {
        return false;
    }
    state.mark_sent(effect);
    count_send(state, effect);
    true
}

/// `sends = sends + 1` on a charge's row (up to 2: more than one is all
/// that is read).
pub fn count_send(state: &mut State, effect: Effect) {
    if let Effect::Charge(a) = effect {
        if let Some(row) = &mut state.ledger.charges[a as usize] {
            row.sends = (row.sends + 1).min(2);
        }
    }
}

/// The reply a final effect gives.
fn reply_of(state: &State, effect: Effect) -> Reply {
    match effect {
        Effect::Charge(a) => match state.ledger.charges[a as usize].map(|c| c.status) {
            Some(ChargeStatus::Succeeded) => Reply::Paid,
            Some(ChargeStatus::Failed) => Reply::CardDeclined,
            Some(ChargeStatus::Processing) => Reply::InFlight,
            // abandoned meanwhile: not found, nothing to store
            None => Reply::Refused,
        },
        Effect::Refund(r) => match state.ledger.refunds[r as usize].map(|f| f.status) {
            Some(RefundStatus::Succeeded) => Reply::Refunded,
            Some(RefundStatus::Failed) => Reply::RefundFailed,
            Some(RefundStatus::Pending) => Reply::InFlight,
            None => Reply::Refused,
        },
    }
}

/// The second transaction (`cards::complete`, `refunds::complete`): records
/// the answer under the row lock, unless the effect is already final (then
/// it is returned as it is). `None` only reads it. The reply is
/// `InFlight` while it stays in flight.
pub fn complete(state: &mut State, design: Design, bounds: &Bounds, effect: Effect, answer: Option<Answer>) -> Reply {
    // "never made" (a stored 5xx, nothing found) is recorded only while the
    // key window of the first send has not passed: the provider still holds
    // the key, so every send so far was answered with its stored 5xx.
    // Past it, another send may have made the effect: left in flight.
    let never_made = matches!(answer, Some(Answer::Declined(None) | Answer::RefundFailed(None)));
    let past_window = state.first_sent(effect).is_some_and(|f| elapsed(state.clock, f) >= KEY_WINDOW);
    let answer = if never_made && state.in_flight(effect) && past_window { None } else { answer };
    match effect {
        Effect::Charge(a) => complete_charge(state, a, answer),
        Effect::Refund(r) => complete_refund(state, design, bounds, r, answer),
    }
}

fn complete_charge(state: &mut State, attempt: u8, answer: Option<Answer>) -> Reply {
    let Some(row) = &mut state.ledger.charges[attempt as usize] else { return Reply::Refused };
    if row.status != ChargeStatus::Processing {
        return reply_of(state, Effect::Charge(attempt));
    }
    match answer {
        Some(Answer::Paid(p)) => {
            row.status = ChargeStatus::Succeeded;
            row.payment = Some(p);
            // the one ledger transaction: clearing account to the seller
            state.ledger.seller += CHARGE_AMOUNT;
            enqueue(state, LedgerEvent::ChargeSucceeded(attempt));
            Reply::Paid
        }
        Some(Answer::Declined(p)) => {
            row.status = ChargeStatus::Failed;
            row.payment = p;
            Reply::CardDeclined
        }
        _ => Reply::InFlight,
    }
}

fn complete_refund(state: &mut State, design: Design, bounds: &Bounds, reference: u8, answer: Option<Answer>) -> Reply {
    let Some(row) = state.ledger.refunds[reference as usize] else { return Reply::Refused };
    let amount = bounds.refund_amounts[reference as usize];
    match (row.status, answer) {
        (RefundStatus::Pending, Some(Answer::Refunded(made))) => {
            let mut row = row;
            row.provider_refund = Some(made);
            if !row.posted {
                // design (b): the rules, only now that the money has left
                if design == Design::RefundRulesAfterProvider && !allowed(state, amount) {
                    row.status = RefundStatus::Failed;
                    state.ledger.refunds[reference as usize] = Some(row);
                    return Reply::RefundFailed;
                }
                state.ledger.seller -= amount;
                state.ledger.refunded += amount;
                row.posted = true;
            }
            row.status = RefundStatus::Succeeded;
            state.ledger.refunds[reference as usize] = Some(row);
            enqueue(state, LedgerEvent::Refunded(reference));
            Reply::Refunded
        }
        (RefundStatus::Pending | RefundStatus::Succeeded, Some(Answer::RefundFailed(made))) => {
            // only the refund the provider made can fail after succeeding
            if row.status == RefundStatus::Succeeded && (made.is_none() || made != row.provider_refund) {
                return reply_of(state, Effect::Refund(reference));
            }
            let mut row = row;
            if row.posted {
                // one refund_reversal transaction: the seller's share back
                state.ledger.seller += amount;
                state.ledger.refunded -= amount;
                row.posted = false;
            }
            row.status = RefundStatus::Failed;
            row.provider_refund = row.provider_refund.or(made);
            state.ledger.refunds[reference as usize] = Some(row);
            enqueue(state, LedgerEvent::RefundFailed(reference));
            Reply::RefundFailed
        }
        _ => reply_of(state, Effect::Refund(reference)),
    }
}

/// `cards::abandon` after the provider refused the request as
/// misconfigured: a charge still in flight whose refused send is the only
/// one ever taken (nothing can have reached the provider) is deleted with
/// the keys that name it (`true`). One sent before stays in flight, to be
/// sent again with its key once the configuration is fixed, as a refund
/// does (`false`): the provider refuses before it looks at the key, so an
/// earlier send whose answer was lost may have charged the card. Design
/// (d) deletes it whatever was sent before.
pub fn abandon(state: &mut State, design: Design, effect: Effect) -> bool {
    let sent_once = |a: u8| matches!(state.ledger.charges[a as usize], Some(c) if c.sends <= 1);
    match effect {
        Effect::Charge(a) if state.in_flight(effect) && (design == Design::AbandonAfterAnySend || sent_once(a)) => {
            state.ledger.charges[a as usize] = None;
            for key in state.ledger.keys[effect.slot()].iter_mut() {
                if *key == KeyRow::InFlight {
                    *key = KeyRow::Absent;
                }
            }
            true
        }
        _ => false,
    }
}

/// `provider_events::receive`: the inbox drops a repeat; a payment or
/// refund outcome completes its effect when in flight (the same second
/// transaction); one that contradicts what is recorded moves no money and
/// is flagged.
pub fn receive_webhook(state: &mut State, design: Design, bounds: &Bounds, event: ProviderEvent) {
    if state.ledger.webhooks_seen.contains(&event) {
        return;
    }
    state.ledger.webhooks_seen.push(event);
    match event {
        ProviderEvent::Payment(p) => {
            let answer = state.provider.answer_of_payment(p);
            let payment = state.provider.payments[p as usize];
            // the charge: by the payment recorded on it, else by the metadata sent
            let by_payment =
                (0..MAX_ATTEMPTS).find(|&a| matches!(state.ledger.charges[a], Some(c) if c.payment == Some(p)));
            let by_metadata = state.ledger.charges[payment.attempt as usize]
                .filter(|c| c.incarnation == payment.incarnation)
                .map(|_| payment.attempt as usize);
            let Some(a) = by_payment.or(by_metadata) else { return };
            let effect = Effect::Charge(a as u8);
            if state.in_flight(effect) {
                complete(state, design, bounds, effect, Some(answer));
                return;
            }
            let row = state.ledger.charges[a].expect("found");
            let contradiction = match answer {
                // a second payment, or a success of a charge recorded failed
                Answer::Paid(_) => row.payment != Some(p) || row.status == ChargeStatus::Failed,
                Answer::Declined(_) => row.status == ChargeStatus::Succeeded && row.payment == Some(p),
                _ => false,
            };
            state.ledger.flagged |= contradiction;
        }
        ProviderEvent::RefundSucceeded(made) | ProviderEvent::RefundFailed(made) => {
            let answer = match event {
                ProviderEvent::RefundSucceeded(_) => Answer::Refunded(made),
                _ => Answer::RefundFailed(Some(made)),
            };
            let references = bounds.references() as usize;
            let by_id = (0..references)
                .find(|&r| matches!(state.ledger.refunds[r], Some(f) if f.provider_refund == Some(made)));
            let reference = state.provider.refunds[made as usize].reference as usize;
            let by_metadata = state.ledger.refunds[reference].map(|_| reference);
            let Some(r) = by_id.or(by_metadata) else { return };
            let row = state.ledger.refunds[r].expect("found");
            let contradiction = match (row.status, answer) {
                // a refund failed by our own conclusion (none recorded), or
                // another refund than the one the provider failed; the same
                // one is its older event, delivered after the failure
                // (recorded already), unless in design (f)
                (RefundStatus::Failed, Answer::Refunded(m)) => {
                    design == Design::FlagEverySuccessAfterFailure || row.provider_refund != Some(m)
                }
                (RefundStatus::Succeeded, Answer::Refunded(m)) => row.provider_refund != Some(m),
                _ => false,
            };
            if contradiction {
                state.ledger.flagged = true;
                return;
            }
            complete(state, design, bounds, Effect::Refund(r as u8), Some(answer));
        }
    }
}
