//! The relay and the inventory consumer (`workers::relay`,
//! `workers::inventory`): an event committed with its effect is published
//! at least once (marked only after the broker confirmed it, so a crash in
//! between publishes it again), and applied once, the consumer's inbox
//! recording each message in the transaction that applies it (a copy, or
//! a redelivery after a crash before the ack, finds itself there).

use crate::state::State;

/// `publish_batch`: every unpublished row published (a copy into the
/// queue), not yet marked.
pub fn publish(state: &mut State) {
    for (i, row) in state.ledger.outbox.iter().enumerate() {
        if !row.published {
            state.pipeline.queue.push(i as u8);
            state.pipeline.relaying.push(i as u8);
        }
    }
}

/// `publish_batch`: the confirmed rows marked published, in the claiming
/// transaction.
pub fn mark(state: &mut State) {
    for i in std::mem::take(&mut state.pipeline.relaying) {
        state.ledger.outbox[i as usize].published = true;
    }
}

/// `relay-after-publish`: the batch's transaction is rolled back, its rows
/// stay unpublished and go out again.
pub fn relay_crashes(state: &mut State) {
    state.pipeline.relaying.clear();
}

/// `inventory::apply`: the inbox records the message and the stock is
/// committed in one transaction, or the inbox says it was applied already.
pub fn apply(state: &mut State, message: u8) {
    let row = &mut state.ledger.outbox[message as usize];
    // the inbox: a message it holds is not applied again
    if row.applied == 0 {
        row.applied = 1;
    }
    state.pipeline.consuming = Some(message);
}

/// The consumer acks: the broker drops the message.
pub fn ack(state: &mut State) {
    if let Some(message) = state.pipeline.consuming.take() {
        if let Some(i) = state.pipeline.queue.iter().position(|&m| m == message) {
            state.pipeline.queue.remove(i);
        }
    }
}

/// `inventory-after-commit`: the message is redelivered.
pub fn consumer_crashes(state: &mut State) {
    state.pipeline.consuming = None;
}
