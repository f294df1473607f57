//! What one check explores: the design (the code's, or a known-bad variant)
//! and the bounds that keep its state space finite.

/// A design of the protocol. `Current` is what the code does; each other is
/// a known-bad variant, kept so that a test shows the checker catches what
/// it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Design {
    /// What the code does: past the key window, look-ups list (consistent);
    /// a refund's rules are checked and its ledger transaction posted before
    /// the provider is asked; a charge refused as misconfigured is abandoned
    /// only when that refused send is the only one ever taken; the
    /// completer takes an effect again right before it sends it; a refund's
    /// older `succeeded` event after its `failed` one raises no flag.
    Current,
    /// (a) Past the key window a charge is looked up by the provider's
    /// search, which lags its writes: a payment it does not show yet is
    /// taken for none, and the attempt is charged again.
    LaggingSearch,
    /// (b) A refund's rules (what remains of the charge, the seller's share)
    /// are checked, and its ledger transaction posted, only once the
    /// provider has refunded.
    RefundRulesAfterProvider,
    /// (c) Past the key window the key is sent again without a look-up: the
    /// provider has forgotten it and makes a new payment.
    ResendWithoutLookUp,
    /// (d) A charge refused as misconfigured is abandoned (deleted with its
    /// key) whatever was sent before: after an earlier send whose answer
    /// was lost, the provider may have charged the card.
    AbandonAfterAnySend,
    /// (e) The completer sends an effect straight from its claim, without
    /// reading the row again: stalled past its lease, it may send an effect
    /// another process has meanwhile recorded final.
    CompleterSendsFromItsClaim,
    /// (f) Every refund `succeeded` event for a refund recorded failed is
    /// flagged, its own older event included (delivered after the
    /// `failed` one).
    FlagEverySuccessAfterFailure,
}

/// The most the state's fixed arrays hold.
pub const MAX_ATTEMPTS: usize = 2;
pub const MAX_REFERENCES: usize = 2;
pub const MAX_KEYS: usize = 2;

/// How much of each thing may happen in one behaviour. Every number is a
/// budget for a whole run, spent as it happens, so every behaviour ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bounds {
    /// Attempts of the one order (1 to `MAX_ATTEMPTS`): the next one follows
    /// a decline.
    pub attempts: u8,
    /// The amount of each refund reference of the paid charge (at most
    /// `MAX_REFERENCES`, none for no refunds), in units of a charge of
    /// `state::CHARGE_AMOUNT`.
    pub refund_amounts: Vec<u8>,
    /// Whether the order starts paid (its first attempt recorded, its event
    /// committed), so that a check spends its states on the refunds.
    pub start_paid: bool,
    /// Idempotency-Keys the client may use for one attempt or reference
    /// (1 to `MAX_KEYS`): the same key again, or a new one.
    pub keys: u8,
    /// Requests the client sends in all, retries included.
    pub sends: u8,
    /// Requests in the API at once (a client that gave up waiting retries).
    pub concurrent_requests: u8,
    /// Crashes of the API and the completer, in all.
    pub crashes: u8,
    /// Crashes of the relay and the consumer, in all.
    pub pipeline_crashes: u8,
    /// Provider faults in all: an answer lost, a request that never arrived,
    /// a 5xx stored before or after the effect.
    pub faults: u8,
    /// Whether a card may decline (each attempt's card is chosen at the start).
    pub declines: bool,
    /// Webhook events the provider delivers twice.
    pub duplicate_webhooks: u8,
    /// Transfers out of the seller's balance (so a refund may find it short).
    pub seller_transfers: u8,
    /// Refunds the provider fails after they succeeded.
    pub late_refund_failures: u8,
    /// Requests the provider refuses as misconfigured (a revoked or restricted
    /// key): nothing happens there, whatever an earlier send did. None in
    /// the main checks: see `with_rejections`.
    pub rejections: u8,
    /// Whether a process may stall in the middle of its work for longer
    /// than its lease (`CARD_LEASE_SECS`), and a provider key expire in the
    /// meantime (a frozen host, `LEDGER_FREEZE_AT`). Off in the main
    /// checks, where a process that holds an effect finishes with it or
    /// dies before its lease passes: see `with_stalls`.
    pub stalls: bool,
}

