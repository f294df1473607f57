//! Everything the fake provider knows, in memory, rebuilt from the journal at
//! start. Every change goes through [`State::commit`]: applied here and
//! queued for the journal in one step, under the caller's lock, so the
//! journal's order is the order changes were made.
//!
//! Writes build on the newest version of an object (`newest_*`): their own
//! batch follows it in the journal, and is answered only once on disk, which
//! puts the earlier one there too. Reads see the newest version on disk
//! (`payment`, `refund`, the lists), so nobody is told of a change a crash
//! could still undo.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use gateway::PaymentStatus;
use serde_json::Value;
use tokio::sync::watch;

use crate::journal::{Batch, Writer};
use crate::objects::{Payment, RefundRecord};
pub use crate::records::{Delivery, IdempotencyRecord, Op};
use crate::versions::{Superseded, Versioned};

pub struct IdempotencyEntry {
    pub record: IdempotencyRecord,
    pub seq: u64,
    /// A slow answer keeps the key in flight until then.
    pub held_until: Option<Instant>,
}

pub struct State {
    /// The newest version of each payment, in creation order; readers go
    /// through [`State::payment`] and the like, which see durable versions.
    pub payments: Vec<Payment>,
    payment_index: HashMap<String, usize>,
    superseded_payments: Superseded<Payment>,
    pub refunds: Vec<RefundRecord>,
    refund_index: HashMap<String, usize>,
    superseded_refunds: Superseded<RefundRecord>,
    /// Payments in `requires_capture` (newest versions), with the time
    /// (unix ms) their authorization expires: what the expiry sweep reads
    /// instead of every payment.
    uncaptured: HashMap<String, i64>,
    idempotency: HashMap<(String, String), IdempotencyEntry>,
    pub deliveries: BTreeMap<u64, Delivery>,
    pending: BTreeSet<u64>,
    /// Per endpoint, the highest delivery id that went through.
    delivered_up_to: HashMap<String, u64>,
    pub endpoints: Vec<String>,
    next_seq: u64,
    next_delivery: u64,
    writer: Writer,
    durable: watch::Receiver<u64>,
}

/// What an idempotency key says about a new request.
pub enum KeyCheck<'a> {
    /// Never seen, or expired: carry the request out.
    Fresh,
    Replay(&'a IdempotencyRecord),
    /// The first request with this key is still being carried out.
    InFlight,
    /// Seen with other parameters.
    Mismatch,
}

impl State {
    /// `durable` says which batches are on disk, so that versions no reader
    /// needs any more are let go.
    pub fn restore(batches: Vec<Batch>, writer: Writer, durable: watch::Receiver<u64>) -> Self {
        let mut state = State {
            payments: Vec::new(),
            payment_index: HashMap::new(),
            superseded_payments: Superseded::new(),
            refunds: Vec::new(),
            refund_index: HashMap::new(),
            superseded_refunds: Superseded::new(),
            uncaptured: HashMap::new(),
            idempotency: HashMap::new(),
            deliveries: BTreeMap::new(),
            pending: BTreeSet::new(),
            delivered_up_to: HashMap::new(),
            endpoints: Vec::new(),
            next_seq: 1,
            next_delivery: 1,
            writer,
            durable,
        };
        for batch in batches {
            for op in batch.ops {
                state.apply(op, batch.seq);
            }
            state.next_seq = batch.seq + 1;
        }
        state.forget_superseded();
        state
    }

    /// Applies `ops` and queues them for the journal; returns the sequence
    /// number to wait for before anyone is told.
    pub fn commit(&mut self, ops: Vec<Op>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let batch = Batch { seq, ops };
        self.writer.append(&batch);
        self.forget_superseded();
        for op in batch.ops {
            self.apply(op, seq);
        }
        seq
    }

