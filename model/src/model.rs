//! The state machine stateright explores: which steps may come next from a
//! state (`actions`), what each does (`next_state`, through the modules
//! named after the code they stand for), and the properties checked in
//! every state reached.

use stateright::{Model, Property};

use crate::bounds::{Bounds, Design, MAX_ATTEMPTS, MAX_REFERENCES};
use crate::provider::Fault;
use crate::state::{
    elapsed, Budget, ChargeRow, ChargeStatus, Client, Effect, KeyRow, Ledger, LedgerEvent, OutboxRow, Payment,
    Pipeline, Provider, ProviderEvent, Reply, State, Step, CHARGE_AMOUNT, KEY_WINDOW, LONG_AFTER, SLOTS,
};
use crate::{api, completer, ledger, pipeline, properties};

/// The payment protocol under one design and one set of bounds.
#[derive(Clone, Debug)]
pub struct PaymentModel {
    pub design: Design,
    pub bounds: Bounds,
}

/// One step. Each is named after the function or crash point of the code
/// it stands for (`describe` prints them so; docs/model.md maps them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `POST /v1/charges`: `idempotency::first` + `cards::begin`.
    PostCharge { attempt: u8, key: u8 },
    /// `POST /v1/charges/{id}/refunds`: `idempotency::first` + `refunds::begin`.
    PostRefund { reference: u8, key: u8 },
    /// `effects::ask`: take, then `Provider::ask` / `ask_refund`.
    Ask { request: u8, fault: Fault },
    /// `cards::complete` / `refunds::complete` + `idempotency::store_final`,
    /// or `effects::abandon`.
    Complete { request: u8 },
    /// The response reaches the client.
    Reply { request: u8 },
    /// The API process dies at the request's crash point.
    Crash { request: u8 },
    /// `cards::claim_stale` / `refunds::claim_stale`, once the effect's
    /// lease (`CARD_LEASE_SECS`) has passed: when no process holds it any
    /// more (it finished or died), or at any moment if processes may stall.
    ClaimStale { effect: Effect },
    /// `complete_stale`: `effects::ask` (take, then `Provider::ask` /
    /// `ask_refund` unless final); `Effect::ask_provider` in design (e).
    CompleterAsks { fault: Fault },
    /// `complete_stale`: `Effect::complete` (or `abandon`).
    CompleterCompletes,
    /// The completer dies (`completer-after-provider` once it has asked).
    CompleterCrashes,
    /// Time passes: the search lag, the key window, then long after.
    ClockTicks,
    /// The provider forgets a key a key window after it stored it.
    ProviderForgetsKey { effect: Effect },
    /// The provider's search index catches up with its writes (design (a)).
    SearchCatchesUp,
    /// `POST /v1/provider/webhooks`: `provider_events::receive`; `again`
    /// when the provider will deliver the same event once more.
    Webhook { event: ProviderEvent, again: bool },
    /// A refund that succeeded fails at the provider (a closed card).
    ProviderFailsRefund { refund: u8 },
    /// The seller spends part of its balance (a transfer out).
    SellerTransfersOut,
    /// `relay::publish_batch` publishes the unpublished rows.
    RelayPublishes,
    /// `relay::publish_batch` marks them published and commits.
    RelayMarksPublished,
    /// The relay dies at `relay-after-publish`.
    RelayCrashes,
    /// `inventory::apply` (the inbox and the stock, one transaction).
    InventoryApplies { message: u8 },
    /// The consumer acks the message.
    InventoryAcks,
    /// The consumer dies at `inventory-after-commit`.
    InventoryCrashes,
}

impl PaymentModel {
    pub fn new(design: Design, bounds: Bounds) -> PaymentModel {
        assert!((1..=MAX_ATTEMPTS as u8).contains(&bounds.attempts));
        assert!(bounds.refund_amounts.len() <= MAX_REFERENCES);
        assert!((1..=crate::bounds::MAX_KEYS as u8).contains(&bounds.keys));
        PaymentModel { design, bounds }
    }

