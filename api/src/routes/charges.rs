//! Charges and their refunds.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use ledger::cards::NewCardCharge;
use ledger::charges::{NewCharge, NewHold};
use ledger::idempotency::Answer;
use ledger::money::parse_amount;
use ledger::refunds::NewRefund;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use service::effects::{CardCapture, CardCharge, CardRefund, CardVoid};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::idempotency::{self, Applied, IdempotencyKey};
use crate::routes::identifier;
use crate::state::AppState;
use crate::wire::Currency;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Charge {
    pub id: Uuid,
    #[schema(example = "order-1001")]
    pub order_id: String,
    #[schema(example = 1)]
    pub attempt: i32,
    /// The buyer's wallet; `null` for a card charge.
    pub buyer_account_id: Option<Uuid>,
    /// The provider token a card charge is paid with; absent for a wallet charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// The provider's payment of a card charge, once the provider answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "pi_3Q0abc")]
    pub provider_payment_id: Option<String>,
    /// What the storefront's front end needs to finish a `requires_action`
    /// card charge's authentication (3-D Secure): the provider's
    /// `next_action` (Stripe.js handles it) and the payment's client secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub next_action: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "pi_3Q0abc_secret_xyz")]
    pub client_secret: Option<String>,
    /// Why the provider declined a `failed` card charge.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "card_declined/insufficient_funds")]
    pub decline_code: Option<String>,
    pub seller_account_id: Uuid,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub amount: Decimal,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    pub platform_fee: Option<PlatformFee>,
    /// The sum of the charge's refunds.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "0.00")]
    pub refunded_amount: Decimal,
    pub status: ChargeStatus,
    /// Where the order confirmation email goes, if anywhere.
    #[schema(example = "buyer@example.com")]
    pub receipt_email: Option<String>,
    /// The ledger transaction that moved the money; `null` while a card
    /// charge is `processing`, for a `failed` one, and for an authorization
    /// until it is captured.
    pub transaction_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// An authorization (`"capture": false`): what it held, until when, and
    /// how it ended. Absent for a charge made at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub authorization: Option<Authorization>,
}

/// What an authorization held and how it ended. The charge's `amount` is
/// what it takes: what is held until it is captured, then what was captured.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Authorization {
    /// What was held: on the buyer's wallet, or by the card's issuer.
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "25.00")]
    pub amount: Decimal,
    /// Until when it may be captured; the expirer voids it then.
    pub expires_at: DateTime<Utc>,
    /// The ledger transaction that moved the amount from the buyer to the
    /// tenant's holds account (`holds:<CURRENCY>`); `null` for a card (its
    /// issuer holds the amount).
    pub hold_transaction_id: Option<Uuid>,
    /// The ledger transaction that gave held money back to the buyer: what
    /// a capture did not take, or all of it on a void; `null` for a card
    /// (its issuer releases it).
    pub release_transaction_id: Option<Uuid>,
    pub capture_reference: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub void_reference: Option<String>,
    pub void_reason: Option<VoidReason>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// `requested`: voided by `POST /v1/charges/{id}/void`; `expired`: its
/// deadline passed before a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    Requested,
    Expired,
}

impl From<ledger::charges::Authorization> for Authorization {
    fn from(a: ledger::charges::Authorization) -> Self {
        use ledger::charges::VoidReason as R;
        Authorization {
            amount: a.amount,
            expires_at: a.expires_at,
            hold_transaction_id: a.hold_transaction_id,
            release_transaction_id: a.release_transaction_id,
            capture_reference: a.capture_reference,
            captured_at: a.captured_at,
            void_reference: a.void_reference,
            void_reason: a.void_reason.map(|r| match r {
                R::Requested => VoidReason::Requested,
                R::Expired => VoidReason::Expired,
            }),
            voided_at: a.voided_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlatformFee {
    pub account_id: Uuid,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "2.50")]
    pub amount: Decimal,
}

/// `processing`: a card charge the provider has not answered for yet (no
/// money moved; retry the request with the same Idempotency-Key, or read the
/// charge, until it is final). `requires_action`: the buyer must
/// authenticate the card payment first (3-D Secure; no money moved): finish
/// it in the front end with `next_action` and `client_secret`, then retry the
/// request with the same Idempotency-Key; unauthenticated past the window it
/// is cancelled and `failed`. `failed`: the provider declined the card.
/// `authorized`: an authorization holding its amount until it is captured
/// (then `succeeded`) or `voided` (asked, or expired); a voided one frees
/// its order for the next attempt. `capturing`, `voiding`: a card
/// authorization whose capture or void the provider has not answered for
/// yet (retry the request with the same Idempotency-Key, or read the
/// charge, until it is `succeeded` or `voided`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Processing,
    RequiresAction,
    Authorized,
    Capturing,
    Voiding,
    Voided,
    Succeeded,
    PartiallyRefunded,
    Refunded,
    Failed,
}