    fn apply(&mut self, op: Op, seq: u64) {
        match op {
            Op::Payment(payment) => {
                let mut payment = *payment;
                payment.seq = seq;
                match payment.capture_before_ms.filter(|_| payment.status == PaymentStatus::RequiresCapture) {
                    Some(until) => self.uncaptured.insert(payment.id.clone(), until),
                    None => self.uncaptured.remove(&payment.id),
                };
                match self.payment_index.get(&payment.id) {
                    Some(&i) => {
                        let old = std::mem::replace(&mut self.payments[i], payment);
                        self.superseded_payments.push(&old.id.clone(), old, seq);
                    }
                    None => {
                        self.payment_index.insert(payment.id.clone(), self.payments.len());
                        self.payments.push(payment);
                    }
                }
            }
            Op::Refund(mut record) => {
                record.seq = seq;
                match self.refund_index.get(&record.refund.id) {
                    Some(&i) => {
                        let old = std::mem::replace(&mut self.refunds[i], record);
                        self.superseded_refunds.push(&old.refund.id.clone(), old, seq);
                    }
                    None => {
                        self.refund_index.insert(record.refund.id.clone(), self.refunds.len());
                        self.refunds.push(record);
                    }
                }
            }
            Op::Idempotency(record) => {
                let key = (record.scope.clone(), record.key.clone());
                self.idempotency.insert(key, IdempotencyEntry { record, seq, held_until: None });
            }
            Op::Delivery(mut delivery) => {
                delivery.seq = seq;
                self.next_delivery = self.next_delivery.max(delivery.id + 1);
                if delivery.delivered_ms.is_none() {
                    self.pending.insert(delivery.id);
                }
                self.deliveries.insert(delivery.id, delivery);
            }
            Op::Delivered { id, at_ms } => {
                self.pending.remove(&id);
                if let Some(delivery) = self.deliveries.get_mut(&id) {
                    delivery.delivered_ms = Some(at_ms);
                    delivery.in_progress = false;
                    let up_to = self.delivered_up_to.entry(delivery.endpoint.clone()).or_default();
                    *up_to = (*up_to).max(id);
                }
            }
            Op::Endpoints { urls } => self.endpoints = urls,
        }
    }

