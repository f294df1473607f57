//! Actions as a person reads them in a counterexample: who acts, the
//! function or crash point of the code, and what came of it.

use crate::bounds::Design;
use crate::model::{Action, PaymentModel};
use crate::provider::Fault;
use crate::state::{Answer, Asked, Effect, ProviderEvent, Reply, State, Step};
use stateright::Model;

pub fn effect(effect: Effect) -> String {
    match effect {
        Effect::Charge(a) => format!("charge attempt {}", a + 1),
        Effect::Refund(r) => format!("refund ref-{}", r + 1),
    }
}

fn key(k: u8) -> char {
    (b'A' + k) as char
}

fn fault(f: Fault) -> &'static str {
    match f {
        Fault::None => "",
        Fault::AnswerLost => " [the answer is lost]",
        Fault::NotReached => " [the request never arrives]",
        Fault::ServerErrorBefore => " [a 5xx, stored for the key, before the effect]",
        Fault::ServerErrorAfter => " [a 5xx, stored for the key, after the effect]",
        Fault::Rejected => " [refused as misconfigured]",
    }
}

fn asked(a: Asked) -> String {
    match a {
        Asked::Answer(Answer::Paid(p)) => format!("paid (payment #{p})"),
        Asked::Answer(Answer::Declined(Some(p))) => format!("declined (payment #{p})"),
        Asked::Answer(Answer::Declined(None)) => "declined (provider_error: nothing found)".to_owned(),
        Asked::Answer(Answer::Refunded(r)) => format!("refunded (provider refund #{r})"),
        Asked::Answer(Answer::RefundFailed(Some(r))) => format!("refund failed (provider refund #{r})"),
        Asked::Answer(Answer::RefundFailed(None)) => "refund failed (provider_error: nothing found)".to_owned(),
        Asked::Unknown => "unknown".to_owned(),
        Asked::Rejected => "rejected".to_owned(),
        Asked::Final => "already final, not asked".to_owned(),
    }
}

fn reply(r: Reply) -> &'static str {
    match r {
        Reply::Paid => "201 paid",
        Reply::CardDeclined => "402 card_declined",
        Reply::Refunded => "201 refunded",
        Reply::RefundFailed => "402 refund failed or declined",
        Reply::InFlight => "202",
        Reply::Refused => "refused, not stored (409/502)",
    }
}

fn event(e: ProviderEvent) -> String {
    match e {
        ProviderEvent::Payment(p) => format!("payment #{p}"),
        ProviderEvent::RefundSucceeded(r) => format!("refund #{r} succeeded"),
        ProviderEvent::RefundFailed(r) => format!("refund #{r} failed"),
    }
}

fn functions(e: Effect) -> (&'static str, &'static str, &'static str) {
    match e {
        Effect::Charge(_) => ("cards::begin", "Provider::ask", "cards::complete"),
        Effect::Refund(_) => ("refunds::begin", "Provider::ask_refund", "refunds::complete"),
    }
}

fn takes(e: Effect) -> &'static str {
    match e {
        Effect::Charge(_) => "cards::take",
        Effect::Refund(_) => "refunds::take",
    }
}

