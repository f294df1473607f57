//! The provider calls of every effect at the payment provider (a card
//! charge, a card refund): the phase between an effect's two transactions
//! (`ledger::cards`, `ledger::refunds`), driven by `effects` for the API (a
//! request and its retries), the completer and nobody else.
//!
//! Every send for a charge carries the same provider key, so the provider's
//! own idempotency makes a resend after a timeout, a reset or a 5xx the same
//! request: it replays the first result instead of charging again. Past the
//! provider's key window a resend would be a new request, so the payment is
//! first looked up by the metadata we sent, and only sent if none exists.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::{
    GatewayError, PaymentIntent, PaymentOutcome, PaymentRequest, PaymentStatus, RefundOutcome, RefundStatus,
};
use ledger::card_holds::EndAnswer;
use ledger::cards::{minor_units, ProviderAnswer};
use ledger::charges::Charge;
use ledger::refunds::{Refund, RefundAnswer};
use ledger::TenantId;

use crate::settings::Gateway;

/// The provider client and what the service sends it.
#[derive(Clone, Debug)]
pub struct Provider {
    pub client: gateway::Client,
    key_secret: Vec<u8>,
    key_window: Duration,
    search_lag: Duration,
    lease: Duration,
    action_window: Duration,
    webhook_secret: String,
    webhook_tolerance: Duration,
}

/// What asking the provider gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked<A = ProviderAnswer> {
    /// A final answer, to record.
    Answer(A),
    /// No final answer (timeout, reset, 5xx, pending at the provider): the
    /// effect stays in flight and is asked again with the same key.
    Unknown(String),
    /// The provider refused the request itself, not the card: a key that
    /// may not do this, a wrong URL, an amount it does not take
    /// (`GatewayError::is_configuration`). Nothing happened there, and no
    /// resend or new attempt will change that until a person fixes it; it is
    /// not a decline. The provider's message.
    Rejected(String),
}

/// Seconds around a charge's first send that a look-up lists: the two
/// clocks may disagree, and a send may take a while to land.
const LIST_SLACK_SECS: i64 = 300;

/// The reason a payment is cancelled with when the buyer never authenticated.
const ABANDONED: &str = "abandoned";
/// The decline code of a charge whose payment was cancelled for that.
const AUTHENTICATION_REQUIRED: &str = "authentication_required";

/// The metadata of a charge's payment: what it is looked up by.
pub fn metadata(tenant: TenantId, charge: &Charge) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tenant_id".to_owned(), tenant.0.to_string()),
        ("order_id".to_owned(), charge.order_id.clone()),
        ("attempt".to_owned(), charge.attempt.to_string()),
        ("charge_id".to_owned(), charge.id.to_string()),
    ])
}

/// A provider payment as the ledger records it, when it is final (an
/// authorization is final for the charge: its capture is another effect).
pub fn answer_of(intent: &PaymentIntent) -> Option<ProviderAnswer> {
    match intent.status {
        PaymentStatus::RequiresCapture => Some(ProviderAnswer::Authorized {
            payment_id: intent.id.clone(),
            amount_minor: intent.amount,
            currency: intent.currency.clone(),
        }),
        PaymentStatus::Succeeded => Some(ProviderAnswer::Succeeded {
            payment_id: intent.id.clone(),
            amount_minor: intent.amount,
            currency: intent.currency.clone(),
        }),
        // Cancelled: by us when the buyer never authenticated (`abandoned`),
        // whoever reads it back, the completer or a retry that did not get
        // the cancel's own answer.
        PaymentStatus::Canceled => Some(ProviderAnswer::Declined {
            payment_id: Some(intent.id.clone()),
            code: match intent.cancellation_reason.as_deref() {
                Some(ABANDONED) | None => AUTHENTICATION_REQUIRED.to_owned(),
                Some(reason) => format!("canceled/{reason}"),
            },
        }),
        // a confirmation that failed leaves the payment waiting for another method
        PaymentStatus::RequiresPaymentMethod => Some(ProviderAnswer::Declined {
            payment_id: Some(intent.id.clone()),
            code: intent
                .last_payment_error
                .as_ref()
                .map(|e| decline_code(e.code.as_deref(), e.decline_code.as_deref()))
                .unwrap_or_else(|| "card_declined".to_owned()),
        }),
        _ => None,
    }
}

