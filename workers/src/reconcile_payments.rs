//! `reconcile-payments`: the provider's payments for a period against the
//! ledger's card charges, the daily check a finance team runs. Differences:
//!
//! - `payment_without_charge`: the provider took money that no succeeded
//!   charge records (a charge still processing, or none at all);
//! - `charge_without_payment`: a succeeded charge whose payment the provider
//!   does not have as succeeded;
//! - `amount_differs` / `currency_differs`: the two disagree on what was taken.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::{PaymentIntent, PaymentStatus};
use ledger::cards::{minor_units, Reconciled};
use service::payments::Payments;

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

/// Compares the provider's payments created in [from, to) with the ledger.
pub async fn reconcile(
    pool: &Pool,
    payments: &Payments,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Difference>, Error> {
    let slack = chrono::Duration::seconds(SLACK_SECS);
    let listed =
        payments.client.list_all_payments((from - slack).timestamp(), (to + slack).timestamp()).await.map_err(|e| {
            Error::Setting { setting: "GATEWAY_URL", detail: format!("listing the provider's payments: {e}") }
        })?;
    // the provider counts whole seconds: a payment of the period's last
    // (partial) second belongs to it
    let to_secs = to.timestamp() + i64::from(to.timestamp_subsec_nanos() > 0);
    let in_period = |t: i64| t >= from.timestamp() && t < to_secs;
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
        } else if p.amount != minor_units(c.amount, c.currency) {
            out.push(Difference {
                kind: "amount_differs",
                detail: format!(
                    "payment {} took {} minor units, charge {} records {} {}",
                    p.id,
                    p.amount,
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
    Ok(out)
}
