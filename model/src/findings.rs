//! What the model shows about the code once one of the bounds'
//! assumptions is lifted: each finding is the code's design under bounds
//! that let the world do one more thing, and the property it then breaks.
//! The tests keep them: a change to the code that closes one makes its
//! test fail, to be turned into a check that the property holds.

use stateright::{Model, Property};

use crate::bounds::{Bounds, Design};
use crate::model::{Action, PaymentModel};
use crate::properties::{self, QUIET_LEDGER_EQUALS_PROVIDER};
use crate::state::State;

pub const FLAG_MEANS_DISAGREEMENT: &str = "once quiet, a webhook's flag stands beside a real disagreement";

/// A model whose traces `check` can print: the payment model it is, or
/// wraps.
pub trait Described {
    fn payments(&self) -> &PaymentModel;
}

impl Described for PaymentModel {
    fn payments(&self) -> &PaymentModel {
        self
    }
}

/// The payment model checked for one property more: a contradiction a
/// webhook flags for an operator (`provider_flags`) is a real one, not an
/// artefact of the order the webhooks came in.
#[derive(Clone, Debug)]
pub struct Flags(pub PaymentModel);

impl Described for Flags {
    fn payments(&self) -> &PaymentModel {
        &self.0
    }
}

impl Model for Flags {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.0.init_states()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.0.actions(state, actions)
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        self.0.next_state(last, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![Property::always(FLAG_MEANS_DISAGREEMENT, |m, s| {
            !m.0.quiet(s) || !s.ledger.flagged || !properties::ledger_equals_provider(&m.0.bounds, s)
        })]
    }
}

/// A refused resend abandons a charge the provider made. A configuration
/// error (a revoked or restricted secret key) is refused before the
/// provider's idempotency, so a resend after a lost answer can be refused
/// although its first send charged the card; `cards::abandon` then deletes
/// the charge and its key, and the client is told nothing was recorded.
pub fn rejected_resend() -> PaymentModel {
    let bounds = Bounds { rejections: 1, declines: false, attempts: 1, ..Bounds::charges() };
    PaymentModel::new(Design::Current, bounds)
}

/// A "never made" conclusion overtaken by a later send. Once a stored 5xx
/// and a look-up that finds nothing fail an attempt (`provider_error`),
/// another process that took the charge before (the completer, which does
/// not read the row again between its claim and its send), or that holds
/// the same conclusion, may still send it after the provider forgot the
/// key, and the provider charges a charge the ledger recorded failed. It
/// takes a process stalled past its lease while the key window ends.
pub fn stalled_send() -> PaymentModel {
    let bounds = Bounds { stalls: true, declines: false, attempts: 1, ..Bounds::charges() };
    PaymentModel::new(Design::Current, bounds)
}

/// The same, with a second attempt: the order is paid twice.
pub fn stalled_send_second_attempt() -> PaymentModel {
    let bounds = Bounds { stalls: true, declines: false, attempts: 2, ..Bounds::charges() };
    PaymentModel::new(Design::Current, bounds)
}

/// Webhooks out of order raise a false alarm: a refund that succeeded and
/// then failed, its `failed` event delivered before its `succeeded` one,
/// is reversed and then flagged `refund_succeeded_after_failed`, though the
/// ledger and the provider agree.
pub fn reordered_refund_webhooks() -> Flags {
    Flags(PaymentModel::new(Design::Current, Bounds::refunds()))
}

/// The property each finding breaks (a refused resend breaks two: the
/// second once the client retries past the key window).
pub const REJECTED_RESEND_BREAKS: &str = QUIET_LEDGER_EQUALS_PROVIDER;
pub const REJECTED_RESEND_THEN_RETRY_BREAKS: &str = properties::ONE_PAYMENT_PER_ATTEMPT;
pub const STALLED_SEND_BREAKS: &str = QUIET_LEDGER_EQUALS_PROVIDER;
pub const STALLED_SEND_SECOND_ATTEMPT_BREAKS: &str = properties::ORDER_PAID_ONCE;