    pub fn check_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
        ttl_ms: i64,
        durable: u64,
    ) -> KeyCheck<'_> {
        let Some(entry) = self.idempotency.get(&(scope.to_owned(), key.to_owned())) else {
            return KeyCheck::Fresh;
        };
        if now_ms - entry.record.created_ms >= ttl_ms {
            return KeyCheck::Fresh;
        }
        if entry.seq > durable || entry.held_until.is_some_and(|until| Instant::now() < until) {
            return KeyCheck::InFlight;
        }
        if entry.record.fingerprint != fingerprint {
            return KeyCheck::Mismatch;
        }
        KeyCheck::Replay(&entry.record)
    }

    pub fn hold_key(&mut self, scope: &str, key: &str, until: Instant) {
        if let Some(entry) = self.idempotency.get_mut(&(scope.to_owned(), key.to_owned())) {
            entry.held_until = Some(until);
        }
    }

    /// What a write builds on: the newest version, on disk or not yet.
    pub fn newest_payment(&self, id: &str) -> Option<&Payment> {
        self.payment_index.get(id).map(|&i| &self.payments[i])
    }

    pub fn newest_payment_by_charge(&self, charge_id: &str) -> Option<&Payment> {
        self.payments.iter().find(|p| p.charge_id == charge_id)
    }

    /// Payments whose authorization has expired uncaptured by `now_ms`.
    pub fn authorizations_due(&self, now_ms: i64) -> Vec<String> {
        self.uncaptured.iter().filter(|(_, until)| now_ms >= **until).map(|(id, _)| id.clone()).collect()
    }

    pub fn newest_refund(&self, id: &str) -> Option<&RefundRecord> {
        self.refund_index.get(id).map(|&i| &self.refunds[i])
    }

    /// The newest version of a payment on disk.
    pub fn payment(&self, id: &str, durable: u64) -> Option<&Payment> {
        let newest = &self.payments[*self.payment_index.get(id)?];
        self.superseded_payments.visible(id, newest, durable)
    }

    pub fn payment_by_charge(&self, charge_id: &str, durable: u64) -> Option<&Payment> {
        self.visible_payments(durable).find(|p| p.charge_id == charge_id)
    }

    /// Payments as readers see them, in creation order.
    pub fn visible_payments(&self, durable: u64) -> impl DoubleEndedIterator<Item = &Payment> {
        self.payments.iter().filter_map(move |p| self.superseded_payments.visible(&p.id, p, durable))
    }

    /// Durable payments, newest first (creation order breaks ties within a
    /// second).
    pub fn payments_newest_first(&self, durable: u64) -> impl Iterator<Item = &Payment> {
        self.visible_payments(durable).rev()
    }

    /// The newest version of a refund on disk.
    pub fn refund(&self, id: &str, durable: u64) -> Option<&RefundRecord> {
        let newest = &self.refunds[*self.refund_index.get(id)?];
        self.superseded_refunds.visible(id, newest, durable)
    }

    /// Refunds as readers see them, in creation order (a refund that changes
    /// keeps its place).
    pub fn visible_refunds(&self, durable: u64) -> impl DoubleEndedIterator<Item = &RefundRecord> {
        self.refunds.iter().filter_map(move |r| self.superseded_refunds.visible(&r.refund.id, r, durable))
    }

    pub fn refunds_newest_first(&self, durable: u64) -> impl Iterator<Item = &RefundRecord> {
        self.visible_refunds(durable).rev()
    }

    fn forget_superseded(&mut self) {
        let durable = *self.durable.borrow();
        self.superseded_payments.forget(durable);
        self.superseded_refunds.forget(durable);
    }

    pub fn next_delivery_id(&mut self) -> u64 {
        let id = self.next_delivery;
        self.next_delivery += 1;
        id
    }

    /// Deliveries to attempt now; they are marked in progress.
    pub fn take_due(&mut self, now_ms: i64, durable: u64) -> Vec<Delivery> {
        let mut due = Vec::new();
        for id in &self.pending {
            let delivery = &self.deliveries[id];
            if delivery.in_progress || delivery.seq > durable || delivery.due_ms > now_ms {
                continue;
            }
            if let Some(until) = delivery.held_until_ms {
                let overtaken = self.delivered_up_to.get(&delivery.endpoint).is_some_and(|&up_to| up_to > *id);
                if !overtaken && now_ms < until {
                    continue;
                }
            }
            due.push(*id);
        }
        due.into_iter()
            .map(|id| {
                let delivery = self.deliveries.get_mut(&id).expect("pending deliveries exist");
                delivery.in_progress = true;
                delivery.attempts += 1;
                delivery.clone()
            })
            .collect()
    }

    /// A failed attempt: try again at `due_ms` (kept in memory only; after a
    /// restart the delivery is tried at once).
    pub fn retry_later(&mut self, id: u64, due_ms: i64) {
        if let Some(delivery) = self.deliveries.get_mut(&id) {
            delivery.in_progress = false;
            delivery.due_ms = due_ms;
        }
    }

    pub fn pending_deliveries(&self) -> usize {
        self.pending.len()
    }
}

/// The event JSON of a delivery, for the admin listing.
pub fn delivery_summary(delivery: &Delivery) -> Value {
    serde_json::json!({
        "id": delivery.id,
        "event_id": delivery.event_id,
        "type": delivery.event_type,
        "endpoint": delivery.endpoint,
        "attempts": delivery.attempts,
        "due_ms": delivery.due_ms,
        "held": delivery.held_until_ms.is_some(),
        "delivered_ms": delivery.delivered_ms,
    })
}

impl Versioned for Payment {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Versioned for RefundRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
}
