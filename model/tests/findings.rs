//! Gaps in the code the model shows once an assumption of its bounds is
//! lifted (`ledger_model::findings`): each test passes while the gap is
//! there and prints its trace; the change that closes one turns its test
//! into a check that the property holds.

use ledger_model::check::{self, Report};
use ledger_model::findings::{self, Described, FLAG_MEANS_DISAGREEMENT};
use ledger_model::model::Action;
use ledger_model::state::State;
use stateright::Model;

fn found<M>(model: M, property: &'static str) -> Report
where
    M: Model<State = State, Action = Action> + Described + Clone + Send + Sync + 'static,
{
    let report = check::run(model, 1, Some(property));
    println!("{}", report.render());
    assert!(report.counterexamples.contains_key(property), "no counterexample to \"{property}\": the gap is closed?");
    report
}

#[test]
fn a_refused_resend_abandons_a_charge_the_provider_made() {
    found(findings::rejected_resend(), findings::REJECTED_RESEND_BREAKS);
}

#[test]
fn a_retry_after_a_refused_resend_charges_an_attempt_twice() {
    found(findings::rejected_resend(), findings::REJECTED_RESEND_THEN_RETRY_BREAKS);
}

#[test]
fn a_stalled_process_sends_a_charge_recorded_failed() {
    found(findings::stalled_send(), findings::STALLED_SEND_BREAKS);
}

#[test]
fn refund_webhooks_out_of_order_raise_a_false_flag() {
    found(findings::reordered_refund_webhooks(), FLAG_MEANS_DISAGREEMENT);
}

#[test]
fn a_stalled_process_pays_an_order_twice() {
    found(findings::stalled_send_second_attempt(), findings::STALLED_SEND_SECOND_ATTEMPT_BREAKS);
}