impl ChargeStatus {
    fn into_ledger(self) -> ledger::charges::ChargeStatus {
        use ledger::charges::ChargeStatus as S;
        match self {
            ChargeStatus::Processing => S::Processing,
            ChargeStatus::RequiresAction => S::RequiresAction,
            ChargeStatus::Authorized => S::Authorized,
            ChargeStatus::Capturing => S::Capturing,
            ChargeStatus::Voiding => S::Voiding,
            ChargeStatus::Voided => S::Voided,
            ChargeStatus::Succeeded => S::Succeeded,
            ChargeStatus::PartiallyRefunded => S::PartiallyRefunded,
            ChargeStatus::Refunded => S::Refunded,
            ChargeStatus::Failed => S::Failed,
        }
    }
}

impl From<ledger::charges::Charge> for Charge {
    fn from(c: ledger::charges::Charge) -> Self {
        use ledger::charges::ChargeStatus as S;
        Charge {
            id: c.id,
            order_id: c.order_id,
            attempt: c.attempt,
            buyer_account_id: c.buyer_account_id,
            payment_method: c.payment_method,
            provider_payment_id: c.provider_payment_id,
            decline_code: c.decline_code,
            next_action: c.next_action,
            client_secret: c.client_secret,
            seller_account_id: c.seller_account_id,
            amount: c.amount,
            currency: c.currency,
            platform_fee: c.platform_fee.map(|f| PlatformFee { account_id: f.account_id, amount: f.amount }),
            refunded_amount: c.refunded_amount,
            status: match c.status {
                S::Processing => ChargeStatus::Processing,
                S::RequiresAction => ChargeStatus::RequiresAction,
                S::Authorized => ChargeStatus::Authorized,
                S::Capturing => ChargeStatus::Capturing,
                S::Voiding => ChargeStatus::Voiding,
                S::Voided => ChargeStatus::Voided,
                S::Succeeded => ChargeStatus::Succeeded,
                S::PartiallyRefunded => ChargeStatus::PartiallyRefunded,
                S::Refunded => ChargeStatus::Refunded,
                S::Failed => ChargeStatus::Failed,
            },
            receipt_email: c.receipt_email,
            transaction_id: c.transaction_id,
            created_at: c.created_at,
            authorization: c.authorization.map(Authorization::from),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refund {
    pub id: Uuid,
    pub charge_id: Uuid,
    /// Your name for this refund, unique per charge.
    #[schema(example = "order-1001:refund:1")]
    pub reference: String,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "10.00")]
    pub amount: Decimal,
    #[schema(value_type = Currency)]
    pub currency: ledger::Currency,
    pub status: RefundStatus,
    /// The ledger transaction that gave the money back (posted when the
    /// refund was asked, also while a card refund is `pending`).
    pub transaction_id: Uuid,
    /// The transaction that undid a `failed` refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reversal_transaction_id: Option<Uuid>,
    /// The provider's refund of a card refund, once it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "re_3Q0abc")]
    pub provider_refund_id: Option<String>,
    /// Why the provider failed a `failed` refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "lost_or_stolen_card")]
    pub failure_code: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// `pending`: a card refund the provider has not answered for yet. Its
/// ledger transaction is posted (the seller's and the platform's shares are
/// held back), the buyer's money is not confirmed: retry with the same
/// Idempotency-Key, or read the charge, until it is final. `failed`: the
/// provider failed it; its ledger transaction was undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    fn into_ledger(self) -> ledger::refunds::RefundStatus {
        use ledger::refunds::RefundStatus as S;
        match self {
            RefundStatus::Pending => S::Pending,
            RefundStatus::Succeeded => S::Succeeded,
            RefundStatus::Failed => S::Failed,
        }
    }
}

