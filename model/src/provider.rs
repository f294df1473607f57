//! The payment provider, as Stripe and the fake provider behave
//! (`gateway/README.md`): a key's first result is stored once the request
//! executes, 5xx included, and replayed while the key is kept; past its
//! window the key is forgotten and the same key makes a new request; lists
//! show a write at once, search only once its index caught up; every
//! payment and refund it makes sends a webhook.

use crate::state::{
    Answer, Delivery, Effect, Payment, Provider, ProviderEvent, ProviderKey, ProviderRefund, Stored, SLOTS,
};

/// What the provider, or the network to it, may do to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    None,
    /// The request executed (a new one: the effect made and stored for the
    /// key) and its answer was lost: `drop_after_charge`, a timeout, a reset.
    AnswerLost,
    /// The request never reached the provider: nothing made, nothing stored.
    NotReached,
    /// `error_before_charge`: a 5xx stored for the key, nothing made.
    ServerErrorBefore,
    /// The effect made, then a 5xx stored for the key in its place.
    ServerErrorAfter,
    /// Refused as misconfigured (a revoked or restricted secret key): the
    /// provider checks that before its idempotency, so a key it keeps is
    /// refused too.
    Rejected,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::None,
        Fault::AnswerLost,
        Fault::NotReached,
        Fault::ServerErrorBefore,
        Fault::ServerErrorAfter,
        Fault::Rejected,
    ];
}

/// What one send came to, before the service reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Made(Answer),
    /// No answer (lost, or never arrived).
    Lost,
    /// A 5xx, new or replayed.
    ServerError,
    /// Refused as misconfigured.
    Rejected,
    /// A refund refused for more than remains of its payment.
    Refused,
}

impl Provider {
    pub fn new() -> Provider {
        Provider {
            payments: Vec::new(),
            refunds: Vec::new(),
            keys: [None; SLOTS],
            webhooks: Vec::new(),
            refused: false,
            made_for_final: false,
        }
    }

    fn emit(&mut self, event: ProviderEvent) {
        self.webhooks.push(Delivery { event, copies: 1 });
    }

    /// A payment's answer as the ledger reads it (`answer_of`).
    pub fn answer_of_payment(&self, p: u8) -> Answer {
        if self.payments[p as usize].paid {
            Answer::Paid(p)
        } else {
            Answer::Declined(Some(p))
        }
    }

    /// A refund's answer as the ledger reads it (`refund_answer_of`).
    pub fn answer_of_refund(&self, r: u8) -> Answer {
        if self.refunds[r as usize].failed {
            Answer::RefundFailed(Some(r))
        } else {
            Answer::Refunded(r)
        }
    }

    /// A replay of what the key stored, or `None` when the fault means
    /// nothing for a replay (there is no effect to make before or after).
    fn replay(&self, key: ProviderKey, fault: Fault, answer: impl Fn(u8) -> Answer) -> Option<Sent> {
        match fault {
            Fault::None => Some(match key.stored {
                Stored::Made(id) => Sent::Made(answer(id)),
                Stored::ServerError => Sent::ServerError,
            }),
            Fault::AnswerLost => Some(Sent::Lost),
            Fault::Rejected => Some(Sent::Rejected),
            Fault::NotReached | Fault::ServerErrorBefore | Fault::ServerErrorAfter => None,
        }
    }

    /// A fault that stops a send before any effect: nothing reached the
    /// provider, it refused the request, or it stored a 5xx for the key.
    /// `None` when the effect is to be made.
    fn before_effect(&mut self, slot: usize, now: u8, fault: Fault) -> Option<Sent> {
        match fault {
            Fault::NotReached => Some(Sent::Lost),
            Fault::Rejected => Some(Sent::Rejected),
            Fault::ServerErrorBefore => {
                self.keys[slot] = Some(ProviderKey { at: now, stored: Stored::ServerError });
                Some(Sent::ServerError)
            }
            Fault::None | Fault::AnswerLost | Fault::ServerErrorAfter => None,
        }
    }