/// Sends the end of a card authorization (`what`: its capture or its void)
/// with its `key`: `send` answers the payment as it now is, or no answer.
/// Past a 5xx the provider stored for the key (and replays while it keeps
/// it) it is sent again with a key of this minute: a payment is captured
/// once and cancelled once, and only this end is ever sent for the charge,
/// so a new key cannot make a second effect.
async fn end_with<F>(what: &str, charge: &Charge, key: String, send: impl Fn(String) -> F) -> Asked<EndAnswer>
where
    F: std::future::Future<Output = Result<Result<PaymentIntent, gateway::Unknown>, GatewayError>>,
{
    let mut outcome = send(key.clone()).await;
    if let Ok(Err(why)) = &outcome {
        if why.reason == gateway::UnknownReason::ServerError {
            let minute = chrono::Utc::now().timestamp() / 60;
            outcome = send(format!("{key}:{minute}")).await;
        }
    }
    match outcome {
        Ok(Ok(intent)) => end_answer_of(&intent),
        Ok(Err(why)) => Asked::Unknown(why.to_string()),
        Err(e) if e.is_configuration() => Asked::Rejected(e.to_string()),
        Err(e) => {
            tracing::error!(charge = %charge.id, error = %e, "the provider refused the {what}");
            Asked::Unknown(e.to_string())
        }
    }
}

/// An authorization's payment as its end records it: captured (what was
/// taken) or cancelled; anything else is not an end yet.
fn end_answer_of(intent: &PaymentIntent) -> Asked<EndAnswer> {
    match intent.status {
        PaymentStatus::Succeeded => Asked::Answer(EndAnswer::Captured {
            payment_id: intent.id.clone(),
            amount_minor: intent.amount_received,
            currency: intent.currency.clone(),
        }),
        PaymentStatus::Canceled => Asked::Answer(EndAnswer::Canceled { payment_id: intent.id.clone() }),
        status => Asked::Unknown(format!("payment {} is {status:?} at the provider", intent.id)),
    }
}

/// The metadata of a refund at the provider: what it is looked up by.
pub fn refund_metadata(tenant: TenantId, refund: &Refund) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tenant_id".to_owned(), tenant.0.to_string()),
        ("charge_id".to_owned(), refund.charge_id.to_string()),
        ("reference".to_owned(), refund.reference.clone()),
        ("refund_id".to_owned(), refund.id.to_string()),
    ])
}

/// A provider refund as the ledger records it, when it is final.
pub fn refund_answer_of(refund: &gateway::Refund) -> Option<RefundAnswer> {
    match refund.status {
        RefundStatus::Succeeded => Some(RefundAnswer::Succeeded {
            refund_id: refund.id.clone(),
            amount_minor: refund.amount,
            currency: refund.currency.clone(),
        }),
        RefundStatus::Failed | RefundStatus::Canceled => Some(RefundAnswer::Failed {
            refund_id: Some(refund.id.clone()),
            code: refund.failure_reason.clone().unwrap_or_else(|| "refund_failed".to_owned()),
        }),
        _ => None,
    }
}

