//! `reconcile-payments`: the provider's payments for a period against the
//! ledger's card charges, the daily check a finance team runs. Differences:
//!
//! - `payment_without_charge`: the provider took money that no succeeded
//!   charge records (a charge still processing, or none at all);
//! - `charge_without_payment`: a succeeded charge whose payment the provider
//!   does not have as succeeded;
//! - `amount_differs` / `currency_differs`: the two disagree on what was taken.
//!
//! And the provider's refunds against the ledger's card refunds:
//!
//! - `refund_without_record`: the provider refunded (or is refunding) money
//!   that no refund of the ledger records as succeeded or pending;
//! - `refund_not_final`: the provider's refund succeeded or failed, the
//!   ledger's is still `pending`;
//! - `refund_without_provider_refund`: a succeeded refund whose provider
//!   refund the provider does not have as succeeded;
//! - `refund_amount_differs`: the two disagree on a refund's amount;
//! - `refunded_amount_differs`: a payment's refunds at the provider do not
//!   sum to what the ledger refunded of its charge.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::{PaymentIntent, PaymentStatus, RefundStatus};
use ledger::cards::{minor_units, Reconciled};
use ledger::refunds::RefundStatus as LedgerRefund;
use service::provider::Provider;

use crate::Error;

/// One difference between the provider and the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: &'static str,
    pub detail: String,
}

/// How far around the period a payment and its charge may lie apart (their
/// clocks and the time between the charge's two transactions).
const SLACK_SECS: i64 = 3600;

/// Whether a provider object created at `t` (unix seconds) lies in [from,
/// to). The provider counts whole seconds: an object of the period's last
/// (partial) second belongs to it.
fn in_period_secs(from: DateTime<Utc>, to: DateTime<Utc>) -> impl Fn(i64) -> bool {
    let to_secs = to.timestamp() + i64::from(to.timestamp_subsec_nanos() > 0);
    move |t| t >= from.timestamp() && t < to_secs
}

