//! What each effect asks the provider (`service::provider`: `Provider::ask`,
//! `Provider::ask_refund`, `look_up`, `find_refund`): past the key window,
//! measured from the effect's first send, a look-up before any send; a
//! stored 5xx read as "never made" only once the search lag has passed and
//! a look-up finds nothing. A look-up and the send after it are one step:
//! they follow each other within one call's timeout, and what may happen
//! between them (another actor's send with the same key) is replayed by
//! the key.

use crate::bounds::{Bounds, Design};
use crate::provider::{Fault, Sent};
use crate::state::{elapsed, Answer, Asked, Effect, State, KEY_WINDOW, SEARCH_LAG};

/// Asks the provider for an effect the caller has just taken (its first
/// send time set). `None` when `fault` means nothing for this call.
pub fn ask(state: &mut State, design: Design, bounds: &Bounds, effect: Effect, fault: Fault) -> Option<Asked> {
    let first_sent = state.first_sent(effect)?;
    let age = elapsed(state.clock, first_sent);
    let looks_up = age >= KEY_WINDOW && design != Design::ResendWithoutLookUp;
    if looks_up {
        if let Some(found) = look_up(state, design, effect) {
            return match fault {
                Fault::None => Some(Asked::Answer(found)),
                // a look-up that failed, whatever the reason, is no answer
                Fault::AnswerLost | Fault::Rejected => Some(Asked::Unknown),
                Fault::NotReached | Fault::ServerErrorBefore | Fault::ServerErrorAfter => None,
            };
        }
        // never reached the provider: sending it is the first time
    }
    let now = state.clock;
    let (payments, refunds) = (state.provider.payments.len(), state.provider.refunds.len());
    let sent = match effect {
        Effect::Charge(a) => {
            let row = state.ledger.charges[a as usize]?;
            state.provider.send_payment(a, row.incarnation, state.cards[a as usize], now, fault)?
        }
        Effect::Refund(r) => {
            let payment = paid_payment(state)?;
            state.provider.send_refund(r, payment, &bounds.refund_amounts, now, fault)?
        }
    };
    let made = state.provider.payments.len() > payments || state.provider.refunds.len() > refunds;
    state.provider.made_for_final |= made && !state.in_flight(effect);
    Some(match sent {
        Sent::Made(answer) => Asked::Answer(answer),
        Sent::Lost => Asked::Unknown,
        Sent::Rejected => Asked::Rejected,
        // an invalid request: the refund stays pending, loudly
        Sent::Refused => Asked::Rejected,
        // Stored for the key and replayed while it is kept: resending cannot
        // make the effect. Once the lag has passed, a look-up that finds
        // nothing means it was never made.
        Sent::ServerError if age < SEARCH_LAG => Asked::Unknown,
        Sent::ServerError => Asked::Answer(look_up(state, design, effect).unwrap_or(match effect {
            Effect::Charge(_) => Answer::Declined(None),
            Effect::Refund(_) => Answer::RefundFailed(None),
        })),
    })
}

/// The payment the ledger's paid charge recorded: what its refunds draw on.
pub fn paid_payment(state: &State) -> Option<u8> {
    state.ledger.charges[state.paid_attempt()? as usize]?.payment
}

/// The effect at the provider by the metadata it was sent with: a list in
/// the code's design, the lagging search in design (a).
fn look_up(state: &State, design: Design, effect: Effect) -> Option<Answer> {
    match effect {
        Effect::Charge(a) => state.provider.find_payment(a, design == Design::LaggingSearch),
        Effect::Refund(r) => state.provider.find_refund(paid_payment(state)?, r),
    }
}
