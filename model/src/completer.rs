//! The completer (`workers::completer`, `effects::complete_stale`): claims
//! the effects in flight whose lease passed, leasing them again
//! (`cards::claim_stale`, `refunds::claim_stale`), then drives each through
//! `effects::ask` as the API does: the row taken again right before the
//! send (a fresh lease, a counted send), the provider asked with the
//! effect's own key (a look-up first past the key window) only if it is
//! still in flight; and records the answer in the same second transaction
//! as the API. Design (e) sends straight from its claim instead.

use crate::bounds::{Bounds, Design};
use crate::ledger;
use crate::provider::Fault;
use crate::sending;
use crate::state::{Asked, Effect, Job, State};

/// `claim_stale`: leased again, its first send time set if unset; not a
/// send (in design (e) it is one, and counted).
pub fn claim(state: &mut State, design: Design, effect: Effect) {
    state.mark_sent(effect);
    if design == Design::CompleterSendsFromItsClaim {
        ledger::count_send(state, effect);
    }
    state.completer = Some(Job { effect, asked: None });
}

/// `effects::ask` for the claimed effect: taken again, then asked unless it
/// is already final (`Asked::Final`: recorded by someone else meanwhile).
/// Design (e): `Effect::ask_provider` from the claim, unread. `None` when
/// the fault means nothing here.
pub fn ask(state: &mut State, design: Design, bounds: &Bounds, fault: Fault) -> Option<()> {
    let job = state.completer?;
    let asked = if design == Design::CompleterSendsFromItsClaim || ledger::take(state, job.effect) {
        sending::ask(state, design, bounds, job.effect, fault)?
    } else if fault == Fault::None {
        Asked::Final
    } else {
        return None;
    };
    state.completer = Some(Job { effect: job.effect, asked: Some(asked) });
    Some(())
}

/// Records the answer (`Effect::complete`), abandons after a refusal as
/// misconfigured (`effects::abandon`), or leaves an unknown outcome for the
/// next lease; nothing to do for an effect already final.
pub fn complete(state: &mut State, design: Design, bounds: &Bounds) {
    let Some(Job { effect, asked: Some(asked) }) = state.completer.take() else { return };
    match asked {
        Asked::Answer(answer) => {
            ledger::complete(state, design, bounds, effect, Some(answer));
        }
        Asked::Rejected => {
            ledger::abandon(state, design, effect);
        }
        Asked::Unknown | Asked::Final => {}
    }
}
