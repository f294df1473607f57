//! `/_fake/refunds/{id}/fail` and `/_fake/refunds/{id}/succeed`: what the
//! card network decides after a refund was accepted. A refund to a closed or
//! lost card fails days later and its amount goes back to the payment; a
//! pending one settles. Each is one journal batch with its webhooks, on disk
//! before the answer, like a write of the API.

use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use gateway::webhook::{CHARGE_REFUND_UPDATED, REFUND_FAILED, REFUND_UPDATED};
use gateway::RefundStatus;
use serde_json::json;

use crate::app::{now_ms, App};
use crate::events::{deliveries, Cause, NewEvent};
use crate::objects::{name_of, refund_json, RefundRecord};
use crate::routes::body_field;
use crate::routes::refunds::fault_metadata;
use crate::state::Op;

/// What Stripe most often names for a card refund that fails.
const DEFAULT_FAILURE_REASON: &str = "lost_or_stolen_card";

enum Fate {
    Fail { reason: String },
    Succeed,
}

/// A `succeeded` or `pending` refund fails: `failure_reason` (form or JSON,
/// default `lost_or_stolen_card`), its amount back on the payment, and
/// `refund.failed` and `charge.refund.updated`.
pub async fn fail(req: HttpRequest, id: Path<String>, body: Bytes, app: Data<App>) -> HttpResponse {
    let reason = match body_field(&req, &body, "failure_reason") {
        Ok(reason) => reason.unwrap_or_else(|| DEFAULT_FAILURE_REASON.to_owned()),
        Err(message) => return HttpResponse::BadRequest().json(json!({ "error": message })),
    };
    settle(&app, &id, Fate::Fail { reason }).await
}

/// A `pending` refund succeeds: `refund.updated` and `charge.refund.updated`.
pub async fn succeed(id: Path<String>, app: Data<App>) -> HttpResponse {
    settle(&app, &id, Fate::Succeed).await
}

async fn settle(app: &App, id: &str, fate: Fate) -> HttpResponse {
    let now = now_ms();
    let (seq, answer) = {
        let mut state = app.state();
        // Built on the newest versions, as an API write is (see `State`).
        let Some(record) = state.newest_refund(id) else {
            return HttpResponse::NotFound().json(json!({ "error": format!("no refund {id}") }));
        };
        let mut refund = record.refund.clone();
        let (from, allowed, verb): (&[RefundStatus], _, _) = match fate {
            Fate::Fail { .. } => (&[RefundStatus::Succeeded, RefundStatus::Pending], "a succeeded or pending", "fail"),
            Fate::Succeed => (&[RefundStatus::Pending], "a pending", "succeed"),
        };
        if !from.contains(&refund.status) {
            let status = name_of(&refund.status);
            let message = format!("refund {id} is {status}; only {allowed} refund can {verb}");
            return HttpResponse::BadRequest().json(json!({ "error": message }));
        }
        let payment_id = refund.payment_intent.clone().unwrap_or_default();
        let mut payment = state.newest_payment(&payment_id).expect("a refund's payment exists").clone();
        let metadata = fault_metadata(&payment, &refund.metadata);
        let mut ops = Vec::new();
        let kinds = match fate {
            Fate::Fail { reason } => {
                refund.status = RefundStatus::Failed;
                refund.failure_reason = Some(reason);
                // The money never reached the card: it is the payment's again,
                // and may be refunded anew.
                payment.amount_refunded -= refund.amount;
                payment.changed_ms = now;
                ops.push(Op::Payment(Box::new(payment)));
                [REFUND_FAILED, CHARGE_REFUND_UPDATED]
            }
            Fate::Succeed => {
                refund.status = RefundStatus::Succeeded;
                [REFUND_UPDATED, CHARGE_REFUND_UPDATED]
            }
        };
        let object = refund_json(&refund);
        ops.insert(0, Op::Refund(RefundRecord { refund, seq: 0 }));
        for kind in kinds {
            let event = NewEvent { kind, object: object.clone(), metadata: metadata.clone() };
            ops.extend(deliveries(&mut state, app, event, Cause::default(), now));
        }
        (state.commit(ops), object)
    };
    app.wait_durable(seq).await;
    app.wake.notify_one();
    HttpResponse::Ok().json(answer)
}