fn decline_code(code: Option<&str>, decline: Option<&str>) -> String {
    match (code, decline) {
        (Some(c), Some(d)) => format!("{c}/{d}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(d)) => format!("card_declined/{d}"),
        (None, None) => "card_declined".to_owned(),
    }
}

impl Provider {
    pub fn new(settings: &Gateway) -> Result<Provider, gateway::BuildError> {
        Ok(Provider {
            client: gateway::Client::new(&settings.client_config())?,
            key_secret: settings.gateway_key_secret.as_bytes().to_vec(),
            key_window: settings.key_window(),
            search_lag: Duration::from_secs(settings.gateway_search_lag_secs),
            lease: settings.lease(),
            action_window: Duration::from_secs(settings.gateway_action_window_secs),
            webhook_secret: settings.gateway_webhook_secret.clone(),
            webhook_tolerance: settings.webhook_tolerance(),
        })
    }

    /// The provider key of an order attempt: an HMAC of (tenant, order,
    /// attempt) under the server secret, at most 64 characters.
    pub fn provider_key(&self, tenant: TenantId, order_id: &str, attempt: i32) -> String {
        gateway::provider_key(&self.key_secret, tenant.0, order_id, attempt)
    }

    /// The provider key of a refund: (tenant, charge, reference).
    pub fn refund_key(&self, tenant: TenantId, charge_id: uuid::Uuid, reference: &str) -> String {
        gateway::refund_key(&self.key_secret, tenant.0, charge_id, reference)
    }

    /// How long the provider keeps an effect's key, from its first send.
    pub fn key_window(&self) -> Duration {
        self.key_window
    }

    /// How long whoever drives a processing charge holds the completer off.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Verifies a webhook's `Stripe-Signature` (with the tolerance) and
    /// parses its event.
    pub fn verify_webhook(
        &self,
        payload: &[u8],
        signature: Option<&str>,
    ) -> Result<gateway::Event, gateway::SignatureError> {
        let now = chrono::Utc::now().timestamp();
        gateway::webhook::verify(payload, signature, &self.webhook_secret, self.webhook_tolerance, now)
    }

    /// The provider key of a payment's cancellation: (tenant, charge).
    pub fn cancel_key(&self, tenant: TenantId, charge_id: uuid::Uuid) -> String {
        gateway::cancel_key(&self.key_secret, tenant.0, charge_id)
    }

    /// The provider key of the capture of a charge's authorization.
    pub fn capture_key(&self, tenant: TenantId, charge_id: uuid::Uuid) -> String {
        gateway::capture_key(&self.key_secret, tenant.0, charge_id)
    }

    /// The provider key of the void of a charge's authorization.
    pub fn void_key(&self, tenant: TenantId, charge_id: uuid::Uuid) -> String {
        gateway::void_key(&self.key_secret, tenant.0, charge_id)
    }

    /// Asks the provider to capture a card authorization whose capture is in
    /// flight (`capturing`): the charge's amount, with the capture's key.
    /// A capture is also idempotent by the payment's state (a payment is
    /// captured once, and only this capture is ever sent for the charge), so
    /// a payment found captured is this capture's answer, and one found
    /// cancelled (expired at the provider) ends it.
    pub async fn capture(&self, tenant: TenantId, charge: &Charge) -> Asked<EndAnswer> {
        let Some(payment_id) = &charge.provider_payment_id else {
            return Asked::Unknown(format!("charge {} has no provider payment to capture", charge.id));
        };
        let amount = Some(minor_units(charge.amount, charge.currency));
        let send = |key: String| async move {
            self.client.capture_payment(payment_id, amount, &key).await.map(|outcome| match outcome {
                gateway::CaptureOutcome::Captured(intent) | gateway::CaptureOutcome::NotCapturable(intent) => {
                    Ok(intent)
                }
                gateway::CaptureOutcome::Unknown(why) => Err(why),
            })
        };
        end_with("capture", charge, self.capture_key(tenant, charge.id), send).await
    }

    /// Asks the provider to cancel a card authorization whose void is in
    /// flight (`voiding`, asked for or expired), with the void's key. As a
    /// capture, idempotent by the payment's state too.
    pub async fn void(&self, tenant: TenantId, charge: &Charge) -> Asked<EndAnswer> {
        let Some(payment_id) = &charge.provider_payment_id else {
            return Asked::Unknown(format!("charge {} has no provider payment to cancel", charge.id));
        };
        let reason = match charge.authorization.as_ref().and_then(|a| a.void_reason) {
            Some(ledger::charges::VoidReason::Requested) => "requested_by_customer",
            _ => ABANDONED,
        };
        let send = |key: String| async move {
            self.client.cancel_payment_because(payment_id, reason, &key).await.map(|outcome| match outcome {
                gateway::CancelOutcome::Canceled(intent) | gateway::CancelOutcome::NotCancelable(intent) => Ok(intent),
                gateway::CancelOutcome::Unknown(why) => Err(why),
            })
        };
        end_with("void", charge, self.void_key(tenant, charge.id), send).await
    }

    /// A payment waiting for the buyer's authentication, as the ledger
    /// records it.
    fn requires_action(&self, intent: &PaymentIntent) -> ProviderAnswer {
        ProviderAnswer::RequiresAction {
            payment_id: intent.id.clone(),
            client_secret: intent.client_secret.clone(),
            next_action: intent.next_action.clone(),
            window: self.action_window,
        }
    }

    /// A charge waiting for the buyer's authentication: its payment is read
    /// by its id (a resend of the create would replay the first answer, not
    /// the payment as it is now). Still unauthenticated past the buyer's
    /// window (from the first send), it is cancelled at the provider, once,
    /// with a derived key, and the charge fails so that the next attempt may
    /// follow.
    async fn ask_authenticated(&self, tenant: TenantId, charge: &Charge) -> Asked {
        let Some(payment_id) = &charge.provider_payment_id else {
            return Asked::Unknown(format!("charge {} requires action without a payment", charge.id));
        };
        let intent = match self.client.retrieve_payment(payment_id).await {
            Ok(Some(intent)) => intent,
            Ok(None) => return Asked::Unknown(format!("the provider does not have payment {payment_id}")),
            Err(e) => return Asked::Unknown(format!("reading payment {payment_id}: {e}")),
        };
        if let Some(answer) = answer_of(&intent) {
            return Asked::Answer(answer);
        }
        let now = chrono::Utc::now();
        let waited = (now - charge.first_sent_at.unwrap_or(now)).to_std().unwrap_or_default();
        if intent.status != PaymentStatus::RequiresAction || waited < self.action_window {
            return Asked::Unknown(format!("payment {payment_id} is {:?}: waiting for the buyer", intent.status));
        }
        let key = self.cancel_key(tenant, charge.id);
        let mut cancelled = self.client.cancel_payment(payment_id, &key).await;
        if let Ok(gateway::CancelOutcome::Unknown(why)) = &cancelled {
            if why.reason == gateway::UnknownReason::ServerError {
                // The provider stores a 5xx for the key and replays it for a
                // day: the derived key can no longer cancel. A cancellation
                // is idempotent in itself (a payment already cancelled
                // answers so, and one that succeeded is not cancelled), so
                // a key of this minute's asks again without that risk.
                let minute = chrono::Utc::now().timestamp() / 60;
                cancelled = self.client.cancel_payment(payment_id, &format!("{key}:{minute}")).await;
            }
        }
        match cancelled {
            Ok(gateway::CancelOutcome::Canceled(canceled)) => Asked::Answer(ProviderAnswer::Declined {
                payment_id: Some(canceled.id),
                code: AUTHENTICATION_REQUIRED.to_owned(),
            }),
            // authenticated meanwhile: what it became is the answer
            Ok(gateway::CancelOutcome::NotCancelable(now)) => match answer_of(&now) {
                Some(answer) => Asked::Answer(answer),
                None => Asked::Unknown(format!("payment {} is {:?} and cannot be cancelled", now.id, now.status)),
            },
            Ok(gateway::CancelOutcome::Unknown(why)) => Asked::Unknown(why.to_string()),
            Err(e) if e.is_configuration() => Asked::Rejected(e.to_string()),
            Err(e) => Asked::Unknown(e.to_string()),
        }
    }

    /// Asks the provider for a processing charge's answer: looks the
    /// payment up first when the charge was first sent longer ago than the
    /// provider's key window, then sends it with its key.
    pub async fn ask(&self, tenant: TenantId, charge: &Charge) -> Asked {
        let (Some(payment_method), Some(key)) = (&charge.payment_method, &charge.provider_key) else {
            return Asked::Unknown(format!("charge {} is not a card charge", charge.id));
        };
        if charge.status == ledger::charges::ChargeStatus::RequiresAction {
            return self.ask_authenticated(tenant, charge).await;
        }
        // measured from the first send: the key was not at the provider before
        let now = chrono::Utc::now();
        let age = (now - charge.first_sent_at.unwrap_or(now)).to_std().unwrap_or_default();
        if age >= self.key_window {
            match self.look_up(tenant, charge).await {
                Ok(Some(asked)) => return asked,
                Ok(None) => {} // never reached the provider: sending it is the first time
                Err(e) => return Asked::Unknown(format!("look-up at the provider: {e}")),
            }
        }
        let request = PaymentRequest {
            amount: minor_units(charge.amount, charge.currency),
            currency: charge.currency.code().to_owned(),
            payment_method: payment_method.clone(),
            metadata: metadata(tenant, charge),
        };
        let capture = match charge.authorize_for {
            Some(_) => gateway::CaptureMethod::Manual,
            None => gateway::CaptureMethod::Automatic,
        };
        match self.client.create_payment_with_capture(&request, capture, key).await {
            Ok(PaymentOutcome::Succeeded(intent)) => match answer_of(&intent) {
                Some(answer) => Asked::Answer(answer),
                None => Asked::Unknown(format!("payment {} is {:?}", intent.id, intent.status)),
            },
            Ok(PaymentOutcome::Declined(d)) => Asked::Answer(ProviderAnswer::Declined {
                payment_id: d.payment_intent_id,
                code: decline_code(Some(&d.code), d.decline_code.as_deref()),
            }),
            Ok(PaymentOutcome::Pending(intent)) if intent.status == PaymentStatus::RequiresAction => {
                Asked::Answer(self.requires_action(&intent))
            }
            Ok(PaymentOutcome::RequiresCapture(intent)) => match answer_of(&intent) {
                Some(answer) => Asked::Answer(answer),
                None => Asked::Unknown(format!("payment {} is {:?}", intent.id, intent.status)),
            },
            Ok(PaymentOutcome::Pending(intent)) => {
                Asked::Unknown(format!("payment {} is {:?} at the provider", intent.id, intent.status))
            }
            Ok(PaymentOutcome::Unknown(why)) if why.reason == gateway::UnknownReason::ServerError => {
                // The provider stores a 5xx for the key and replays it for as
                // long as it keeps the key: resending cannot charge. Once its
                // search has caught up, no payment for the attempt means none
                // was ever made, and the attempt is over (a new one may follow).
                if age < self.search_lag {
                    return Asked::Unknown(why.to_string());
                }
                match self.look_up(tenant, charge).await {
                    Ok(Some(asked)) => asked,
                    Ok(None) => {
                        Asked::Answer(ProviderAnswer::Declined { payment_id: None, code: "provider_error".to_owned() })
                    }
                    Err(e) => Asked::Unknown(format!("{why}; look-up at the provider: {e}")),
                }
            }
            Ok(PaymentOutcome::Unknown(why)) => Asked::Unknown(why.to_string()),
            // The card was refused outright (no payment left behind):
            // nothing was taken, for good.
            Err(GatewayError::Rejected { kind, code, message, .. }) if kind == "card_error" => {
                tracing::warn!(charge = %charge.id, %kind, ?code, %message, "the provider refused the card");
                Asked::Answer(ProviderAnswer::Declined {
                    payment_id: None,
                    code: format!("{kind}/{}", code.as_deref().unwrap_or("rejected")),
                })
            }
            Err(e) if e.is_configuration() => Asked::Rejected(e.to_string()),
            Err(e) => {
                // configuration or a bug: keep the charge processing, loudly
                tracing::error!(charge = %charge.id, error = %e, "the provider call failed");
                Asked::Unknown(e.to_string())
            }
        }
    }

    /// The charge's payment at the provider, found by listing the payments
    /// around its first send and matching the metadata we sent: `None` when
    /// there is none (it was never made).
    pub async fn look_up(&self, tenant: TenantId, charge: &Charge) -> Result<Option<Asked>, GatewayError> {
        let tenant_id = tenant.0.to_string();
        let attempt = charge.attempt.to_string();
        // Listed, not searched: the provider's search may lag its writes
        // (Stripe: "don't use search for read-after-write flows"), most of
        // all during the outages that leave answers unknown. The list is
        // consistent; it covers the time around the first send (clocks and
        // the first send's own duration aside) up to now.
        let sent = charge.first_sent_at.unwrap_or(charge.created_at);
        let from = (sent - chrono::Duration::seconds(LIST_SLACK_SECS)).timestamp();
        let to = (chrono::Utc::now() + chrono::Duration::seconds(LIST_SLACK_SECS)).timestamp();
        let listed = self.client.list_all_payments(from, to).await?;
        let found: Vec<PaymentIntent> = listed
            .into_iter()
            .filter(|p| {
                p.metadata.get("tenant_id") == Some(&tenant_id)
                    && p.metadata.get("order_id") == Some(&charge.order_id)
                    && p.metadata.get("attempt") == Some(&attempt)
            })
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        // a success (or an authorization) wins over anything else found for the attempt
        if let Some(paid) = found
            .iter()
            .find(|p| p.status == PaymentStatus::Succeeded)
            .or_else(|| found.iter().find(|p| p.status == PaymentStatus::RequiresCapture))
        {
            return Ok(answer_of(paid).map(Asked::Answer));
        }
        if let Some(waiting) = found.iter().find(|p| p.status == PaymentStatus::RequiresAction) {
            return Ok(Some(Asked::Answer(self.requires_action(waiting))));
        }
        Ok(Some(match found.iter().find_map(answer_of) {
            Some(answer) => Asked::Answer(answer),
            None => Asked::Unknown("the payment is not final at the provider".to_owned()),
        }))
    }

    /// Asks the provider for a pending refund's answer: past the provider's
    /// key window (counted from the refund's first send) it lists the
    /// payment's refunds first and sends only when none is ours; else it
    /// sends with the refund's key, which the provider deduplicates.
    pub async fn ask_refund(&self, tenant: TenantId, refund: &Refund) -> Asked<RefundAnswer> {
        let (Some(payment_id), Some(key)) = (&refund.provider_payment_id, &refund.provider_key) else {
            return Asked::Unknown(format!("refund {} is not a card refund", refund.id));
        };
        let now = chrono::Utc::now();
        let age = (now - refund.first_sent_at.unwrap_or(now)).to_std().unwrap_or_default();
        if age >= self.key_window {
            match self.find_refund(tenant, refund).await {
                Ok(Some(asked)) => return asked,
                Ok(None) => {} // never reached the provider: sending it is the first time
                Err(e) => return Asked::Unknown(format!("look-up at the provider: {e}")),
            }
        }
        let request = gateway::RefundRequest {
            payment_intent: payment_id.clone(),
            amount: Some(minor_units(refund.amount, refund.currency)),
            metadata: refund_metadata(tenant, refund),
        };
        match self.client.create_refund(&request, key).await {
            Ok(RefundOutcome::Created(made)) => match refund_answer_of(&made) {
                Some(answer) => Asked::Answer(answer),
                None => Asked::Unknown(format!("refund {} is {:?} at the provider", made.id, made.status)),
            },
            Ok(RefundOutcome::Unknown(why)) if why.reason == gateway::UnknownReason::ServerError => {
                // A 5xx is stored for the key and replayed while the provider
                // keeps it. Once the provider has had time to finish whatever
                // the first send started, a list (read-after-write
                // consistent, unlike search) without our refund means it was
                // never made: the refund failed and its money comes back.
                if age < self.search_lag {
                    return Asked::Unknown(why.to_string());
                }
                match self.find_refund(tenant, refund).await {
                    Ok(Some(asked)) => asked,
                    Ok(None) => {
                        Asked::Answer(RefundAnswer::Failed { refund_id: None, code: "provider_error".to_owned() })
                    }
                    Err(e) => Asked::Unknown(format!("{why}; look-up at the provider: {e}")),
                }
            }
            Ok(RefundOutcome::Unknown(why)) => Asked::Unknown(why.to_string()),
            Err(e) if e.is_configuration() => Asked::Rejected(e.to_string()),
            Err(e) => {
                // Any other refusal of a refund the ledger holds money for is
                // a disagreement with the provider, not an answer: the
                // refund stays pending, loudly.
                tracing::error!(refund = %refund.id, error = %e, "the provider refused the refund");
                Asked::Unknown(e.to_string())
            }
        }
    }

    /// The refund at the provider, found by listing its payment's refunds
    /// (consistent at once, unlike search) and matching the metadata we
    /// sent: `None` when there is none (it was never made).
    pub async fn find_refund(
        &self,
        tenant: TenantId,
        refund: &Refund,
    ) -> Result<Option<Asked<RefundAnswer>>, GatewayError> {
        let Some(payment_id) = &refund.provider_payment_id else { return Ok(None) };
        let tenant_id = tenant.0.to_string();
        let charge_id = refund.charge_id.to_string();
        let ours = |r: &&gateway::Refund| {
            r.metadata.get("tenant_id") == Some(&tenant_id)
                && r.metadata.get("charge_id") == Some(&charge_id)
                && r.metadata.get("reference") == Some(&refund.reference)
        };
        let listed = self.client.list_refunds(payment_id).await?;
        let found: Vec<&gateway::Refund> = listed.iter().filter(ours).collect();
        if found.is_empty() {
            return Ok(None);
        }
        if let Some(done) = found.iter().find(|r| r.status == RefundStatus::Succeeded) {
            return Ok(refund_answer_of(done).map(Asked::Answer));
        }
        Ok(Some(match found.iter().find_map(|r| refund_answer_of(r)) {
            Some(answer) => Asked::Answer(answer),
            None => Asked::Unknown("the refund is not final at the provider".to_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(status: &str, extra: serde_json::Value) -> PaymentIntent {
        let mut v = serde_json::json!({"id": "pi_1", "amount": 100, "currency": "usd", "status": status, "created": 1});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_cancelled_payment_reads_back_as_the_reason_it_was_cancelled() {
        let code = |i: &PaymentIntent| match answer_of(i) {
            Some(ProviderAnswer::Declined { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        // cancelled by us past the buyer's window, read back by whoever did not get the cancel's answer
        assert_eq!(
            code(&intent("canceled", serde_json::json!({"cancellation_reason": "abandoned"}))),
            "authentication_required"
        );
        assert_eq!(code(&intent("canceled", serde_json::json!({}))), "authentication_required");
        assert_eq!(
            code(&intent("canceled", serde_json::json!({"cancellation_reason": "fraudulent"}))),
            "canceled/fraudulent"
        );
        // a failed authentication is the provider's own error
        let failed = serde_json::json!({"last_payment_error": {"type": "invalid_request_error",
            "code": "payment_intent_authentication_failure", "message": "failed"}});
        assert_eq!(code(&intent("requires_payment_method", failed)), "payment_intent_authentication_failure");
    }
}
