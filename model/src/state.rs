//! The model's state: the client, the API's requests in progress, the
//! completer, the ledger's rows, the provider's objects and keys, the
//! relay and the inventory consumer. Small integers and fixed arrays, so
//! that hashing a state is cheap; what can no longer matter is cleared
//! after each step (`State::normalize`), so that states that behave alike
//! are one.

use crate::bounds::{Design, MAX_ATTEMPTS, MAX_KEYS, MAX_REFERENCES};

/// Every charge is of this amount; refunds are parts of it.
pub const CHARGE_AMOUNT: u8 = 2;

/// Time, in ticks of the clock, measured from an effect's first send (as
/// `first_sent_at` is): one tick is the provider's search lag
/// (`GATEWAY_SEARCH_LAG_SECS`), two its key window
/// (`GATEWAY_KEY_WINDOW_SECS`). The last tick is "long after": every lag
/// and window that started before it has passed. What starts at the last
/// tick stays new: the check's horizon ends there.
pub const SEARCH_LAG: u8 = 1;
pub const KEY_WINDOW: u8 = 2;
pub const LONG_AFTER: u8 = 3;

/// Ticks from `since` to `now`.
pub fn elapsed(now: u8, since: u8) -> u8 {
    if now == LONG_AFTER && since < LONG_AFTER {
        u8::MAX
    } else {
        now - since
    }
}

/// An effect at the provider: a card charge (by attempt, from 0) or a card
/// refund of the paid charge (by reference, from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    Charge(u8),
    Refund(u8),
}

impl Effect {
    /// Its place in the per-effect arrays (keys at the provider and in the ledger).
    pub fn slot(self) -> usize {
        match self {
            Effect::Charge(a) => a as usize,
            Effect::Refund(r) => MAX_ATTEMPTS + r as usize,
        }
    }
}

pub const SLOTS: usize = MAX_ATTEMPTS + MAX_REFERENCES;

/// What a client hears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply {
    /// 201 (or 200 found by its natural key): paid.
    Paid,
    /// 402 `card_declined` (also `provider_error`): the next attempt may follow.
    CardDeclined,
    /// 201: refunded.
    Refunded,
    /// 402 `refund_failed`, or a refund the ledger declined.
    RefundFailed,
    /// 202 `processing` / `pending`: not stored, retry.
    InFlight,
    /// Refused and not stored (409 `order_already_charged`, 502
    /// `provider_rejected`, a 5xx): retry.
    Refused,
}

impl Reply {
    pub fn is_final(self) -> bool {
        !matches!(self, Reply::InFlight | Reply::Refused)
    }
}

/// An Idempotency-Key row (`ledger::idempotency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyRow {
    Absent,
    /// Claimed, with its recovery point naming the effect in flight.
    InFlight,
    /// Its answer, stored and replayed.
    Stored(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargeStatus {
    Processing,
    Succeeded,
    Failed,
}

/// A card charge's row (`charges` and `card_charges`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChargeRow {
    pub status: ChargeStatus,
    /// The provider payment recorded on it.
    pub payment: Option<u8>,
    /// `first_sent_at`, as a clock tick.
    pub first_sent: Option<u8>,
    /// `card_charges.sends`: the sends taken (`cards::take`), counted up to
    /// 2, since `cards::abandon` reads only whether there was more than one.
    pub sends: u8,
    /// Which row of this attempt it is: an abandoned row is deleted and a
    /// later request makes another, with another charge id (the metadata a
    /// webhook finds it by).
    pub incarnation: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

/// A card refund's row (`refunds` and `card_refunds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefundRow {
    pub status: RefundStatus,
    /// The provider refund recorded on it.
    pub provider_refund: Option<u8>,
    pub first_sent: Option<u8>,
    /// Whether its ledger transaction is posted (the seller's share taken
    /// back): from the first transaction on in the code's design.
    pub posted: bool,
}

/// An event the ledger commits with an effect (the outbox).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LedgerEvent {
    ChargeSucceeded(u8),
    Refunded(u8),
    RefundFailed(u8),
}

/// An outbox row and what the consumer did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutboxRow {
    pub event: LedgerEvent,
    pub published: bool,
    /// How many times the inventory consumer applied it (its inbox says once).
    pub applied: u8,
}

/// A webhook event of the provider, named by what it is about (so its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderEvent {
    /// `payment_intent.succeeded` or `payment_intent.payment_failed`.
    Payment(u8),
    /// A refund succeeded.
    RefundSucceeded(u8),
    /// A refund failed (after it succeeded).
    RefundFailed(u8),
}

