//! Authorizations expire. A payment made with manual capture holds its amount
//! on the card until `capture_before_ms`; one nobody captured or canceled by
//! then is canceled by the provider, `cancellation_reason` `automatic`, with
//! `payment_intent.canceled`, as Stripe does. A sweep does it on the fake's
//! clock (wall time) several times a second; a capture or a cancel that
//! reaches such a payment first expires it itself (`expire_if_due`), so no
//! request finds an authorization capturable past its time.

use std::time::Duration;

use actix_web::web::Data;

use crate::app::{now_ms, App};
use crate::events::{deliveries, Cause, NewEvent};
use crate::objects::Payment;
use crate::state::Op;

/// How often the sweep looks: what an expiry may lag its time by.
const POLL: Duration = Duration::from_millis(100);

/// Stripe's `cancellation_reason` for what it canceled itself.
const AUTOMATIC: &str = "automatic";

/// An expiry, for the batch of whoever found it due.
#[derive(Default)]
pub struct Expired {
    pub ops: Vec<Op>,
    pub events: Vec<NewEvent>,
}

/// Cancels `payment` if it is an authorization past its time.
pub fn expire_if_due(payment: &mut Payment, now_ms: i64) -> Expired {
    if !payment.authorization_expired(now_ms) {
        return Expired::default();
    }
    payment.cancel(Some(AUTOMATIC.to_owned()), now_ms);
    let event = NewEvent {
        kind: gateway::webhook::PAYMENT_CANCELED,
        object: payment.json(),
        metadata: payment.metadata.clone(),
    };
    Expired { ops: vec![Op::Payment(Box::new(payment.clone()))], events: vec![event] }
}

pub async fn run(app: Data<App>) {
    loop {
        sweep(&app).await;
        actix_web::rt::time::sleep(POLL).await;
    }
}

/// Every authorization due, canceled in one journal batch with its webhooks,
/// as the other changes on the provider's side are.
async fn sweep(app: &App) {
    let now = now_ms();
    let seq = {
        let mut state = app.state();
        let due = state.authorizations_due(now);
        if due.is_empty() {
            return;
        }
        tracing::info!(count = due.len(), "authorizations expired uncaptured");
        let mut ops = Vec::new();
        for id in due {
            // Built on the newest version, as a write is (see `State`).
            let mut payment = state.newest_payment(&id).expect("authorizations are payments").clone();
            let Expired { ops: changes, events } = expire_if_due(&mut payment, now);
            ops.extend(changes);
            for event in events {
                ops.extend(deliveries(&mut state, app, event, Cause::default(), now));
            }
        }
        state.commit(ops)
    };
    app.wait_durable(seq).await;
    app.wake.notify_one();
}