    /// The effect `made` is made: the key stores it (or a 5xx after it), and
    /// the answer reaches the sender unless the fault loses it.
    fn after_effect(&mut self, slot: usize, now: u8, fault: Fault, made: u8, answer: Answer) -> Sent {
        let stored = if fault == Fault::ServerErrorAfter { Stored::ServerError } else { Stored::Made(made) };
        self.keys[slot] = Some(ProviderKey { at: now, stored });
        match fault {
            Fault::AnswerLost => Sent::Lost,
            Fault::ServerErrorAfter => Sent::ServerError,
            _ => Sent::Made(answer),
        }
    }

    /// A charge sent with its attempt's key (`create_payment`). The card
    /// pays or declines as chosen for the attempt.
    pub fn send_payment(&mut self, attempt: u8, incarnation: u8, pays: bool, now: u8, fault: Fault) -> Option<Sent> {
        let slot = Effect::Charge(attempt).slot();
        if let Some(key) = self.keys[slot] {
            // the stored response: the payment as it was made (it never changes here)
            return self.replay(key, fault, |p| self.answer_of_payment(p));
        }
        if let Some(sent) = self.before_effect(slot, now, fault) {
            return Some(sent);
        }
        let p = self.payments.len() as u8;
        self.payments.push(Payment { attempt, incarnation, paid: pays, indexed: false });
        self.emit(ProviderEvent::Payment(p));
        let answer = self.answer_of_payment(p);
        Some(self.after_effect(slot, now, fault, p, answer))
    }

    /// A refund of `payment` sent with its reference's key (`create_refund`).
    /// The provider refuses one for more than remains of the payment.
    pub fn send_refund(&mut self, reference: u8, payment: u8, amounts: &[u8], now: u8, fault: Fault) -> Option<Sent> {
        let slot = Effect::Refund(reference).slot();
        if let Some(key) = self.keys[slot] {
            // the stored response: the refund as it was made, succeeded
            return self.replay(key, fault, Answer::Refunded);
        }
        if let Some(sent) = self.before_effect(slot, now, fault) {
            return Some(sent);
        }
        if self.refunded(payment, amounts) + amounts[reference as usize] > crate::state::CHARGE_AMOUNT {
            // an invalid request: nothing made, and the ledger's refund stays pending
            self.refused = true;
            return Some(Sent::Refused);
        }
        let r = self.refunds.len() as u8;
        self.refunds.push(ProviderRefund { reference, payment, failed: false });
        self.emit(ProviderEvent::RefundSucceeded(r));
        Some(self.after_effect(slot, now, fault, r, Answer::Refunded(r)))
    }

    /// The attempt's payment as a look-up finds it by its metadata: `search`
    /// shows only what its index caught up with, a list everything. A
    /// success wins over anything else found (`look_up`).
    pub fn find_payment(&self, attempt: u8, search: bool) -> Option<Answer> {
        let found = self.payments.iter().enumerate().filter(|(_, p)| p.attempt == attempt && (p.indexed || !search));
        let found: Vec<u8> = found.map(|(i, _)| i as u8).collect();
        found.iter().find(|&&p| self.payments[p as usize].paid).or(found.first()).map(|&p| self.answer_of_payment(p))
    }

    /// The reference's refund among the payment's, listed (`find_refund`).
    pub fn find_refund(&self, payment: u8, reference: u8) -> Option<Answer> {
        let found = self.refunds.iter().enumerate().filter(|(_, r)| r.payment == payment && r.reference == reference);
        let found: Vec<u8> = found.map(|(i, _)| i as u8).collect();
        found.iter().find(|&&r| !self.refunds[r as usize].failed).or(found.first()).map(|&r| self.answer_of_refund(r))
    }

    /// What the provider shows refunded of a payment.
    pub fn refunded(&self, payment: u8, amounts: &[u8]) -> u8 {
        self.refunds.iter().filter(|r| r.payment == payment && !r.failed).map(|r| amounts[r.reference as usize]).sum()
    }

    /// A refund that succeeded fails later (the card was closed).
    pub fn fail_refund(&mut self, r: u8) {
        self.refunds[r as usize].failed = true;
        self.emit(ProviderEvent::RefundFailed(r));
    }
}

impl Default for Provider {
    fn default() -> Self {
        Provider::new()
    }
}