/// Compares the provider's payments created in [from, to) with the ledger.
pub async fn reconcile(
    pool: &Pool,
    payments: &Provider,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Difference>, Error> {
    let slack = chrono::Duration::seconds(SLACK_SECS);
    let listed =
        payments.client.list_all_payments((from - slack).timestamp(), (to + slack).timestamp()).await.map_err(|e| {
            Error::Setting { setting: "GATEWAY_URL", detail: format!("listing the provider's payments: {e}") }
        })?;
    let in_period = in_period_secs(from, to);
    let provider: HashMap<&str, &PaymentIntent> = listed.iter().map(|p| (p.id.as_str(), p)).collect();
    let client = pool.get().await?;
    let mut charges = ledger::cards::created_between(&**client, from - slack, to + slack).await?;
    // charges outside the widened period that recorded a payment of the period
    let known: std::collections::HashSet<String> =
        charges.iter().filter_map(|c| c.provider_payment_id.clone()).collect();
    let missing: Vec<String> = listed.iter().map(|p| p.id.clone()).filter(|id| !known.contains(id)).collect();
    charges.extend(ledger::cards::by_payments(&**client, &missing).await?);
    let by_payment: HashMap<&str, &Reconciled> =
        charges.iter().filter_map(|c| c.provider_payment_id.as_deref().map(|p| (p, c))).collect();

    let mut out = Vec::new();
    for p in listed.iter().filter(|p| p.status == PaymentStatus::Succeeded && in_period(p.created)) {
        let Some(c) = by_payment.get(p.id.as_str()).filter(|c| c.status == "succeeded") else {
            let recorded = by_payment.get(p.id.as_str()).map(|c| format!("{} {}", c.charge_id, c.status));
            out.push(Difference {
                kind: "payment_without_charge",
                detail: format!(
                    "payment {} of {} {} (order {}, attempt {}, tenant {}) has no succeeded charge{}",
                    p.id,
                    p.amount,
                    p.currency,
                    p.metadata.get("order_id").map_or("-", String::as_str),
                    p.metadata.get("attempt").map_or("-", String::as_str),
                    p.metadata.get("tenant_id").map_or("-", String::as_str),
                    recorded.map(|r| format!(" (charge {r})")).unwrap_or_default()
                ),
            });
            continue;
        };
        if !p.currency.eq_ignore_ascii_case(c.currency.code()) {
            out.push(Difference {
                kind: "currency_differs",
                detail: format!(
                    "payment {} is in {}, charge {} in {}",
                    p.id,
                    p.currency,
                    c.charge_id,
                    c.currency.code()
                ),
            });
        } else if p.amount_received != minor_units(c.amount, c.currency) {
            // what was taken: a captured authorization may have taken less than it held
            out.push(Difference {
                kind: "amount_differs",
                detail: format!(
                    "payment {} took {} minor units, charge {} records {} {}",
                    p.id,
                    p.amount_received,
                    c.charge_id,
                    c.amount,
                    c.currency.code()
                ),
            });
        }
    }
    let in_charge_period = |c: &Reconciled| c.created_at >= from && c.created_at < to;
    for c in charges.iter().filter(|c| c.status == "succeeded" && in_charge_period(c)) {
        let found = c.provider_payment_id.as_deref().and_then(|id| provider.get(id));
        if !found.is_some_and(|p| p.status == PaymentStatus::Succeeded) {
            out.push(Difference {
                kind: "charge_without_payment",
                detail: format!(
                    "charge {} (tenant {}, order {}, attempt {}, {} {}) records payment {} that the provider {}",
                    c.charge_id,
                    c.tenant.0,
                    c.order_id,
                    c.attempt,
                    c.amount,
                    c.currency.code(),
                    c.provider_payment_id.as_deref().unwrap_or("-"),
                    match found {
                        Some(p) => format!("has as {:?}", p.status),
                        None => "does not list".to_owned(),
                    }
                ),
            });
        }
    }
    out.extend(reconcile_refunds(pool, payments, from, to).await?);
    Ok(out)
}

/// The refund half of [`reconcile`].
async fn reconcile_refunds(
    pool: &Pool,
    payments: &Provider,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Difference>, Error> {
    let slack = chrono::Duration::seconds(SLACK_SECS);
    let provider_error = |e: gateway::GatewayError| Error::Setting {
        setting: "GATEWAY_URL",
        detail: format!("listing the provider's refunds: {e}"),
    };
    let listed = payments
        .client
        .list_all_refunds((from - slack).timestamp(), (to + slack).timestamp())
        .await
        .map_err(provider_error)?;
    let in_period = in_period_secs(from, to);
    let ids: Vec<String> = listed.iter().map(|r| r.id.clone()).collect();
    let client = pool.get().await?;
    let recorded = ledger::refunds::card_refunds(&**client, from - slack, to + slack, &ids).await?;
    drop(client);
    let by_provider: HashMap<&str, &ledger::refunds::Reconciled> =
        recorded.iter().filter_map(|r| r.refund.provider_refund_id.as_deref().map(|p| (p, r))).collect();
    let by_id: HashMap<String, &ledger::refunds::Reconciled> =
        recorded.iter().map(|r| (r.refund.id.to_string(), r)).collect();
    let live = |status: RefundStatus| matches!(status, RefundStatus::Succeeded | RefundStatus::Pending);
    let mut out = Vec::new();
    for p in listed.iter().filter(|p| in_period(p.created)) {
        let ours = by_provider
            .get(p.id.as_str())
            .or_else(|| p.metadata.get("refund_id").and_then(|id| by_id.get(id)))
            .copied();
        let describe = || {
            format!(
                "refund {} of {} {} ({:?}, payment {}, charge {}, reference {})",
                p.id,
                p.amount,
                p.currency,
                p.status,
                p.payment_intent.as_deref().unwrap_or("-"),
                p.metadata.get("charge_id").map_or("-", String::as_str),
                p.metadata.get("reference").map_or("-", String::as_str),
            )
        };
        match ours {
            None if live(p.status) => out.push(Difference {
                kind: "refund_without_record",
                detail: format!("{} has no refund in the ledger", describe()),
            }),
            None => {}
            Some(r) => {
                let ledger_status = r.refund.status;
                if ledger_status == LedgerRefund::Pending && p.status != RefundStatus::Pending {
                    out.push(Difference {
                        kind: "refund_not_final",
                        detail: format!("{} is final at the provider, refund {} is pending", describe(), r.refund.id),
                    });
                } else if ledger_status == LedgerRefund::Failed && p.status == RefundStatus::Succeeded {
                    out.push(Difference {
                        kind: "refund_without_record",
                        detail: format!("{} succeeded, refund {} failed in the ledger", describe(), r.refund.id),
                    });
                } else if p.amount != minor_units(r.refund.amount, r.refund.currency) {
                    out.push(Difference {
                        kind: "refund_amount_differs",
                        detail: format!("{} differs from refund {} of {}", describe(), r.refund.id, r.refund.amount),
                    });
                }
            }
        }
    }
    let provider: HashMap<&str, &gateway::Refund> = listed.iter().map(|r| (r.id.as_str(), r)).collect();
    let in_refund_period = |r: &ledger::refunds::Reconciled| r.refund.created_at >= from && r.refund.created_at < to;
    for r in recorded.iter().filter(|r| r.refund.status == LedgerRefund::Succeeded && in_refund_period(r)) {
        let found = r.refund.provider_refund_id.as_deref().and_then(|id| provider.get(id));
        if !found.is_some_and(|p| p.status == RefundStatus::Succeeded) {
            out.push(Difference {
                kind: "refund_without_provider_refund",
                detail: format!(
                    "refund {} (charge {}, reference {}, {} {}) records provider refund {} that the provider {}",
                    r.refund.id,
                    r.refund.charge_id,
                    r.refund.reference,
                    r.refund.amount,
                    r.refund.currency.code(),
                    r.refund.provider_refund_id.as_deref().unwrap_or("-"),
                    match found {
                        Some(p) => format!("has as {:?}", p.status),
                        None => "does not list".to_owned(),
                    }
                ),
            });
        }
    }
    // Per payment: everything the provider refunded of it, whenever, against
    // the ledger's refunds of its charge that did not fail.
    let mut charges: Vec<&ledger::refunds::Reconciled> = Vec::new();
    for r in recorded.iter().filter(|r| in_refund_period(r)) {
        if !charges.iter().any(|c| c.refund.charge_id == r.refund.charge_id) {
            charges.push(r);
        }
    }
    for c in charges {
        let Some(payment) = c.refund.provider_payment_id.as_deref() else { continue };
        let all = payments.client.list_refunds(payment).await.map_err(provider_error)?;
        let at_provider: i64 = all.iter().filter(|r| live(r.status)).map(|r| r.amount).sum();
        let in_ledger = minor_units(c.charge_refunded, c.refund.currency);
        if at_provider != in_ledger {
            out.push(Difference {
                kind: "refunded_amount_differs",
                detail: format!(
                    "payment {payment} has {at_provider} minor units refunded at the provider, charge {} {} {} in the ledger",
                    c.refund.charge_id,
                    c.charge_refunded,
                    c.refund.currency.code()
                ),
            });
        }
    }
    Ok(out)
}