impl From<ledger::refunds::Refund> for Refund {
    fn from(r: ledger::refunds::Refund) -> Self {
        use ledger::refunds::RefundStatus as S;
        Refund {
            id: r.id,
            charge_id: r.charge_id,
            reference: r.reference,
            amount: r.amount,
            currency: r.currency,
            status: match r.status {
                S::Pending => RefundStatus::Pending,
                S::Succeeded => RefundStatus::Succeeded,
                S::Failed => RefundStatus::Failed,
            },
            transaction_id: r.transaction_id,
            reversal_transaction_id: r.reversal_transaction_id,
            provider_refund_id: r.provider_refund_id,
            failure_code: r.failure_code,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCharge {
    /// Your order. One charge per (order_id, attempt), ever, and at most one
    /// succeeded charge per order.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: String,
    /// Starts at 1; a new attempt after a decline takes the next number. A
    /// new attempt for an order that is already paid is refused (409
    /// `order_already_charged`): retry with the same attempt and key instead.
    #[schema(minimum = 1, example = 1)]
    pub attempt: i32,
    /// Pay from this wallet account. Exactly one of `buyer_account_id` and
    /// `payment_method`.
    pub buyer_account_id: Option<Uuid>,
    /// Pay by card: the payment provider's token (`pm_card_visa` with the
    /// local fake provider). Exactly one of `buyer_account_id` and
    /// `payment_method`.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_]{1,255}$", example = "pm_card_visa")]
    pub payment_method: Option<String>,
    pub seller_account_id: Uuid,
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "25.00")]
    pub amount: String,
    #[schema(value_type = Currency, example = "USD")]
    pub currency: String,
    pub platform_fee: Option<CreatePlatformFee>,
    /// Where to send the order confirmation email (at most once per order).
    #[schema(max_length = 254, pattern = r"^[!-?A-~]+@[!-?A-~]*\.[!-?A-~]*$", example = "buyer@example.com")]
    pub receipt_email: Option<String>,
    /// `false`: authorize only. The amount is held (`authorized`): on the
    /// buyer's wallet, or on the card by its issuer (the provider is asked
    /// for a manual capture), until `POST /v1/charges/{id}/capture` takes
    /// all or part of it, `POST /v1/charges/{id}/void` gives it back, or it
    /// expires. Default `true`: charged at once.
    pub capture: Option<bool>,
    /// With `"capture": false`: how long the authorization holds, in
    /// seconds (60 to 2,592,000, at most 604,800 on a card, the networks'
    /// limit; default 604,800, 7 days). A card's runs from when the
    /// provider authorized it. Not a term of the order attempt: a retry
    /// under another key finds the same authorization, whatever its
    /// deadline.
    #[schema(minimum = 60, maximum = 2592000, example = 604800)]
    pub expires_in: Option<i64>,
}

/// How long an authorization holds when the request does not say.
pub const DEFAULT_AUTHORIZATION_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The longest a card authorization holds (the card networks' limit for a
/// customer-initiated payment; the provider cancels it then).
pub const CARD_AUTHORIZATION_WINDOW: std::time::Duration = DEFAULT_AUTHORIZATION_WINDOW;
/// The bounds of `expires_in`.
pub(crate) const AUTHORIZATION_WINDOW_SECS: std::ops::RangeInclusive<i64> = 60..=30 * 24 * 3600;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlatformFee {
    pub account_id: Uuid,
    /// At most the charged amount.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "2.50")]
    pub amount: String,
}

/// Charge a buyer for an order attempt, from a wallet or by card.
///
/// A wallet charge (`buyer_account_id`) is one balanced ledger transaction:
/// the buyer is debited `amount`, the seller credited `amount -
/// platform_fee.amount`, the platform credited the fee.
///
/// A card charge (`payment_method`) asks the payment provider to take the
/// money, with a provider key derived from the tenant, the order and the
/// attempt; on success the ledger records it from the tenant's provider
/// clearing account (`provider-clearing:<CURRENCY>`, created on first use)
/// to the seller and the platform. When the provider's answer is lost (a
/// timeout, a reset, a provider error) the charge is `processing` and the
/// answer is 202: nothing is final yet. Retry with the same Idempotency-Key
/// (or read the charge) until it is 201 or 402; the retry resumes the same
/// charge at the provider and never charges twice.
///
/// An order is charged at most once: a charge for an order that another
/// attempt already paid (or that is still processing) is refused, naming
/// that charge.
#[utoipa::path(
    operation_id = "create_charge",
    tag = "charges",
    params(IdempotencyKey),
    request_body = CreateCharge,
    responses(
        (status = 201, description = "Charged", body = Charge, headers(("Location" = String, description = "The new charge's path"))),
        (status = 200, description = "This order attempt was already charged with the same terms: the charge is returned, no second effect", body = Charge, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 202, description = "A card charge whose provider answer is not known yet: the charge, `processing`, no money moved in the ledger; or `requires_action`, waiting for the buyer's authentication (3-D Secure), with `next_action` and `client_secret` for the front end. Not stored: retry with the same Idempotency-Key (after `Retry-After` seconds, or once the buyer authenticated) for the final answer; the provider is never asked to charge twice", body = Charge, headers(("Retry-After" = String, description = "Seconds before retrying"))),
        (status = 402, description = "`insufficient_funds`: the buyer's wallet cannot pay; `card_declined`: the provider declined the card (both stored and replayed; charge again with the next attempt)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`account_not_found`: the buyer, seller or platform account does not exist for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`order_already_charged`: another attempt already paid this order, or is still processing (one succeeded charge per order; a new attempt only after a decline); the problem's `charge_id` names that charge. `natural_key_conflict`: this order attempt was charged with other terms. `invalid_payment_source`: not exactly one of `buyer_account_id` and `payment_method`; `amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is zero, finer than the currency's minor unit, or over 1,000,000,000; `currency_mismatch`; `same_account`: buyer and seller are one account; `fee_exceeds_amount`; `invalid_authorization`: `expires_in` without `\"capture\": false`, or longer than 604,800 on a card", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_rejected`: the payment provider refused the request itself, not the card (a configuration error: a key without the permission, a wrong provider URL, an amount it does not take). Not a decline and not stored: a charge never sent before is not recorded, and the same request runs afresh once the configuration is fixed; one sent before (its answer lost) stays `processing` and the same request finishes it then; `detail` carries the provider's message", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: the amount is not a decimal string of the documented shape; `unknown_currency`; `invalid_field`: `order_id`, `attempt`, `payment_method` or `expires_in`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: JsonBody<CreateCharge>,
) -> Result<HttpResponse, ApiError> {
    let b = &body.value;
    let currency: ledger::Currency = b.currency.parse()?;
    if b.attempt < 1 {
        return Err(ApiError::invalid_field("`attempt` starts at 1"));
    }
    let platform_fee = match &b.platform_fee {
        Some(f) => {
            Some(ledger::charges::PlatformFee { account_id: f.account_id, amount: parse_amount(&f.amount, currency)? })
        }
        None => None,
    };
    let order_id = identifier("order_id", &b.order_id)?;
    let amount = parse_amount(&b.amount, currency)?;
    let receipt_email = match &b.receipt_email {
        Some(e) => Some(email(e)?),
        None => None,
    };
    let window = authorization_window(b)?;
    match (b.buyer_account_id, &b.payment_method) {
        (Some(buyer), None) => {
            let hold = match window {
                None => None,
                Some(window) => {
                    let client = state.pool.get().await?;
                    Some(NewHold {
                        account: ledger::holds::account(&client, caller.0, currency).await?,
                        expires_at: ledger::holds::deadline(Utc::now(), window),
                    })
                }
            };
            let charge = NewCharge {
                order_id: order_id.to_owned(),
                attempt: b.attempt,
                buyer,
                seller: b.seller_account_id,
                amount,
                currency,
                platform_fee,
                receipt_email: receipt_email.map(str::to_owned),
                hold,
            };
            idempotency::run_batched(
                &state,
                state.batcher.as_ref(),
                caller.0,
                &key,
                &body.canonical,
                created(),
                charge,
                async |tx, charge| Ok(ledger::charges::create(tx, caller.0, charge).await?.map(Charge::from)),
            )
            .await
        }
        (None, Some(_)) if window.is_some_and(|w| w > CARD_AUTHORIZATION_WINDOW) => Err(invalid_authorization(
            "a card authorization holds at most 604800 seconds (7 days): `expires_in` is longer",
        )),
        (None, Some(payment_method)) => {
            let provider_key = state.provider.provider_key(caller.0, order_id, b.attempt);
            let new = NewCardCharge {
                order_id: order_id.to_owned(),
                attempt: b.attempt,
                payment_method: payment_method_token(payment_method)?.to_owned(),
                seller: b.seller_account_id,
                amount,
                currency,
                platform_fee,
                receipt_email: receipt_email.map(str::to_owned),
                provider_key,
                lease: state.provider.lease(),
                authorize: window,
            };
            idempotency::run_two_phase_batched::<CardCharge, _, _>(
                &state,
                state.card_begins.as_ref(),
                caller.0,
                &key,
                &body.canonical,
                created(),
                Charge::from,
                new,
                async |tx, new| ledger::cards::begin(tx, caller.0, new).await,
            )
            .await
        }
        _ => Err(ApiError::rule(
            ProblemCode::InvalidPaymentSource,
            "give exactly one of `buyer_account_id` (a wallet) and `payment_method` (a card)",
        )),
    }
}

/// How long a new charge's authorization holds: `None` for a charge made
/// at once.
fn authorization_window(b: &CreateCharge) -> Result<Option<std::time::Duration>, ApiError> {
    match (b.capture, b.expires_in) {
        (None | Some(true), None) => Ok(None),
        (None | Some(true), Some(_)) => {
            Err(invalid_authorization("`expires_in` is for an authorization (`capture: false`)"))
        }
        (Some(false), None) => Ok(Some(DEFAULT_AUTHORIZATION_WINDOW)),
        (Some(false), Some(secs)) if AUTHORIZATION_WINDOW_SECS.contains(&secs) => {
            Ok(Some(std::time::Duration::from_secs(secs as u64)))
        }
        (Some(false), Some(_)) => Err(ApiError::invalid_field("`expires_in` is 60 to 2592000 seconds")),
    }
}

/// A rule across `capture`, `expires_in` and the payment source.
fn invalid_authorization(detail: &'static str) -> ApiError {
    ApiError::rule(ProblemCode::InvalidAuthorization, detail)
}

/// The answer a batch stores for a new charge's outcome: the one
/// [`idempotency::run_batched`] stores for it alone. Given to the batcher
/// at start (it knows no route).
pub(crate) fn batched_answer(outcome: ledger::Outcome<ledger::charges::Charge>) -> Answer {
    idempotency::answer(outcome.map(Charge::from), &created())
}

/// What a new charge answers: 201 with its path.
pub(crate) fn created() -> Applied<Charge> {
    Applied::CreatedAt(|c: &Charge| format!("/v1/charges/{}", c.id))
}

/// A provider token: letters, digits and `_`, 1 to 255.
fn payment_method_token(value: &str) -> Result<&str, ApiError> {
    if !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(value)
    } else {
        Err(ApiError::invalid_field("`payment_method` must be 1 to 255 letters, digits and `_`"))
    }
}

/// A plausible address: one `@`, no spaces or controls, at most 254 characters.
fn email(value: &str) -> Result<&str, ApiError> {
    let ok = value.len() <= 254
        && value.bytes().all(|b| b.is_ascii_graphic())
        && matches!(value.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    if ok {
        Ok(value)
    } else {
        Err(ApiError::invalid_field("`receipt_email` is not an email address"))
    }
}

/// Get a charge.
#[utoipa::path(
    operation_id = "get_charge",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id")),
    responses(
        (status = 200, description = "The charge", body = Charge),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/charges/{id}")]
pub async fn get(state: web::Data<AppState>, caller: Caller, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(Charge::from(ledger::charges::get(&**client, caller.0, *id).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChargesQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of a charge of this list: the page holds the charges just
    /// older than it (the next page after a page: its last charge's id).
    pub starting_after: Option<Uuid>,
    /// The id of a charge of this list: the page holds the charges just
    /// newer than it (the page before a page: its first charge's id).
    pub ending_before: Option<Uuid>,
    /// Only this order's charges: its attempts, the latest first.
    #[param(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001")]
    pub order_id: Option<String>,
    /// Only charges in this status (as a charge shows it: a succeeded charge
    /// with refunds is `partially_refunded` or `refunded`).
    pub status: Option<ChargeStatus>,
    /// Only charges paid from this wallet (card charges have none).
    pub buyer_account_id: Option<Uuid>,
    /// Only charges paid to this seller.
    pub seller_account_id: Option<Uuid>,
    /// Only charges created at or after this instant (RFC 3339).
    #[serde(rename = "created[gte]")]
    pub created_gte: Option<DateTime<Utc>>,
    /// Only charges created before this instant (RFC 3339).
    #[serde(rename = "created[lt]")]
    pub created_lt: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChargeList {
    /// The page, newest first (an order's attempts: the latest first).
    pub data: Vec<Charge>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older charges (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

/// List charges, newest first, a page at a time: all of them, an order's
/// attempts, a status, a buyer's or a seller's.
#[utoipa::path(
    operation_id = "list_charges",
    tag = "charges",
    params(ChargesQuery),
    responses(
        (status = 200, description = "A page of charges (empty when none)", body = ChargeList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`charge_not_found`: `starting_after` or `ending_before` is not one of this tenant's charges", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `order_id` is not 1 to 255 printable ASCII characters without surrounding spaces", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/charges")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ChargesQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let filter = ledger::charges::ChargeFilter {
        order_id: q.order_id.as_deref().map(|o| identifier("order_id", o)).transpose()?,
        status: q.status.map(ChargeStatus::into_ledger),
        buyer_account_id: q.buyer_account_id,
        seller_account_id: q.seller_account_id,
        created_gte: q.created_gte,
        created_lt: q.created_lt,
    };
    let client = state.pool.get().await?;
    let page = ledger::charges::list(&**client, caller.0, &filter, cursor, limit).await?;
    Ok(HttpResponse::Ok()
        .json(ChargeList { data: page.data.into_iter().map(Charge::from).collect(), has_more: page.has_more }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefundsQuery {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of a refund of this charge: the page holds the refunds just
    /// older than it (the next page after a page: its last refund's id).
    pub starting_after: Option<Uuid>,
    /// The id of a refund of this charge: the page holds the refunds just
    /// newer than it (the page before a page: its first refund's id).
    pub ending_before: Option<Uuid>,
    /// Only refunds in this status.
    pub status: Option<RefundStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundList {
    /// The page, newest first.
    pub data: Vec<Refund>,
    /// Whether the list goes on past this page in the direction it was
    /// read: older refunds (`starting_after` or neither), or newer ones
    /// (`ending_before`).
    pub has_more: bool,
}

/// List a charge's refunds, newest first, a page at a time.
#[utoipa::path(
    operation_id = "list_refunds",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id"), RefundsQuery),
    responses(
        (status = 200, description = "A page of the charge's refunds (empty when none)", body = RefundList),
        (status = 400, description = "`invalid_parameter`: `limit` not from 1 to 100, or a value of the wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `refund_not_found`: `starting_after` or `ending_before` is not one of this charge's refunds; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/charges/{id}/refunds")]
pub async fn refunds(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    query: web::Query<RefundsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let (cursor, limit) = crate::routes::page(q.limit, q.starting_after, q.ending_before)?;
    let status = q.status.map(RefundStatus::into_ledger);
    let client = state.pool.get().await?;
    let page = ledger::refunds::list(&**client, caller.0, *id, status, cursor, limit).await?;
    Ok(HttpResponse::Ok()
        .json(RefundList { data: page.data.into_iter().map(Refund::from).collect(), has_more: page.has_more }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Your name for this refund, unique per charge, e.g. `{order_id}:refund:{n}`:
    /// one refund per (charge, reference), ever. The same reference again with
    /// the same terms returns that refund (200, `Natural-Key-Replayed`), also
    /// under another or an expired Idempotency-Key; with other terms, 409
    /// `natural_key_conflict`.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]([ -~]{0,253}[!-~])?$",
        example = "order-1001:refund:1"
    )]
    pub reference: String,
    /// What to refund; all that remains of the charge when absent. Terms of
    /// the reference: a retry must give the same amount, or again none.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "10.00")]
    pub amount: Option<String>,
}

/// Refund part or all of a charge.
///
/// The buyer is credited; the seller and the platform give back their
/// shares in the charge's proportion (a full refund returns the fee
/// exactly). Everything that can refuse a refund (its reference, what
/// remains of the charge, the seller's and the platform's funds) is checked,
/// and the ledger transaction posted, before a card refund is sent to the
/// payment provider, with a provider key derived from (tenant, charge,
/// reference): a retry under any Idempotency-Key is the same refund there.
/// The refunds of a charge never sum above it, also under concurrent
/// requests, and each `reference` refunds a charge at most once, ever.
///
/// When the provider's answer to a card refund is lost, the refund is
/// `pending` and the answer is 202, not stored: retry with the same
/// Idempotency-Key (or the same reference) until it is 201 or 402; the
/// provider is never asked to refund twice. A refund the provider fails is
/// undone in the ledger (`failed`, 402 `refund_failed`); another reference
/// may ask again.
#[utoipa::path(
    operation_id = "create_refund",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id"), IdempotencyKey),
    request_body = CreateRefund,
    responses(
        (status = 201, description = "Refunded", body = Refund),
        (status = 200, description = "This charge already has a refund with this reference and the same terms: the refund is returned, no second effect", body = Refund, headers(("Natural-Key-Replayed" = String, description = "`true`"))),
        (status = 202, description = "A card refund whose provider answer is not known yet: the refund, `pending` (its ledger transaction posted, the seller's share held back). Not stored: retry with the same Idempotency-Key (after `Retry-After` seconds) for the final answer; the provider is never asked to refund twice", body = Refund, headers(("Retry-After" = String, description = "Seconds before retrying"))),
        (status = 402, description = "`insufficient_funds`: the seller or platform cannot give back its share; `refund_failed`: the payment provider failed the card refund and the ledger's was undone (both stored and replayed; nothing was sent to the provider for the first)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`natural_key_conflict`: this charge has a refund with this reference and other terms; `charge_not_paid`: the charge is `processing` or `failed`, nothing to refund; `refund_exceeds_charge`: more than what remains of the charge (stored and replayed); `amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is zero, finer than the currency's minor unit, or over 1,000,000,000", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_rejected`: the payment provider refused the card refund itself (a configuration error: a key without the permission, a wrong provider URL). Not stored: the refund stays `pending`, its money held back, and is sent again with the same provider key when retried (or by the completer) once the configuration is fixed; `detail` carries the provider's message", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: the amount is not a decimal string of the documented shape; `invalid_field`: `reference` is not 1 to 255 printable ASCII characters without surrounding spaces", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges/{id}/refunds")]
pub async fn refund(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: JsonBody<CreateRefund>,
) -> Result<HttpResponse, ApiError> {
    let charge_id = *id;
    let tenant = caller.0;
    let reference = identifier("reference", &body.value.reference)?;
    let provider_key = state.provider.refund_key(tenant, charge_id, reference);
    let new = NewRefund {
        reference,
        amount: body.value.amount.as_deref(),
        provider_key: &provider_key,
        lease: state.provider.lease(),
    };
    idempotency::run_two_phase::<CardRefund, _>(
        &state,
        tenant,
        &key,
        &body.canonical,
        Applied::Created,
        Refund::from,
        async |tx| ledger::refunds::begin(tx, tenant, charge_id, &new).await,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureCharge {
    /// Your name for this capture, e.g. `{order_id}:ship`: one capture per
    /// charge, ever. The same reference again with the same amount returns
    /// the captured charge (200, `Natural-Key-Replayed`), also under another
    /// or an expired Idempotency-Key; with another amount, 409
    /// `natural_key_conflict`.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]{0,253}[!-~])?$", example = "order-1001:ship")]
    pub reference: String,
    /// What to take, at most what is held and at least the platform fee;
    /// all that is held when absent. The rest goes back to the buyer.
    #[schema(pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "20.00")]
    pub amount: Option<String>,
}

/// Capture an authorization: all or part of what it holds.
///
/// `amount` goes to the seller and the platform (the fee whole) from the
/// tenant's holds account, in the charge's `transaction_id`; what was held
/// beyond it goes back to the buyer (`authorization.release_transaction_id`).
/// On a card the provider captures it first (its issuer releases the rest)
/// and the ledger books it from the provider clearing account; until the
/// provider has answered the charge is `capturing` (202: retry with the same
/// Idempotency-Key). The charge is then `succeeded` and can be refunded, up
/// to what was captured. Exactly one of a capture, a void and the expiry
/// ends an authorization, also under concurrent requests.
#[utoipa::path(
    operation_id = "capture_charge",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id"), IdempotencyKey),
    request_body = CaptureCharge,
    responses(
        (status = 200, description = "Captured: the charge, `succeeded`. Also (with `Natural-Key-Replayed: true`) when this charge was already captured with this reference and amount", body = Charge, headers(("Natural-Key-Replayed" = String, description = "`true` when it was captured before"))),
        (status = 202, description = "A card authorization whose capture the provider has not answered for yet: the charge, `capturing`. Not stored: retry with the same Idempotency-Key (after `Retry-After` seconds) for the final answer; the provider is never asked to capture twice", body = Charge, headers(("Retry-After" = String, description = "Seconds before retrying"))),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`charge_not_authorized`: the charge is not an open authorization (made at once, captured under another reference, or voided); `authorization_expired`: its deadline has passed (on a card, also: the provider found it expired, and the charge is `voided`; stored and replayed); `natural_key_conflict`: captured with this reference and another amount; `capture_exceeds_authorization`: more than is held; `fee_exceeds_amount`: less than the platform fee; `amount_not_positive`, `amount_too_precise`, `amount_too_large`: the amount is zero, finer than the currency's minor unit, or over 1,000,000,000", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "`provider_rejected`: the payment provider refused a card capture itself (a configuration error). Not stored: the charge stays `capturing` and the capture is sent again with the same provider key when retried (or by the completer) once the configuration is fixed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: the amount is not a decimal string of the documented shape; `invalid_field`: `reference` is not 1 to 255 printable ASCII characters without surrounding spaces", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges/{id}/capture")]
pub async fn capture(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: JsonBody<CaptureCharge>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, charge_id) = (caller.0, *id);
    let reference = identifier("reference", &body.value.reference)?;
    let asked = body.value.amount.as_deref();
    let capture = ledger::holds::Capture { reference, amount: asked };
    let lease = state.provider.lease();
    idempotency::run_two_phase::<CardCapture, _>(
        &state,
        tenant,
        &key,
        &body.canonical,
        Applied::Ok,
        Charge::from,
        async |tx| ledger::holds::capture(tx, tenant, charge_id, &capture, lease).await,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidCharge {
    /// Your name for this void, e.g. `{order_id}:cancel`. The same
    /// reference again returns the voided charge (200,
    /// `Natural-Key-Replayed`), also under another or an expired
    /// Idempotency-Key.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]([ -~]{0,253}[!-~])?$",
        example = "order-1001:cancel"
    )]
    pub reference: String,
}

/// Void an authorization: everything it holds goes back to the buyer.
///
/// The charge is then `voided` (reason `requested`) and its order is free
/// for the next attempt. On a card the provider cancels the authorization
/// first; until it has answered the charge is `voiding` (202: retry with
/// the same Idempotency-Key). Exactly one of a capture, a void and the
/// expiry ends an authorization, also under concurrent requests.
#[utoipa::path(
    operation_id = "void_charge",
    tag = "charges",
    params(("id" = Uuid, Path, description = "Charge id"), IdempotencyKey),
    request_body = VoidCharge,
    responses(
        (status = 200, description = "Voided: the charge, `voided`. Also (with `Natural-Key-Replayed: true`) when this charge was already voided with this reference", body = Charge, headers(("Natural-Key-Replayed" = String, description = "`true` when it was voided before"))),
        (status = 202, description = "A card authorization whose cancellation the provider has not answered for yet: the charge, `voiding`. Not stored: retry with the same Idempotency-Key (after `Retry-After` seconds)", body = Charge, headers(("Retry-After" = String, description = "Seconds before retrying"))),
        (status = 502, description = "`provider_rejected`: the payment provider refused the cancellation itself (a configuration error). Not stored: the charge stays `voiding` and the void is sent again with the same provider key when retried (or by the completer) once the configuration is fixed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`charge_not_found`: no such charge for this tenant; `not_found`: the id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`charge_not_authorized`: the charge is not an open authorization (made at once, captured, expired, or voided under another reference)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_field`: `reference` is not 1 to 255 printable ASCII characters without surrounding spaces", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/charges/{id}/void")]
pub async fn void(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    id: web::Path<Uuid>,
    body: JsonBody<VoidCharge>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, charge_id) = (caller.0, *id);
    let reference = identifier("reference", &body.value.reference)?;
    let lease = state.provider.lease();
    idempotency::run_two_phase::<CardVoid, _>(
        &state,
        tenant,
        &key,
        &body.canonical,
        Applied::Ok,
        Charge::from,
        async |tx| ledger::holds::void(tx, tenant, charge_id, reference, lease).await,
    )
    .await
}