/// The ledger's rows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ledger {
    /// Each effect's Idempotency-Keys.
    pub keys: [[KeyRow; MAX_KEYS]; SLOTS],
    pub charges: [Option<ChargeRow>; MAX_ATTEMPTS],
    /// Rows ever made per attempt (the next row's incarnation).
    pub incarnations: [u8; MAX_ATTEMPTS],
    pub refunds: [Option<RefundRow>; MAX_REFERENCES],
    /// The seller's balance.
    pub seller: u8,
    /// The paid charge's `refunded_amount` (pending refunds included).
    pub refunded: u8,
    /// The webhook inbox: events seen, kept while a copy may still come.
    pub webhooks_seen: Vec<ProviderEvent>,
    /// Whether a webhook contradicted the ledger (`provider_flags`).
    pub flagged: bool,
    pub outbox: Vec<OutboxRow>,
}

/// A payment at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Payment {
    /// Its metadata: the attempt and the charge row (incarnation) it was sent for.
    pub attempt: u8,
    pub incarnation: u8,
    /// Succeeded, or declined.
    pub paid: bool,
    /// Whether the provider's search shows it yet (only a lagging search
    /// does not; lists always do).
    pub indexed: bool,
}

/// A refund at the provider, of the payment the ledger recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderRefund {
    pub reference: u8,
    pub payment: u8,
    pub failed: bool,
}

/// What the provider stored for a key: replayed while it keeps the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    /// The payment or refund it made.
    Made(u8),
    /// A 5xx (before or after the effect).
    ServerError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderKey {
    /// When it was stored: the provider forgets it a key window later.
    pub at: u8,
    pub stored: Stored,
}

/// A webhook the provider still has to deliver, and how many times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Delivery {
    pub event: ProviderEvent,
    pub copies: u8,
}

/// The payment provider's side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Provider {
    pub payments: Vec<Payment>,
    pub refunds: Vec<ProviderRefund>,
    pub keys: [Option<ProviderKey>; SLOTS],
    pub webhooks: Vec<Delivery>,
    /// Whether the provider refused a refund the ledger sent (more than
    /// remains of the payment): nothing should reach it that it refuses.
    pub refused: bool,
    /// Whether it made a payment or refund for an effect the ledger had
    /// already recorded final: a send from a stale read of the row.
    pub made_for_final: bool,
}

/// What a provider call gave (`service::provider::Asked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Asked {
    Answer(Answer),
    /// No final answer: left in flight.
    Unknown,
    /// The request was refused as misconfigured.
    Rejected,
    /// Not asked: the effect was already final when taken.
    Final,
}

/// A final answer, as the ledger records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    Paid(u8),
    /// Declined: the payment, or none (`provider_error`: a stored 5xx and
    /// nothing found).
    Declined(Option<u8>),
    Refunded(u8),
    /// Failed: the refund, or none (`provider_error`).
    RefundFailed(Option<u8>),
}

/// Where an API request is (`api::idempotency::run_two_phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The first transaction committed the effect in flight and the key's
    /// recovery point, or a retry found that point: the provider is next.
    Begun,
    /// The provider answered (or not); nothing of it is recorded.
    Asked(Asked),
    /// The second transaction committed; the client has not heard.
    Answered(Reply),
}

/// A request in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Request {
    pub effect: Effect,
    pub key: u8,
    pub step: Step,
}

/// The completer's one effect in hand (`effects::complete_stale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Job {
    pub effect: Effect,
    /// `None` while claimed and not yet sent.
    pub asked: Option<Asked>,
}

/// The storefront: what it has heard.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// The attempt it is paying with (from 0).
    pub attempt: u8,
    /// Whether it heard the current attempt's final answer.
    pub charge_known: bool,
    /// Whether it heard each refund's final answer.
    pub refunds_known: [bool; MAX_REFERENCES],
}

/// The relay and the inventory consumer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pipeline {
    /// The queue: outbox rows' messages, a copy per publish, sorted.
    pub queue: Vec<u8>,
    /// Rows the relay published and has not marked yet (its open batch).
    pub relaying: Vec<u8>,
    /// The message the consumer committed and has not acked yet.
    pub consuming: Option<u8>,
}

/// What is left to spend (see `Bounds`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    pub sends: u8,
    pub crashes: u8,
    pub pipeline_crashes: u8,
    pub faults: u8,
    pub rejections: u8,
    pub duplicates: u8,
    pub transfers: u8,
    pub late_failures: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub clock: u8,
    /// Whether each attempt's card pays (chosen at the start).
    pub cards: [bool; MAX_ATTEMPTS],
    pub client: Client,
    /// The API's requests in progress, sorted.
    pub requests: Vec<Request>,
    pub completer: Option<Job>,
    pub ledger: Ledger,
    pub provider: Provider,
    pub pipeline: Pipeline,
    pub budget: Budget,
}

