//! The protocol as the code has it keeps every property within the bounds;
//! each known-bad design breaks the property it is known to break, with a
//! shortest counterexample printed as a trace. The designs the code had
//! before the fixes of the defects the model found are in `defects.rs`.

use ledger_model::bounds::{Bounds, Design};
use ledger_model::check::{self, breaks, holds};
use ledger_model::properties::{ONE_PAYMENT_PER_ATTEMPT, QUIET_LEDGER_EQUALS_PROVIDER};

#[test]
fn the_code_keeps_every_property_of_card_charges() {
    holds(Bounds::charges(), 1);
}

#[test]
fn the_code_keeps_every_property_of_card_refunds() {
    holds(Bounds::refunds(), 1);
}

/// A card that pays, and one send: the completer, not a retry, finishes.
fn completer_only() -> Bounds {
    Bounds { declines: false, sends: 1, attempts: 1, ..Bounds::charges() }
}

/// (a) Past the key window the search does not show the payment yet, and
/// the completer sends the forgotten key: a second payment.
#[test]
fn a_look_up_by_a_lagging_search_charges_an_attempt_twice() {
    let bounds = completer_only();
    breaks(Design::LaggingSearch, bounds, ONE_PAYMENT_PER_ATTEMPT);
}

/// (b) The provider refunds what the ledger then refuses (the seller spent
/// its share): the provider has refunded, the ledger has not.
#[test]
fn refund_rules_checked_after_the_provider_leave_the_ledger_behind_it() {
    breaks(Design::RefundRulesAfterProvider, Bounds::refunds(), QUIET_LEDGER_EQUALS_PROVIDER);
}

/// (c) Past the key window the key is sent again without a look-up: the
/// provider has forgotten it and charges again.
#[test]
fn a_key_resent_past_its_window_charges_an_attempt_twice() {
    let bounds = completer_only();
    breaks(Design::ResendWithoutLookUp, bounds, ONE_PAYMENT_PER_ATTEMPT);
}

// The deeper checks (`make model`: release build, every core).

#[test]
#[ignore = "half a minute in release: `make model`"]
fn the_code_keeps_every_property_of_card_charges_deeper() {
    holds(Bounds::deep_charges(), check::all_cores());
}

#[test]
#[ignore = "a quarter of a minute in release: `make model`"]
fn the_code_keeps_every_property_of_card_refunds_deeper() {
    holds(Bounds::deep_refunds(), check::all_cores());
}

#[test]
#[ignore = "half a minute in release: `make model`"]
fn the_code_keeps_every_property_of_two_partial_refunds() {
    holds(Bounds::two_refunds(), check::all_cores());
}

#[test]
#[ignore = "a quarter of a minute in release: `make model`"]
fn the_code_keeps_every_property_of_charges_and_refunds_together() {
    holds(Bounds::together(), check::all_cores());
}