    /// The effects of the bounds: each attempt's charge, each reference's refund.
    pub fn effects(&self) -> impl Iterator<Item = Effect> + '_ {
        let charges = (0..self.bounds.attempts).map(Effect::Charge);
        charges.chain((0..self.bounds.references()).map(Effect::Refund))
    }

    /// The Idempotency-Keys the client may send an effect with: any it has
    /// used (the same key again), and one new one. Keys are names the
    /// client picks, alike but for their rows, so the new one is always the
    /// lowest unused.
    fn keys<'a>(&'a self, state: &'a State, effect: Effect) -> impl Iterator<Item = u8> + 'a {
        let rows = &state.ledger.keys[effect.slot()];
        let used = move |k: u8| {
            rows[k as usize] != KeyRow::Absent || state.requests.iter().any(|r| r.effect == effect && r.key == k)
        };
        let new = (0..self.bounds.keys).find(|&k| !used(k));
        (0..self.bounds.keys).filter(move |&k| used(k) || Some(k) == new)
    }

    /// The faults a provider call may meet now.
    fn faults(&self, state: &State) -> impl Iterator<Item = Fault> + '_ {
        let (faults, rejections) = (state.budget.faults > 0, state.budget.rejections > 0);
        Fault::ALL.into_iter().filter(move |&f| match f {
            Fault::None => true,
            Fault::Rejected => rejections,
            _ => faults,
        })
    }

    /// Whether the clock may move (and the provider forget a key): while
    /// something is in flight, or about to be sent from a stale claim
    /// (design (e)), or a key at the provider outlives an abandoned
    /// charge; and, unless processes may stall, not while a
    /// process is in the middle of its work on an effect: a request or a
    /// scan takes seconds, a tick is a lag or a day, and the steps a
    /// process has left read no clock, so the tick may as well come after.
    fn time_may_pass(&self, state: &State) -> bool {
        let waiting = self.effects().any(|e| state.in_flight(e) || state.completer_about_to_send(self.design, e));
        let orphan = (0..self.bounds.attempts)
            .any(|a| state.ledger.charges[a as usize].is_none() && state.provider.keys[a as usize].is_some());
        state.clock < LONG_AFTER && (waiting || orphan) && (self.bounds.stalls || !state.busy())
    }

    /// Quiet: nothing left that must happen (no request, completer step or
    /// webhook); what only may happen (the client sending again, time, a
    /// late failure) may still come.
    pub fn quiet(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.obligations(state, &mut actions);
        actions.is_empty()
    }

    /// Done: nothing left at all, the relay and the consumer included.
    pub fn done(&self, state: &State) -> bool {
        let mut actions = Vec::new();
        self.actions(state, &mut actions);
        actions.is_empty()
    }

    /// What must still happen before the system is quiet: each request's
    /// next step, the completer's, each webhook's delivery.
    fn obligations(&self, s: &State, out: &mut Vec<Action>) {
        // of two requests alike, only the first moves (they behave alike)
        for (i, request) in s.requests.iter().enumerate() {
            if i > 0 && s.requests[i - 1] == *request {
                continue;
            }
            let index = i as u8;
            match request.step {
                Step::Begun => out.extend(self.faults(s).map(|fault| Action::Ask { request: index, fault })),
                Step::Asked(_) => out.push(Action::Complete { request: index }),
                Step::Answered(_) => out.push(Action::Reply { request: index }),
            }
        }
        match s.completer {
            None => {
                for effect in self.effects() {
                    if s.in_flight(effect) && (self.bounds.stalls || !s.held(effect)) {
                        out.push(Action::ClaimStale { effect });
                    }
                }
            }
            Some(job) => match job.asked {
                None => out.extend(self.faults(s).map(|fault| Action::CompleterAsks { fault })),
                Some(_) => out.push(Action::CompleterCompletes),
            },
        }
        // the provider's webhooks, in any order
        for delivery in &s.provider.webhooks {
            out.push(Action::Webhook { event: delivery.event, again: false });
        }
    }

    /// What may happen, or not: the client's sends (it may give up), crashes,
    /// a webhook delivered twice, time, the provider forgetting a key or its
    /// search catching up, a refund failing late, the seller's transfer.
    fn options(&self, s: &State, out: &mut Vec<Action>) {
        let b = &self.bounds;
        // the client sends, or sends again, with the same key or a new one
        if s.budget.sends > 0 && s.requests.len() < b.concurrent_requests as usize {
            if !s.client.charge_known {
                let attempt = s.client.attempt;
                out.extend(self.keys(s, Effect::Charge(attempt)).map(|key| Action::PostCharge { attempt, key }));
            }
            if s.paid_attempt().is_some() {
                for reference in (0..b.references()).filter(|&r| !s.client.refunds_known[r as usize]) {
                    out.extend(
                        self.keys(s, Effect::Refund(reference)).map(|key| Action::PostRefund { reference, key }),
                    );
                }
            }
        }
        if s.budget.crashes > 0 {
            for (i, request) in s.requests.iter().enumerate() {
                if i == 0 || s.requests[i - 1] != *request {
                    out.push(Action::Crash { request: i as u8 });
                }
            }
            if s.completer.is_some() {
                out.push(Action::CompleterCrashes);
            }
        }
        if s.budget.duplicates > 0 {
            for delivery in &s.provider.webhooks {
                out.push(Action::Webhook { event: delivery.event, again: true });
            }
        }
        if self.time_may_pass(s) {
            out.push(Action::ClockTicks);
        }
        for effect in self.effects() {
            let may = b.stalls || !s.busy();
            if matches!(s.provider.keys[effect.slot()], Some(k) if elapsed(s.clock, k.at) >= KEY_WINDOW) && may {
                out.push(Action::ProviderForgetsKey { effect });
            }
        }
        if self.design == Design::LaggingSearch && s.provider.payments.iter().any(|p| !p.indexed) {
            out.push(Action::SearchCatchesUp);
        }
        if s.budget.late_failures > 0 {
            for (i, refund) in s.provider.refunds.iter().enumerate() {
                if !refund.failed {
                    out.push(Action::ProviderFailsRefund { refund: i as u8 });
                }
            }
        }
        // before any refund is asked: what it changes after is only the
        // seller's balance, which no rule reads again
        let refund_asked = s.ledger.refunds.iter().any(Option::is_some)
            || s.requests.iter().any(|r| matches!(r.effect, Effect::Refund(_)));
        if s.budget.transfers > 0 && s.ledger.seller > 0 && !refund_asked {
            out.push(Action::SellerTransfersOut);
        }
    }

    /// The relay's and the consumer's steps.
    fn pipeline_actions(&self, s: &State, out: &mut Vec<Action>) {
        if s.pipeline.relaying.is_empty() {
            if s.ledger.outbox.iter().any(|row| !row.published) {
                out.push(Action::RelayPublishes);
            }
        } else {
            out.push(Action::RelayMarksPublished);
            if s.budget.pipeline_crashes > 0 {
                out.push(Action::RelayCrashes);
            }
        }
        match s.pipeline.consuming {
            None => {
                let mut last = None;
                for &message in &s.pipeline.queue {
                    if last != Some(message) {
                        out.push(Action::InventoryApplies { message });
                    }
                    last = Some(message);
                }
            }
            Some(_) => {
                out.push(Action::InventoryAcks);
                if s.budget.pipeline_crashes > 0 {
                    out.push(Action::InventoryCrashes);
                }
            }
        }
    }

    fn spend_fault(budget: &mut Budget, fault: Fault) {
        match fault {
            Fault::None => {}
            Fault::Rejected => budget.rejections -= 1,
            _ => budget.faults -= 1,
        }
    }
}