/// One step of a trace: the action taken from `before`, and what it did.
pub fn step(model: &PaymentModel, before: &State, action: &Action) -> String {
    let after = model.next_state(before, *action);
    let request = |i: u8| {
        let r = before.requests[i as usize];
        format!("API {} key {}", effect(r.effect), key(r.key))
    };
    match *action {
        Action::PostCharge { attempt, key: k } => {
            let e = Effect::Charge(attempt);
            format!("client: POST /v1/charges, {} key {}: idempotency::first + cards::begin", effect(e), key(k))
        }
        Action::PostRefund { reference, key: k } => {
            let e = Effect::Refund(reference);
            format!(
                "client: POST /v1/charges/{{id}}/refunds, {} key {}: idempotency::first + refunds::begin",
                effect(e),
                key(k)
            )
        }
        Action::Ask { request: i, fault: f } => {
            let r = before.requests[i as usize];
            let got = after
                .as_ref()
                .and_then(|s| {
                    s.requests.iter().find_map(|x| match x.step {
                        Step::Asked(a) if x.effect == r.effect && x.key == r.key => Some(a),
                        _ => None,
                    })
                })
                .map(asked)
                .unwrap_or_default();
            let (take, ask) = (takes(r.effect), functions(r.effect).1);
            format!("{}: effects::ask ({take}, {ask}){} -> {}", request(i), fault(f), got)
        }
        Action::Complete { request: i } => {
            let r = before.requests[i as usize];
            let heard = after.as_ref().and_then(|s| {
                s.requests.iter().find_map(|x| match x.step {
                    Step::Answered(reply) if x.effect == r.effect && x.key == r.key => Some(reply),
                    _ => None,
                })
            });
            match (r.step, heard) {
                (Step::Asked(Asked::Rejected), _) => {
                    let kept = after.as_ref().is_some_and(|s| s.in_flight(r.effect));
                    let what = if kept { "kept in flight" } else { "abandoned" };
                    format!("{}: effects::abandon, {what} (502 provider_rejected)", request(i))
                }
                (_, Some(Reply::InFlight)) => {
                    format!("{}: {} finds it still in flight (202, not stored)", request(i), functions(r.effect).2)
                }
                _ => format!("{}: {} + idempotency::store_final", request(i), functions(r.effect).2),
            }
        }
        Action::Reply { request: i } => {
            let r = before.requests[i as usize];
            let heard = match r.step {
                Step::Answered(x) => reply(x),
                _ => "",
            };
            format!("{}: the client hears {heard}", request(i))
        }
        Action::Crash { request: i } => {
            format!("{}: crash at {}", request(i), crate::api::crash_point(&before.requests[i as usize]))
        }
        Action::ClaimStale { effect: e } => {
            let claim = match e {
                Effect::Charge(_) => "cards::claim_stale",
                Effect::Refund(_) => "refunds::claim_stale",
            };
            format!("completer: {claim} claims {}", effect(e))
        }
        Action::CompleterAsks { fault: f } => {
            let job = before.completer.expect("a job");
            let got = after.and_then(|s| s.completer).and_then(|j| j.asked).map(asked).unwrap_or_default();
            let (take, ask) = (takes(job.effect), functions(job.effect).1);
            match model.design {
                Design::CompleterSendsFromItsClaim => {
                    format!("completer: complete_stale sends from its claim ({ask}){} -> {got}", fault(f))
                }
                _ => format!("completer: complete_stale, effects::ask ({take}, {ask}){} -> {got}", fault(f)),
            }
        }
        Action::CompleterCompletes => {
            let job = before.completer.expect("a job");
            match job.asked {
                Some(Asked::Answer(_)) => format!("completer: {}", functions(job.effect).2),
                Some(Asked::Rejected) => {
                    let kept = after.as_ref().is_some_and(|s| s.in_flight(job.effect));
                    format!("completer: effects::abandon, {}", if kept { "kept in flight" } else { "abandoned" })
                }
                Some(Asked::Final) => "completer: already final, nothing to record".to_owned(),
                _ => "completer: outcome unknown, left for the next lease".to_owned(),
            }
        }
        Action::CompleterCrashes => match before.completer.and_then(|j| j.asked) {
            Some(_) => "completer: crash at completer-after-provider".to_owned(),
            None => "completer: crash before asking the provider".to_owned(),
        },
        Action::ClockTicks => match before.clock {
            0 => "time: the search lag passes (GATEWAY_SEARCH_LAG_SECS)".to_owned(),
            1 => "time: the key window passes (GATEWAY_KEY_WINDOW_SECS)".to_owned(),
            _ => "time: long after".to_owned(),
        },
        Action::ProviderForgetsKey { effect: e } => {
            format!("provider: forgets the key of {} (its key window)", effect(e))
        }
        Action::SearchCatchesUp => "provider: its search index catches up".to_owned(),
        Action::Webhook { event: e, again } => {
            let again = if again { " (it will come again)" } else { "" };
            format!("webhook {}{again}: provider_events::receive", event(e))
        }
        Action::ProviderFailsRefund { refund } => format!("provider: refund #{refund} fails after it succeeded"),
        Action::SellerTransfersOut => "seller: transfers 1 out of its balance".to_owned(),
        Action::RelayPublishes => "relay: publish_batch publishes".to_owned(),
        Action::RelayMarksPublished => "relay: publish_batch marks published".to_owned(),
        Action::RelayCrashes => "relay: crash at relay-after-publish".to_owned(),
        Action::InventoryApplies { message } => format!("inventory: apply message {message} (inbox + commit)"),
        Action::InventoryAcks => "inventory: ack".to_owned(),
        Action::InventoryCrashes => "inventory: crash at inventory-after-commit".to_owned(),
    }
}

/// The state's facts a trace ends on: what the ledger and the provider hold.
pub fn outcome(s: &State) -> String {
    let charges: Vec<String> = s
        .ledger
        .charges
        .iter()
        .enumerate()
        .filter_map(|(a, c)| c.map(|c| format!("attempt {} {:?} (payment {:?})", a + 1, c.status, c.payment)))
        .collect();
    let refunds: Vec<String> = s
        .ledger
        .refunds
        .iter()
        .enumerate()
        .filter_map(|(r, f)| f.map(|f| format!("ref-{} {:?}", r + 1, f.status)))
        .collect();
    let payments: Vec<String> = s
        .provider
        .payments
        .iter()
        .enumerate()
        .map(|(i, p)| format!("#{i} attempt {} {}", p.attempt + 1, if p.paid { "paid" } else { "declined" }))
        .collect();
    let provider_refunds: Vec<String> = s
        .provider
        .refunds
        .iter()
        .enumerate()
        .map(|(i, f)| format!("#{i} ref-{}{}", f.reference + 1, if f.failed { " failed" } else { "" }))
        .collect();
    format!(
        "ledger: charges [{}], refunds [{}], refunded {}, seller {}; provider: payments [{}], refunds [{}]",
        charges.join(", "),
        refunds.join(", "),
        s.ledger.refunded,
        s.ledger.seller,
        payments.join(", "),
        provider_refunds.join(", ")
    )
}
