//! The completer (`workers::completer`, `effects::complete_stale`): takes
//! an effect in flight whose lease passed, leasing it again
//! (`cards::claim_stale`, `refunds::claim_stale`), asks the provider with
//! the effect's own key (a look-up first past the key window), and records
//! the answer in the same second transaction as the API. It does not read
//! the row again between its claim and its send.

use crate::bounds::{Bounds, Design};
use crate::ledger;
use crate::provider::Fault;
use crate::sending;
use crate::state::{Asked, Effect, Job, State};

/// `claim_stale`: leased again, its first send time set if unset.
pub fn claim(state: &mut State, effect: Effect) {
    state.mark_sent(effect);
    state.completer = Some(Job { effect, asked: None });
}

/// `Effect::ask_provider` for the claimed effect.
pub fn ask(state: &mut State, design: Design, bounds: &Bounds, fault: Fault) -> Option<()> {
    let job = state.completer?;
    let asked = sending::ask(state, design, bounds, job.effect, fault)?;
    state.completer = Some(Job { effect: job.effect, asked: Some(asked) });
    Some(())
}

/// Records the answer (`Effect::complete`), abandons after a refusal as
/// misconfigured, or leaves an unknown outcome for the next lease.
pub fn complete(state: &mut State, design: Design, bounds: &Bounds) {
    let Some(Job { effect, asked: Some(asked) }) = state.completer.take() else { return };
    match asked {
        Asked::Answer(answer) => {
            ledger::complete(state, design, bounds, effect, Some(answer));
        }
        Asked::Rejected => {
            ledger::abandon(state, effect);
        }
        Asked::Unknown | Asked::Final => {}
    }
}