impl Model for PaymentModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let b = &self.bounds;
        let mut start = State {
            clock: 0,
            cards: [true; MAX_ATTEMPTS],
            client: Client { attempt: 0, charge_known: false, refunds_known: [false; MAX_REFERENCES] },
            requests: Vec::new(),
            completer: None,
            ledger: Ledger {
                keys: [[KeyRow::Absent; crate::bounds::MAX_KEYS]; SLOTS],
                charges: [None; MAX_ATTEMPTS],
                incarnations: [0; MAX_ATTEMPTS],
                refunds: [None; MAX_REFERENCES],
                seller: 0,
                refunded: 0,
                webhooks_seen: Vec::new(),
                flagged: false,
                outbox: Vec::new(),
            },
            provider: Provider::new(),
            pipeline: Pipeline { queue: Vec::new(), relaying: Vec::new(), consuming: None },
            budget: Budget {
                sends: b.sends,
                crashes: b.crashes,
                pipeline_crashes: b.pipeline_crashes,
                faults: b.faults,
                rejections: b.rejections,
                duplicates: b.duplicate_webhooks,
                transfers: b.seller_transfers,
                late_failures: b.late_refund_failures,
            },
        };
        if b.start_paid {
            // the first attempt paid and recorded, as a quiet charge leaves it
            start.provider.payments.push(Payment { attempt: 0, incarnation: 0, paid: true, indexed: true });
            start.ledger.incarnations[0] = 1;
            start.ledger.charges[0] = Some(ChargeRow {
                status: ChargeStatus::Succeeded,
                payment: Some(0),
                first_sent: None,
                sends: 0,
                incarnation: 0,
            });
            start.ledger.keys[0][0] = KeyRow::Stored(Reply::Paid);
            start.ledger.seller = CHARGE_AMOUNT;
            start.ledger.outbox.push(OutboxRow {
                event: LedgerEvent::ChargeSucceeded(0),
                published: false,
                applied: 0,
            });
            start.client.charge_known = true;
            return vec![start];
        }
        // each attempt's card pays or, when the bounds allow, declines
        let mut states = vec![start];
        if b.declines {
            for a in 0..b.attempts as usize {
                let declined: Vec<State> = states
                    .iter()
                    .map(|s| {
                        let mut s = s.clone();
                        s.cards[a] = false;
                        s
                    })
                    .collect();
                states.extend(declined);
            }
        }
        states
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        self.obligations(s, out);
        self.options(s, out);
        // The relay and the consumer share nothing with the other steps but
        // the outbox, to which those only append: their steps commute with
        // all of them, so they run once nothing else can (every order and
        // crash of their own steps is still explored), which keeps the
        // check small.
        if out.is_empty() {
            self.pipeline_actions(s, out);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let (design, b) = (self.design, &self.bounds);
        let mut s = last.clone();
        match action {
            Action::PostCharge { attempt, key } => {
                s.budget.sends -= 1;
                api::post(&mut s, design, b, Effect::Charge(attempt), key);
            }
            Action::PostRefund { reference, key } => {
                s.budget.sends -= 1;
                api::post(&mut s, design, b, Effect::Refund(reference), key);
            }
            Action::Ask { request, fault } => {
                api::ask(&mut s, design, b, request as usize, fault)?;
                Self::spend_fault(&mut s.budget, fault);
            }
            Action::Complete { request } => api::complete(&mut s, design, b, request as usize),
            Action::Reply { request } => api::reply(&mut s, b, request as usize),
            Action::Crash { request } => {
                s.budget.crashes -= 1;
                s.requests.remove(request as usize);
            }
            Action::ClaimStale { effect } => completer::claim(&mut s, design, effect),
            Action::CompleterAsks { fault } => {
                completer::ask(&mut s, design, b, fault)?;
                Self::spend_fault(&mut s.budget, fault);
            }
            Action::CompleterCompletes => completer::complete(&mut s, design, b),
            Action::CompleterCrashes => {
                s.budget.crashes -= 1;
                s.completer = None;
            }
            Action::ClockTicks => s.clock += 1,
            Action::ProviderForgetsKey { effect } => s.provider.keys[effect.slot()] = None,
            Action::SearchCatchesUp => s.provider.payments.iter_mut().for_each(|p| p.indexed = true),
            Action::Webhook { event, again } => {
                let i = s.provider.webhooks.iter().position(|d| d.event == event)?;
                if again {
                    s.budget.duplicates -= 1;
                } else if s.provider.webhooks[i].copies > 1 {
                    s.provider.webhooks[i].copies -= 1;
                } else {
                    s.provider.webhooks.remove(i);
                }
                ledger::receive_webhook(&mut s, design, b, event);
            }
            Action::ProviderFailsRefund { refund } => {
                s.budget.late_failures -= 1;
                s.provider.fail_refund(refund);
            }
            Action::SellerTransfersOut => {
                s.budget.transfers -= 1;
                s.ledger.seller -= 1;
            }
            Action::RelayPublishes => pipeline::publish(&mut s),
            Action::RelayMarksPublished => pipeline::mark(&mut s),
            Action::RelayCrashes => {
                s.budget.pipeline_crashes -= 1;
                pipeline::relay_crashes(&mut s);
            }
            Action::InventoryApplies { message } => pipeline::apply(&mut s, message),
            Action::InventoryAcks => pipeline::ack(&mut s),
            Action::InventoryCrashes => {
                s.budget.pipeline_crashes -= 1;
                pipeline::consumer_crashes(&mut s);
            }
        }
        s.normalize(design);
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        use properties as p;
        let mut properties: Vec<Property<Self>> = vec![
            Property::always(p::ONE_PAYMENT_PER_ATTEMPT, |m, s| p::one_payment_per_attempt(&m.bounds, s)),
            Property::always(p::ONE_REFUND_PER_REFERENCE, |m, s| p::one_refund_per_reference(&m.bounds, s)),
            Property::always(p::ORDER_PAID_ONCE, |_, s| p::order_paid_once(s)),
            Property::always(p::NOTHING_REFUSED, |_, s| p::nothing_refused(s)),
            Property::always(p::NOTHING_MADE_FOR_FINAL, |_, s| p::nothing_made_for_final(s)),
            Property::always(p::QUIET_LEDGER_EQUALS_PROVIDER, |m, s| {
                !m.quiet(s) || p::ledger_equals_provider(&m.bounds, s)
            }),
            Property::always(p::QUIET_NOTHING_IN_FLIGHT, |m, s| !m.quiet(s) || p::nothing_in_flight(&m.bounds, s)),
            Property::always(p::QUIET_FLAG_MEANS_DISAGREEMENT, |m, s| {
                p::flag_means_disagreement(&m.bounds, s) || !m.quiet(s)
            }),
            Property::always(p::EVENTS_APPLIED_ONCE, |m, s| {
                p::applied_at_most_once(s) && (!m.done(s) || p::every_event_applied(s))
            }),
        ];
        // examples that the bounds can reach, so that a check is known not
        // to pass for want of getting anywhere
        properties.push(Property::sometimes(p::SOMETIMES_FOUND_PAST_WINDOW, |_, s| p::found_past_window(s)));
        properties.push(Property::sometimes(p::SOMETIMES_RECORDED_BY_ANOTHER, |_, s| p::recorded_by_another(s)));
        if self.bounds.references() > 0 && (self.bounds.faults > 0 || self.bounds.late_refund_failures > 0) {
            properties.push(Property::sometimes(p::SOMETIMES_REFUND_REVERSED, |_, s| p::refund_reversed(s)));
        }
        if self.bounds.pipeline_crashes > 0 {
            properties.push(Property::sometimes(p::SOMETIMES_EVENT_TWICE, |_, s| p::event_queued_twice(s)));
        }
        properties
    }
}