impl State {
    /// The ledger's paid charge (there is at most one per order).
    pub fn paid_attempt(&self) -> Option<u8> {
        (0..MAX_ATTEMPTS as u8)
            .find(|&a| matches!(self.ledger.charges[a as usize], Some(c) if c.status == ChargeStatus::Succeeded))
    }

    /// Whether the ledger has the effect in flight (`processing`, `pending`).
    pub fn in_flight(&self, effect: Effect) -> bool {
        match effect {
            Effect::Charge(a) => {
                matches!(self.ledger.charges[a as usize], Some(c) if c.status == ChargeStatus::Processing)
            }
            Effect::Refund(r) => {
                matches!(self.ledger.refunds[r as usize], Some(f) if f.status == RefundStatus::Pending)
            }
        }
    }

    /// The effect's first send (`first_sent_at`), when it has one.
    pub fn first_sent(&self, effect: Effect) -> Option<u8> {
        match effect {
            Effect::Charge(a) => self.ledger.charges[a as usize].and_then(|c| c.first_sent),
            Effect::Refund(r) => self.ledger.refunds[r as usize].and_then(|f| f.first_sent),
        }
    }

    /// Sets (or clears) the effect's first send.
    pub fn set_first_sent(&mut self, effect: Effect, first_sent: Option<u8>) {
        match effect {
            Effect::Charge(a) => {
                if let Some(c) = &mut self.ledger.charges[a as usize] {
                    c.first_sent = first_sent;
                }
            }
            Effect::Refund(r) => {
                if let Some(f) = &mut self.ledger.refunds[r as usize] {
                    f.first_sent = first_sent;
                }
            }
        }
    }

    /// `first_sent_at = coalesce(first_sent_at, now())`, as a take or a
    /// claim sets it.
    pub fn mark_sent(&mut self, effect: Effect) {
        let first_sent = self.first_sent(effect).unwrap_or(self.clock);
        self.set_first_sent(effect, Some(first_sent));
    }

    /// Whether a live process holds the effect's lease: an API request
    /// between its first transaction (or its take) and its second, or the
    /// completer between its claim and its record. The API does not look
    /// at leases; the completer claims only an effect nobody holds.
    pub fn held(&self, effect: Effect) -> bool {
        let by_request = self.requests.iter().any(|r| r.effect == effect && !matches!(r.step, Step::Answered(_)));
        by_request || matches!(self.completer, Some(job) if job.effect == effect)
    }

    /// Whether any process is in the middle of its work on an effect.
    pub fn busy(&self) -> bool {
        self.completer.is_some() || self.requests.iter().any(|r| !matches!(r.step, Step::Answered(_)))
    }

    /// Whether the completer holds the effect and will send it without
    /// reading the row again: only in design (e), which sends from its
    /// claim; the code's completer takes the row first, and sends nothing
    /// that is final.
    pub fn completer_about_to_send(&self, design: Design, effect: Effect) -> bool {
        design == Design::CompleterSendsFromItsClaim
            && matches!(self.completer, Some(Job { effect: e, asked: None }) if e == effect)
    }

    /// Clears what can no longer change any behaviour, so that states that
    /// behave alike are one: the first send, sends and provider key of an
    /// effect that is final (nobody sends it again, unless the completer
    /// of design (e) holds it), the webhook inbox's entries whose event
    /// cannot come again, the search index of payments nobody looks up;
    /// and sorts the requests and the queue.
    pub fn normalize(&mut self, design: Design) {
        for a in 0..MAX_ATTEMPTS as u8 {
            let effect = Effect::Charge(a);
            if self.ledger.charges[a as usize].is_some()
                && !self.in_flight(effect)
                && !self.completer_about_to_send(design, effect)
            {
                self.set_first_sent(effect, None);
                if let Some(c) = &mut self.ledger.charges[a as usize] {
                    c.sends = 0;
                }
                self.provider.keys[effect.slot()] = None;
                for p in self.provider.payments.iter_mut().filter(|p| p.attempt == a) {
                    p.indexed = true;
                }
            }
        }
        for r in 0..MAX_REFERENCES as u8 {
            let effect = Effect::Refund(r);
            if self.ledger.refunds[r as usize].is_some()
                && !self.in_flight(effect)
                && !self.completer_about_to_send(design, effect)
            {
                self.set_first_sent(effect, None);
                self.provider.keys[effect.slot()] = None;
            }
        }
        let pending: Vec<ProviderEvent> = self.provider.webhooks.iter().map(|d| d.event).collect();
        self.ledger.webhooks_seen.retain(|e| pending.contains(e));
        self.ledger.webhooks_seen.sort();
        self.provider.webhooks.sort();
        self.requests.sort();
        self.pipeline.queue.sort();
        self.pipeline.relaying.sort();
    }
}