impl Bounds {
    /// The charge half of the check `make test` runs (debug build, a few
    /// seconds): two attempts (the second after a decline), cards that pay
    /// or decline, three sends with two keys, two requests at once, one
    /// crash, one provider fault, one webhook twice; no refunds.
    pub fn charges() -> Bounds {
        Bounds {
            attempts: 2,
            refund_amounts: vec![],
            start_paid: false,
            keys: 2,
            sends: 3,
            concurrent_requests: 2,
            crashes: 1,
            pipeline_crashes: 1,
            faults: 1,
            declines: true,
            duplicate_webhooks: 1,
            seller_transfers: 0,
            late_refund_failures: 0,
            rejections: 0,
            stalls: false,
        }
    }

    /// The refund half: the order starts paid; one refund of the whole
    /// charge, three sends with two keys, two requests at once, one crash,
    /// one provider fault, one webhook twice, the seller's one transfer,
    /// one late refund failure.
    pub fn refunds() -> Bounds {
        Bounds {
            attempts: 1,
            refund_amounts: vec![2],
            start_paid: true,
            keys: 2,
            sends: 3,
            concurrent_requests: 2,
            crashes: 1,
            pipeline_crashes: 1,
            faults: 1,
            declines: false,
            duplicate_webhooks: 1,
            seller_transfers: 1,
            late_refund_failures: 1,
            rejections: 0,
            stalls: false,
        }
    }

    /// The deeper checks `make model` runs (release build, a minute or
    /// less each). Charges: four sends, two crashes of each kind, two
    /// provider faults.
    pub fn deep_charges() -> Bounds {
        Bounds { sends: 4, crashes: 2, pipeline_crashes: 2, faults: 2, ..Bounds::charges() }
    }

    /// A refund of the whole charge: four sends, two crashes, two faults.
    pub fn deep_refunds() -> Bounds {
        Bounds { sends: 4, crashes: 2, faults: 2, ..Bounds::refunds() }
    }

    /// Two partial refunds that cannot both be taken whole (1 and 2 of 2),
    /// so that what remains of the charge decides.
    pub fn two_refunds() -> Bounds {
        Bounds { refund_amounts: vec![1, 2], ..Bounds::refunds() }
    }

    /// Both halves in one run: two attempts, then a refund of the paid one.
    pub fn together() -> Bounds {
        Bounds { refund_amounts: vec![2], seller_transfers: 1, late_refund_failures: 1, ..Bounds::charges() }
    }

    /// The charges' bounds with one request refused as misconfigured, for
    /// one attempt whose card pays (a payment is what a refusal must not
    /// lose): a refusal may follow a send whose answer was lost.
    pub fn with_rejections() -> Bounds {
        Bounds { rejections: 1, declines: false, attempts: 1, ..Bounds::charges() }
    }

    /// The charges' bounds with processes that may stall past their lease
    /// while the provider's key window ends, for one attempt whose card
    /// pays.
    pub fn with_stalls() -> Bounds {
        Bounds { stalls: true, declines: false, attempts: 1, ..Bounds::charges() }
    }

    /// Stalls, with a second attempt (a failed attempt is followed by
    /// another, which a stale send must not pay twice).
    pub fn with_stalls_two_attempts() -> Bounds {
        Bounds { attempts: 2, ..Bounds::with_stalls() }
    }

    /// A refund of the whole charge sent once, with no fault or crash, that
    /// the provider fails after it succeeded: only its two webhooks, in
    /// either order, and what the ledger makes of them (the main refunds
    /// check holds the same and more).
    pub fn one_refund_failing_late() -> Bounds {
        Bounds {
            sends: 1,
            concurrent_requests: 1,
            crashes: 0,
            pipeline_crashes: 0,
            faults: 0,
            duplicate_webhooks: 0,
            seller_transfers: 0,
            ..Bounds::refunds()
        }
    }

    /// The refunds' bounds with processes that may stall past their lease.
    pub fn refunds_with_stalls() -> Bounds {
        Bounds { stalls: true, ..Bounds::refunds() }
    }

    pub fn references(&self) -> u8 {
        self.refund_amounts.len() as u8
    }
}
