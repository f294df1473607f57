//! The API's side of an effect at the provider
//! (`api::idempotency::run_two_phase` and `first`, driving
//! `service::effects`): the first transaction under the Idempotency-Key,
//! the provider call, the second transaction, and the reply. A request
//! lives in `State::requests` between its steps; a crash removes it there,
//! and what it committed stays.

use crate::bounds::{Bounds, Design};
use crate::ledger::{self, Begun};
use crate::provider::Fault;
use crate::sending;
use crate::state::{Asked, Effect, KeyRow, Reply, Request, State, Step};

/// A POST arrives and takes its first transaction (`idempotency::first`
/// with `cards::begin` or `refunds::begin`): a completed key replays; a
/// key at its recovery point resumes the effect; a new key claims, begins
/// and stores a final answer or marks the effect in flight. An answer known
/// here is heard at once.
pub fn post(state: &mut State, design: Design, bounds: &Bounds, effect: Effect, key: u8) {
    let slot = effect.slot();
    match state.ledger.keys[slot][key as usize] {
        KeyRow::Stored(reply) => hear(state, bounds, effect, reply),
        KeyRow::InFlight => state.requests.push(Request { effect, key, step: Step::Begun }),
        KeyRow::Absent => {
            let begun = match effect {
                Effect::Charge(a) => ledger::begin_charge(state, a),
                Effect::Refund(r) => ledger::begin_refund(state, design, bounds, r),
            };
            match begun {
                Begun::Refused => hear(state, bounds, effect, Reply::Refused),
                Begun::Final(reply) => {
                    state.ledger.keys[slot][key as usize] = KeyRow::Stored(reply);
                    hear(state, bounds, effect, reply);
                }
                Begun::InFlight => {
                    state.ledger.keys[slot][key as usize] = KeyRow::InFlight;
                    state.requests.push(Request { effect, key, step: Step::Begun });
                }
            }
        }
    }
}

/// `effects::ask`: the effect taken (a fresh lease, its first send time),
/// then the provider asked unless it is already final. `None` when the
/// fault means nothing here.
pub fn ask(state: &mut State, design: Design, bounds: &Bounds, index: usize, fault: Fault) -> Option<()> {
    let request = state.requests[index];
    let asked = if ledger::take(state, request.effect) {
        sending::ask(state, design, bounds, request.effect, fault)?
    } else if fault == Fault::None {
        Asked::Final
    } else {
        return None;
    };
    state.requests[index].step = Step::Asked(asked);
    Some(())
}

/// The second transaction (`cards::complete` or `refunds::complete`, with
/// `idempotency::store_final`), or `effects::abandon` after a refusal as
/// misconfigured (502, nothing stored; the key stays in flight unless the
/// charge was abandoned).
pub fn complete(state: &mut State, design: Design, bounds: &Bounds, index: usize) {
    let request = state.requests[index];
    let Step::Asked(asked) = request.step else { return };
    let reply = match asked {
        // 502 provider_rejected: abandoned, or left in flight under its key
        Asked::Rejected => {
            ledger::abandon(state, design, request.effect);
            Reply::Refused
        }
        Asked::Answer(answer) => ledger::complete(state, design, bounds, request.effect, Some(answer)),
        Asked::Unknown | Asked::Final => ledger::complete(state, design, bounds, request.effect, None),
    };
    let reply = if reply.is_final() {
        let key = &mut state.ledger.keys[request.effect.slot()][request.key as usize];
        match *key {
            KeyRow::InFlight => {
                *key = KeyRow::Stored(reply);
                reply
            }
            // a concurrent retry stored the answer first: that one it is
            KeyRow::Stored(first) => first,
            // abandoned meanwhile: nothing to store under it
            KeyRow::Absent => reply,
        }
    } else {
        reply
    };
    state.requests[index].step = Step::Answered(reply);
}

/// The response reaches the client.
pub fn reply(state: &mut State, bounds: &Bounds, index: usize) {
    let request = state.requests.remove(index);
    if let Step::Answered(reply) = request.step {
        hear(state, bounds, request.effect, reply);
    }
}

/// What the storefront does with an answer: a final one ends that effect
/// for it; a declined attempt moves it to the next attempt, if any.
pub fn hear(state: &mut State, bounds: &Bounds, effect: Effect, reply: Reply) {
    if !reply.is_final() {
        return;
    }
    match effect {
        Effect::Charge(a) if a == state.client.attempt => {
            if reply == Reply::CardDeclined && a + 1 < bounds.attempts {
                state.client.attempt += 1;
            } else {
                state.client.charge_known = true;
            }
        }
        Effect::Charge(_) => {}
        Effect::Refund(r) => state.client.refunds_known[r as usize] = true,
    }
}

/// The crash point a request would die at now.
pub fn crash_point(request: &Request) -> &'static str {
    match (request.effect, request.step) {
        (Effect::Charge(_), Step::Begun) => "card-after-charge-created",
        (Effect::Charge(_), Step::Asked(_)) => "card-after-provider",
        (Effect::Charge(_), Step::Answered(_)) => "card-after-complete",
        (Effect::Refund(_), Step::Begun) => "refund-after-created",
        (Effect::Refund(_), Step::Asked(_)) => "refund-after-provider",
        (Effect::Refund(_), Step::Answered(_)) => "refund-after-complete",
    }
}
