//! Charges (their refunds are in `refunds`).
//!
//! A charge is one balanced transaction: the buyer is debited the amount, the
//! seller credited the amount less the platform fee, the platform credited
//! the fee. There is at most one charge per (tenant, order, attempt), forever,
//! and at most one succeeded charge per order: a new attempt is for an order
//! whose earlier attempts were declined (a decline writes no charge).
//! Refunds reverse part or all of it, never more than it, because the charge
//! row is locked while the refund is checked and a CHECK caps the total; and
//! each at most once per (charge, reference), forever, whatever its
//! Idempotency-Key.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

use crate::db::Cached;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::events::{
    ChargeAuthorizedV1, ChargeCapturedV1, ChargeStatusV1, ChargeSucceededV1, ChargeVoidedV1, PlatformFeeV1,
    VoidReasonV1,
};
use crate::money::Currency;
use crate::outbox;
use crate::pagination::{Cursor, Filters, Page};
use crate::posting::{lock_debited, post};
use crate::{Error, Outcome, Result, TenantId};

#[derive(Debug, Clone)]
pub struct Charge {
    pub id: Uuid,
    pub order_id: String,
    pub attempt: i32,
    /// The buyer's wallet; `None` for a card charge.
    pub buyer_account_id: Option<Uuid>,
    /// The provider token of a card charge; `None` for a wallet charge.
    pub payment_method: Option<String>,
    pub seller_account_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFee>,
    /// The sum of the charge's refunds.
    pub refunded_amount: Decimal,
    pub status: ChargeStatus,
    /// Where the order confirmation email goes, if anywhere.
    pub receipt_email: Option<String>,
    /// The ledger transaction that moved the money; `None` until a card
    /// charge succeeded, and for a failed one.
    pub transaction_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// A card charge's Idempotency-Key at the provider (never shown).
    pub provider_key: Option<String>,
    /// The provider's payment, once it answered.
    pub provider_payment_id: Option<String>,
    /// Why the provider declined a failed card charge.
    pub decline_code: Option<String>,
    /// The tenant's provider clearing account a succeeded card charge was
    /// taken from.
    pub clearing_account_id: Option<Uuid>,
    /// When a card charge was first sent to the provider: the provider's key
    /// window and its look-ups are measured from here, not from creation.
    pub first_sent_at: Option<DateTime<Utc>>,
    /// What the storefront needs to finish a `requires_action` charge's
    /// authentication: the provider's `next_action` and the payment's client
    /// secret.
    pub next_action: Option<serde_json::Value>,
    pub client_secret: Option<String>,
    /// An authorization (`"capture": false`): what it holds, until when, and
    /// how it ended (`holds`).
    pub authorization: Option<Authorization>,
    /// A card charge made with `"capture": false`: how long its
    /// authorization is to hold once the provider has made it (the deadline
    /// is set then).
    pub authorize_for: Option<std::time::Duration>,
}

/// What an authorization has beyond a charge: the amount it held (the
/// charge's `amount` is what it takes: this until it is captured, then
/// what was captured), its deadline, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub amount: Decimal,
    pub expires_at: DateTime<Utc>,
    /// The tenant's holds account a wallet authorization holds the amount
    /// on (a card's is held by its issuer: `None`).
    pub hold_account_id: Option<Uuid>,
    /// The ledger transaction that moved the amount from the buyer to the
    /// holds account (a wallet authorization).
    pub hold_transaction_id: Option<Uuid>,
    /// What gave held money back to the buyer: what a capture did not take,
    /// or all of it on a void.
    pub release_transaction_id: Option<Uuid>,
    pub capture_reference: Option<String>,
    pub captured_at: Option<DateTime<Utc>>,
    pub void_reference: Option<String>,
    pub void_reason: Option<VoidReason>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// Why an authorization was voided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidReason {
    /// `POST /v1/charges/{id}/void`.
    Requested,
    /// Its deadline passed before a capture (the expirer).
    Expired,
}

impl VoidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            VoidReason::Requested => "requested",
            VoidReason::Expired => "expired",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "requested" => Ok(VoidReason::Requested),
            "expired" => Ok(VoidReason::Expired),
            other => Err(Error::unknown("void reason", other)),
        }
    }
}

impl Charge {
    /// The account the charge debited (or will): the buyer's wallet, or the
    /// provider clearing account of a card charge.
    pub fn debited_account(&self) -> Option<Uuid> {
        self.buyer_account_id.or(self.clearing_account_id)
    }

    pub fn is_card(&self) -> bool {
        self.payment_method.is_some()
    }

    /// The amount its terms named: what an authorization held, else what
    /// the charge took. A retry of the request is compared with this.
    pub fn requested_amount(&self) -> Decimal {
        self.authorization.as_ref().map_or(self.amount, |a| a.amount)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFee {
    pub account_id: Uuid,
    pub amount: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    /// A card charge whose provider answer is not recorded yet: nothing
    /// moved in the ledger.
    Processing,
    Succeeded,
    PartiallyRefunded,
    Refunded,
    /// A card charge the provider declined: nothing moved.
    Failed,
    /// A card charge waiting for the buyer to authenticate (3-D Secure):
    /// nothing moved yet.
    RequiresAction,
    /// An authorization holding its amount until it is captured or voided.
    Authorized,
    /// A card authorization whose capture is in flight at the provider.
    Capturing,
    /// A card authorization whose cancellation (a void or its expiry) is in
    /// flight at the provider.
    Voiding,
    /// An authorization voided (asked, or expired): the hold went back.
    Voided,
}

impl ChargeStatus {
    /// Whether the money moved (a succeeded charge, refunded or not).
    pub fn paid(self) -> bool {
        matches!(self, ChargeStatus::Succeeded | ChargeStatus::PartiallyRefunded | ChargeStatus::Refunded)
    }

    /// Whether the charge holds its order: paid, or may still be (a
    /// declined card charge and a voided authorization free it for the
    /// next attempt).
    pub fn holds_order(self) -> bool {
        !matches!(self, ChargeStatus::Failed | ChargeStatus::Voided)
    }

    /// Whether the provider's final answer is still to come.
    pub fn in_flight(self) -> bool {
        matches!(self, ChargeStatus::Processing | ChargeStatus::RequiresAction)
    }

    /// The status as the API shows it (and as a list filters by it).
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Processing => "processing",
            ChargeStatus::RequiresAction => "requires_action",
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::PartiallyRefunded => "partially_refunded",
            ChargeStatus::Refunded => "refunded",
            ChargeStatus::Failed => "failed",
            ChargeStatus::Authorized => "authorized",
            ChargeStatus::Capturing => "capturing",
            ChargeStatus::Voiding => "voiding",
            ChargeStatus::Voided => "voided",
        }
    }
}

impl From<&Charge> for ChargeSucceededV1 {
    /// Only for a succeeded charge (it has its transaction and debited account).
    fn from(c: &Charge) -> Self {
        ChargeSucceededV1 {
            id: c.id,
            order_id: c.order_id.clone(),
            attempt: c.attempt,
            buyer_account_id: c.debited_account().expect("a succeeded charge debited an account"),
            seller_account_id: c.seller_account_id,
            amount: c.amount,
            currency: c.currency,
            platform_fee: c.platform_fee.as_ref().map(|f| PlatformFeeV1 { account_id: f.account_id, amount: f.amount }),
            refunded_amount: c.refunded_amount,
            status: match c.status {
                ChargeStatus::PartiallyRefunded => ChargeStatusV1::PartiallyRefunded,
                ChargeStatus::Refunded => ChargeStatusV1::Refunded,
                _ => ChargeStatusV1::Succeeded,
            },
            receipt_email: c.receipt_email.clone(),
            transaction_id: c.transaction_id.expect("a succeeded charge has its transaction"),
            created_at: c.created_at,
            payment_method: c.payment_method.clone(),
        }
    }
}

/// A charge's columns, wallet and card alike, read from [`FROM`].
pub(crate) const COLUMNS: &str = "c.id, c.order_id, c.attempt, c.buyer_account_id, c.seller_account_id, c.amount, \
     c.currency, c.platform_account_id, c.fee, c.refunded_amount, c.refunded_fee, c.transaction_id, c.created_at, \
     c.receipt_email, c.status, k.payment_method, k.provider_key, k.provider_payment_id, k.decline_code, \
     k.clearing_account_id, k.first_sent_at, k.next_action, k.client_secret, h.amount, \
     h.hold_account_id, h.hold_transaction_id, h.release_transaction_id, h.expires_at, h.capture_reference, \
     h.captured_at, h.void_reference, h.void_reason, h.voided_at, k.authorize_secs";
/// A charge and, for a card charge, its `card_charges` row; for an
/// authorization, its `charge_authorizations` row.
pub(crate) const FROM: &str =
    "charges c LEFT JOIN card_charges k ON k.charge_id = c.id LEFT JOIN charge_authorizations h ON h.charge_id = c.id";
/// What a wallet charge's INSERT returns: [`COLUMNS`], the card's empty.
pub(crate) const WALLET_RETURNING: &str =
    "id, order_id, attempt, buyer_account_id, seller_account_id, amount, currency, \
     platform_account_id, fee, refunded_amount, refunded_fee, transaction_id, created_at, receipt_email, status, \
     NULL::text, NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::timestamptz, NULL::jsonb, NULL::text, \
     NULL::numeric, NULL::uuid, NULL::uuid, NULL::uuid, NULL::timestamptz, NULL::text, NULL::timestamptz, NULL::text, \
     NULL::text, NULL::timestamptz, NULL::float8";

/// Inserts a charge (`ledger-bench` runs it in pgbench too).
pub fn insert_sql() -> String {
    format!(
        "INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id, \
                              platform_account_id, amount, fee, currency, transaction_id, receipt_email) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {WALLET_RETURNING}"
    )
}

/// The charges of an order, oldest attempt first: the natural keys of a new
/// charge, its attempt's and its order's, in one lookup (`ledger-bench` runs
/// it in pgbench too).
pub fn find_order_sql() -> String {
    format!("SELECT {COLUMNS} FROM {FROM} WHERE c.tenant_id = $1 AND c.order_id = $2 ORDER BY c.attempt")
}

/// [`insert_sql`] for a batch of charges (`charge_batch`), over arrays
/// (public for the test that prepares it ahead of a batch).
pub fn insert_many_sql() -> String {
    format!(
        "INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id, \
                              platform_account_id, amount, fee, currency, transaction_id, receipt_email) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::uuid[], $6::uuid[], \
                              $7::uuid[], $8::numeric[], $9::numeric[], $10::text[], $11::uuid[], $12::text[]) \
         RETURNING {WALLET_RETURNING}"
    )
}

/// The charges of many (tenant, order) pairs, oldest attempt first, each
/// row ending with its tenant: [`find_order_sql`] for a batch, each pair one
/// lookup in the order index once the table holds more than a few pages
/// (`LATERAL`: as a plain join of the arrays, the generic plan scanned every
/// charge at any size). Planned while the table was small, it hash-joins
/// the pairs against a scan of every charge; the pool prepares it again as
/// the table grows (`db::replan_due`).
pub(crate) fn find_order_many_sql() -> String {
    format!(
        "SELECT x.* FROM unnest($1::uuid[], $2::text[]) AS o(t, id) \
           CROSS JOIN LATERAL (SELECT {COLUMNS}, c.tenant_id FROM {FROM} \
                                WHERE c.tenant_id = o.t AND c.order_id = o.id) x \
          ORDER BY x.attempt"
    )
}

/// The rows of [`find_order_many_sql`], each order's charges (oldest
/// attempt first) by (tenant, order).
pub(crate) fn orders_of(rows: &[Row]) -> Result<std::collections::HashMap<(Uuid, String), Vec<Charge>>> {
    let mut orders: std::collections::HashMap<(Uuid, String), Vec<Charge>> = std::collections::HashMap::new();
    for row in rows {
        // the tenant ends each row, after the charge's columns
        let tenant: Uuid = row.get(row.len() - 1);
        let charge = from_row(row)?.charge;
        orders.entry((tenant, charge.order_id.clone())).or_default().push(charge);
    }
    Ok(orders)
}

/// A charge row with the columns refunds need that the API does not show.
pub(crate) struct ChargeRow {
    pub(crate) charge: Charge,
    pub(crate) fee: Decimal,
    pub(crate) refunded_fee: Decimal,
}

pub(crate) fn from_row(row: &Row) -> Result<ChargeRow> {
    let currency = crate::stored::currency(row.get(6))?;
    let amount = currency.normalize(row.get(5));
    let fee: Decimal = currency.normalize(row.get(8));
    let refunded_amount = currency.normalize(row.get(9));
    let platform: Option<Uuid> = row.get(7);
    let status = match row.get::<_, &str>(14) {
        "processing" => ChargeStatus::Processing,
        "requires_action" => ChargeStatus::RequiresAction,
        "failed" => ChargeStatus::Failed,
        "succeeded" => ChargeStatus::Succeeded,
        "authorized" => ChargeStatus::Authorized,
        "capturing" => ChargeStatus::Capturing,
        "voiding" => ChargeStatus::Voiding,
        "voided" => ChargeStatus::Voided,
        other => return Err(Error::unknown("charge status", other)),
    };
    let status = if status != ChargeStatus::Succeeded || refunded_amount.is_zero() {
        status
    } else if refunded_amount < amount {
        ChargeStatus::PartiallyRefunded
    } else {
        ChargeStatus::Refunded
    };
    Ok(ChargeRow {
        charge: Charge {
            id: row.get(0),
            order_id: row.get(1),
            attempt: row.get(2),
            buyer_account_id: row.get(3),
            seller_account_id: row.get(4),
            amount,
            currency,
            platform_fee: platform.map(|account_id| PlatformFee { account_id, amount: fee }),
            refunded_amount,
            status,
            receipt_email: row.get(13),
            transaction_id: row.get(11),
            created_at: row.get(12),
            payment_method: row.get(15),
            provider_key: row.get(16),
            provider_payment_id: row.get(17),
            decline_code: row.get(18),
            clearing_account_id: row.get(19),
            first_sent_at: row.get(20),
            next_action: row.get(21),
            client_secret: row.get(22),
            authorization: match row.get::<_, Option<Decimal>>(23) {
                None => None,
                Some(held) => Some(Authorization {
                    amount: currency.normalize(held),
                    hold_account_id: row.get(24),
                    hold_transaction_id: row.get(25),
                    release_transaction_id: row.get(26),
                    expires_at: row.get(27),
                    capture_reference: row.get(28),
                    captured_at: row.get(29),
                    void_reference: row.get(30),
                    void_reason: row.get::<_, Option<&str>>(31).map(VoidReason::parse).transpose()?,
                    voided_at: row.get(32),
                }),
            },
            authorize_for: row
                .get::<_, Option<f64>>(33)
                .map(|secs| std::time::Duration::try_from_secs_f64(secs).unwrap_or(std::time::Duration::MAX)),
        },
        fee,
        refunded_fee: currency.normalize(row.get(10)),
    })
}

/// What every charge is checked against and split by, wallet, batched and
/// card alike: the payer (the buyer's wallet; a card charge's provider
/// clearing account, not known before the provider answers), the seller, the
/// amount and the platform's fee.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChargeTerms<'a> {
    pub(crate) payer: Option<Uuid>,
    pub(crate) seller: Uuid,
    pub(crate) amount: Decimal,
    pub(crate) fee: Option<&'a PlatformFee>,
}

impl ChargeTerms<'_> {
    /// The fee is at most the amount; payer, seller and platform are
    /// distinct accounts.
    pub(crate) fn check(&self) -> Result<()> {
        if self.fee.is_some_and(|f| f.amount > self.amount) {
            return Err(Error::FeeTooLarge);
        }
        let platform = self.fee.map(|f| f.account_id);
        if self.payer.is_some_and(|p| p == self.seller || Some(p) == platform) || platform == Some(self.seller) {
            return Err(Error::SameAccount);
        }
        Ok(())
    }

    /// The accounts the charge touches, the payer first.
    pub(crate) fn accounts(&self, payer: Uuid) -> Vec<Uuid> {
        let mut ids = vec![payer, self.seller];
        ids.extend(self.fee.map(|f| f.account_id));
        ids
    }

    /// Its legs: the payer debited the amount, the seller credited the
    /// amount less the fee, the platform the fee.
    pub(crate) fn legs(&self, payer: Uuid) -> Vec<(Uuid, Decimal)> {
        let fee = self.fee.map_or(Decimal::ZERO, |f| f.amount);
        let mut legs = vec![(payer, -self.amount), (self.seller, self.amount - fee)];
        legs.extend(self.fee.map(|f| (f.account_id, f.amount)));
        legs
    }
}

/// A new wallet charge as asked for. Owned: a batch of charges
/// (`charge_batch`) takes it from its request's handler to another task.
#[derive(Debug, Clone)]
pub struct NewCharge {
    pub order_id: String,
    pub attempt: i32,
    pub buyer: Uuid,
    pub seller: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub platform_fee: Option<PlatformFee>,
    pub receipt_email: Option<String>,
    /// `Some`: authorize only (`"capture": false`), holding the amount on
    /// the tenant's holds account until a capture, a void or the deadline.
    pub hold: Option<NewHold>,
}

/// Where and until when a new authorization holds its amount.
#[derive(Debug, Clone, Copy)]
pub struct NewHold {
    /// The tenant's holds account in the charge's currency (`holds::account`).
    pub account: Uuid,
    pub expires_at: DateTime<Utc>,
}

impl NewCharge {
    pub(crate) fn terms(&self) -> ChargeTerms<'_> {
        ChargeTerms {
            payer: Some(self.buyer),
            seller: self.seller,
            amount: self.amount,
            fee: self.platform_fee.as_ref(),
        }
    }

    /// Every account the charge names, the buyer first (an authorization's
    /// holds account last).
    pub(crate) fn accounts(&self) -> Vec<Uuid> {
        let mut ids = self.terms().accounts(self.buyer);
        ids.extend(self.hold.map(|h| h.account));
        ids
    }

    /// What it posts now: the charge's legs, or an authorization's hold
    /// (the buyer's amount to the holds account).
    pub(crate) fn legs(&self) -> Vec<(Uuid, Decimal)> {
        match self.hold {
            None => self.terms().legs(self.buyer),
            Some(hold) => vec![(self.buyer, -self.amount), (hold.account, self.amount)],
        }
    }

    /// The kind of the ledger transaction it posts.
    pub(crate) fn kind(&self) -> &'static str {
        if self.hold.is_some() {
            "authorization"
        } else {
            "charge"
        }
    }

    /// Whether `c` is this charge: the same terms, and an authorization
    /// exactly when this is one (its deadline is not a term: a retry
    /// computes another).
    pub(crate) fn same_as(&self, c: &Charge) -> bool {
        Some(self.buyer) == c.buyer_account_id
            && self.seller == c.seller_account_id
            && self.amount == c.requested_amount()
            && self.currency == c.currency
            && self.platform_fee == c.platform_fee
            && self.receipt_email == c.receipt_email
            && self.hold.is_some() == c.authorization.is_some()
    }
}

/// Creates the charge of an order attempt, or returns the existing one when
/// the same attempt was already charged with the same terms; refuses a
/// charge for an order that another attempt already paid; declines when the
/// buyer cannot pay.
pub async fn create(tx: &Transaction<'_>, tenant: TenantId, new: &NewCharge) -> Result<Outcome<Charge>> {
    let terms = new.terms();
    terms.check()?;
    let ids = new.accounts();
    // Lock first, then look for the natural keys: a concurrent duplicate of
    // this attempt (or another attempt by the same buyer) waits on the
    // buyer's row lock (the only one a charge takes: the seller and the
    // platform are credited on slot rows), and once it gets it, the first
    // charge is committed and visible to the lookup below. Attempts by
    // different buyers (or by a buyer that may go negative, whose row is not
    // locked) do not queue here: the unique index on the order stops the
    // second insert, and its request gets a 409 `contention` whose retry
    // finds the charge.
    let locked = lock_debited(tx, tenant, &ids, &[new.buyer], new.currency).await?;
    // the key row and the accounts are locked by this transaction, nothing written yet
    crate::crash::point("charge-after-account-lock");
    if let Some(existing) = existing_attempt(tx, tenant, &new.order_id, new.attempt, |c| new.same_as(c)).await? {
        return Ok(Outcome::Existing(existing));
    }
    let fee = new.platform_fee.as_ref().map_or(Decimal::ZERO, |f| f.amount);
    let transaction_id = match post(tx, tenant, new.kind(), new.currency, &locked, &new.legs()).await? {
        Ok(id) => id,
        Err(decline) => return Ok(Outcome::Declined(decline)),
    };
    if let Some(hold) = new.hold {
        return insert_authorization(tx, tenant, new, hold, transaction_id).await.map(Outcome::Applied);
    }
    let row = tx
        .cached_one(
            &insert_sql(),
            &[
                &Uuid::now_v7(),
                &tenant.0,
                &new.order_id,
                &new.attempt,
                &new.buyer,
                &new.seller,
                &new.platform_fee.as_ref().map(|f| f.account_id),
                &new.amount,
                &fee,
                &new.currency.code(),
                &transaction_id,
                &new.receipt_email,
            ],
        )
        .await?;
    let charge = from_row(&row)?.charge;
    outbox::enqueue(tx, tenant, Some(&charge.order_id), &ChargeSucceededV1::from(&charge)).await?;
    Ok(Outcome::Applied(charge))
}

/// What [`AUTHORIZE_SQL`] and [`AUTHORIZE_MANY_SQL`] read back from their
/// inserted `c` and `h`: [`COLUMNS`], the card's empty (a macro, so that
/// both statements stay constants).
macro_rules! authorized_columns {
    () => {
        "     SELECT c.id, c.order_id, c.attempt, c.buyer_account_id, c.seller_account_id, c.amount, c.currency,
            c.platform_account_id, c.fee, c.refunded_amount, c.refunded_fee, c.transaction_id, c.created_at,
            c.receipt_email, c.status, NULL::text, NULL::text, NULL::text, NULL::text, NULL::uuid,
            NULL::timestamptz, NULL::jsonb, NULL::text, h.amount, h.hold_account_id, h.hold_transaction_id,
            h.release_transaction_id, h.expires_at, h.capture_reference, h.captured_at, h.void_reference,
            h.void_reason, h.voided_at, NULL::float8
"
    };
}

/// A new authorization: the charge `authorized` (no `transaction_id`: it
/// is the capture's) and its `charge_authorizations` row, read back as
/// [`COLUMNS`] in one round trip.
const AUTHORIZE_SQL: &str = concat!(
    "WITH c AS (
         INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id,
                              platform_account_id, amount, fee, currency, receipt_email, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'authorized') RETURNING *
     ), h AS (
         INSERT INTO charge_authorizations (charge_id, amount, expires_at, hold_account_id, hold_transaction_id)
         VALUES ($1, $8, $14, $12, $13) RETURNING *
     )
",
    authorized_columns!(),
    "       FROM c, h"
);

/// [`AUTHORIZE_SQL`] for a batch of authorizations (`charge_batch`), over
/// arrays: the same fourteen columns, each an array.
pub(crate) const AUTHORIZE_MANY_SQL: &str = concat!(
    "WITH n AS (
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::uuid[], $6::uuid[], $7::uuid[],
                              $8::numeric[], $9::numeric[], $10::text[], $11::text[], $12::uuid[], $13::uuid[],
                              $14::timestamptz[])
                    AS n(id, tenant_id, order_id, attempt, buyer, seller, platform, amount, fee, currency, email,
                         hold_account, hold_transaction, expires_at)
     ), c AS (
         INSERT INTO charges (id, tenant_id, order_id, attempt, buyer_account_id, seller_account_id,
                              platform_account_id, amount, fee, currency, receipt_email, status)
         SELECT id, tenant_id, order_id, attempt, buyer, seller, platform, amount, fee, currency, email, 'authorized'
           FROM n RETURNING *
     ), h AS (
         INSERT INTO charge_authorizations (charge_id, amount, expires_at, hold_account_id, hold_transaction_id)
         SELECT id, amount, expires_at, hold_account, hold_transaction FROM n RETURNING *
     )
",
    authorized_columns!(),
    "       FROM c JOIN h ON h.charge_id = c.id"
);

/// Records a new authorization whose hold `transaction_id` just posted
/// ([`create`] decided it like any charge) and enqueues its event.
async fn insert_authorization(
    tx: &Transaction<'_>,
    tenant: TenantId,
    new: &NewCharge,
    hold: NewHold,
    transaction_id: Uuid,
) -> Result<Charge> {
    let fee = new.platform_fee.as_ref().map_or(Decimal::ZERO, |f| f.amount);
    let row = tx
        .cached_one(
            AUTHORIZE_SQL,
            &[
                &Uuid::now_v7(),
                &tenant.0,
                &new.order_id,
                &new.attempt,
                &new.buyer,
                &new.seller,
                &new.platform_fee.as_ref().map(|f| f.account_id),
                &new.amount,
                &fee,
                &new.currency.code(),
                &new.receipt_email,
                &hold.account,
                &transaction_id,
                &hold.expires_at,
            ],
        )
        .await?;
    let charge = from_row(&row)?.charge;
    outbox::enqueue(tx, tenant, Some(&charge.order_id), &authorized_event(&charge)?).await?;
    Ok(charge)
}

pub(crate) fn authorized_event(c: &Charge) -> Result<ChargeAuthorizedV1> {
    let auth = c.authorization.as_ref().ok_or_else(|| missing("authorization", c))?;
    Ok(ChargeAuthorizedV1 {
        id: c.id,
        order_id: c.order_id.clone(),
        attempt: c.attempt,
        buyer_account_id: c.debited_account().ok_or_else(|| missing("authorization's buyer", c))?,
        seller_account_id: c.seller_account_id,
        amount: auth.amount,
        currency: c.currency,
        platform_fee: fee_event(c),
        hold_transaction_id: auth.hold_transaction_id,
        expires_at: auth.expires_at,
        created_at: c.created_at,
    })
}

pub(crate) fn captured_event(c: &Charge) -> Result<ChargeCapturedV1> {
    let auth = c.authorization.as_ref().ok_or_else(|| missing("authorization", c))?;
    Ok(ChargeCapturedV1 {
        id: c.id,
        order_id: c.order_id.clone(),
        attempt: c.attempt,
        buyer_account_id: c.debited_account().ok_or_else(|| missing("authorization's buyer", c))?,
        seller_account_id: c.seller_account_id,
        amount: c.amount,
        amount_authorized: auth.amount,
        amount_released: auth.amount - c.amount,
        currency: c.currency,
        platform_fee: fee_event(c),
        transaction_id: c.transaction_id.ok_or_else(|| missing("capture transaction", c))?,
        release_transaction_id: auth.release_transaction_id,
        capture_reference: auth.capture_reference.clone().ok_or_else(|| missing("capture reference", c))?,
        receipt_email: c.receipt_email.clone(),
        captured_at: auth.captured_at.ok_or_else(|| missing("capture time", c))?,
    })
}

pub(crate) fn voided_event(c: &Charge) -> Result<ChargeVoidedV1> {
    let auth = c.authorization.as_ref().ok_or_else(|| missing("authorization", c))?;
    Ok(ChargeVoidedV1 {
        id: c.id,
        order_id: c.order_id.clone(),
        attempt: c.attempt,
        buyer_account_id: c.debited_account().ok_or_else(|| missing("authorization's buyer", c))?,
        amount_authorized: auth.amount,
        currency: c.currency,
        reason: match auth.void_reason {
            Some(VoidReason::Expired) => VoidReasonV1::Expired,
            _ => VoidReasonV1::Requested,
        },
        release_transaction_id: auth.release_transaction_id,
        voided_at: auth.voided_at.ok_or_else(|| missing("void time", c))?,
    })
}

pub(crate) fn fee_event(charge: &Charge) -> Option<PlatformFeeV1> {
    charge.platform_fee.as_ref().map(|f| PlatformFeeV1 { account_id: f.account_id, amount: f.amount })
}

/// A charge read back without what its status promises: never guessed at.
pub(crate) fn missing(what: &'static str, charge: &Charge) -> Error {
    Error::unknown(what, charge.id.to_string())
}

/// Locks a charge for the rest of `tx` and reads it, its card row included.
///
/// Two statements on purpose. Under READ COMMITTED, a `SELECT … FOR UPDATE
/// OF c` that had to wait for another transaction re-reads only the row it
/// locked: the joined `card_charges` row stays as the statement's snapshot
/// saw it. A card charge completed meanwhile (by a webhook, the completer or
/// a retry) then came back `succeeded` without its provider payment id or
/// clearing account. The read after the lock takes a fresh snapshot, which
/// holds everything the lock waited for.
pub(crate) async fn lock(tx: &Transaction<'_>, tenant: TenantId, id: Uuid) -> Result<ChargeRow> {
    tx.cached_opt("SELECT 1 FROM charges WHERE id = $1 AND tenant_id = $2 FOR UPDATE", &[&id, &tenant.0])
        .await?
        .ok_or(Error::ChargeNotFound(id))?;
    let row = tx
        .cached_opt(&format!("SELECT {COLUMNS} FROM {FROM} WHERE c.id = $1 AND c.tenant_id = $2"), &[&id, &tenant.0])
        .await?
        .ok_or(Error::ChargeNotFound(id))?;
    from_row(&row)
}

/// The natural keys of a new charge of (`order_id`, `attempt`), wallet or
/// card, checked against the order's charges: the attempt's own first (its
/// charge when its terms are the same, `same_as`: the retry finds it; a
/// conflict when they differ), then the order's (a wallet decline writes no
/// row, a card decline leaves a `failed` one; any other charge of the order
/// paid it, or may still, a card charge `processing`). `None`: the charge
/// is new.
pub(crate) async fn existing_attempt(
    tx: &Transaction<'_>,
    tenant: TenantId,
    order_id: &str,
    attempt: i32,
    same_as: impl Fn(&Charge) -> bool,
) -> Result<Option<Charge>> {
    let rows = tx.cached_query(&find_order_sql(), &[&tenant.0, &order_id]).await?;
    let order: Vec<Charge> = rows.iter().map(|r| from_row(r).map(|c| c.charge)).collect::<Result<_>>()?;
    existing_in(&order, order_id, attempt, same_as)
}

/// [`existing_attempt`]'s decision, over the order's charges already read
/// (oldest attempt first).
pub(crate) fn existing_in(
    order: &[Charge],
    order_id: &str,
    attempt: i32,
    same_as: impl Fn(&Charge) -> bool,
) -> Result<Option<Charge>> {
    if let Some(existing) = order.iter().find(|c| c.attempt == attempt) {
        if !same_as(existing) {
            return Err(Error::NaturalKeyConflict(format!(
                "order `{order_id}` attempt {attempt} was already charged with other terms"
            )));
        }
        return Ok(Some(existing.clone()));
    }
    if let Some(paid) = order.iter().find(|c| c.status.holds_order()) {
        return Err(Error::OrderAlreadyCharged { order_id: order_id.to_owned(), charge_id: paid.id });
    }
    Ok(None)
}

pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Charge> {
    let row = client.query_opt(&get_sql(), &[&id, &tenant.0]).await?.ok_or(Error::ChargeNotFound(id))?;
    Ok(from_row(&row)?.charge)
}

/// [`get`] with the session's prepared statement (in a transaction, or on a
/// pooled connection): a charge's paths read it again after each write, and
/// an unprepared statement of this size is parsed and planned every time.
pub async fn get_in(tx: &impl Cached, tenant: TenantId, id: Uuid) -> Result<Charge> {
    let row = tx.cached_opt(&get_sql(), &[&id, &tenant.0]).await?.ok_or(Error::ChargeNotFound(id))?;
    Ok(from_row(&row)?.charge)
}

fn get_sql() -> String {
    format!("SELECT {COLUMNS} FROM {FROM} WHERE c.id = $1 AND c.tenant_id = $2")
}

/// A charge's status as the API shows it, in SQL: a succeeded charge with
/// refunds is `partially_refunded` or `refunded` (as [`from_row`] reads
/// it). The index `charges_tenant_id_status_id` is on this same expression,
/// so that a list filtered by status reads only its page.
const STATUS_SQL: &str = "CASE WHEN c.status = 'succeeded' AND c.refunded_amount > 0 \
       THEN CASE WHEN c.refunded_amount < c.amount THEN 'partially_refunded' ELSE 'refunded' END \
       ELSE c.status END";

/// Which of a tenant's charges a list holds; every filter is optional.
#[derive(Debug, Default)]
pub struct ChargeFilter<'a> {
    pub order_id: Option<&'a str>,
    pub status: Option<ChargeStatus>,
    /// The buyer's wallet (card charges have none).
    pub buyer_account_id: Option<Uuid>,
    pub seller_account_id: Option<Uuid>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
}

/// The tenant's charges that pass `filter`, newest first, `limit` (1 to
/// [`MAX_PAGE`](crate::pagination::MAX_PAGE)) from `cursor`: an order's
/// attempts too, the latest first. A cursor must be one of the tenant's
/// charges (else `ChargeNotFound`, as for any id of another tenant's).
/// Each filter but the creation range reads its page from an index that
/// starts with the tenant and the filter's column and ends with the id.
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    filter: &ChargeFilter<'_>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Charge>> {
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM charges WHERE id = $1 AND tenant_id = $2", &[&id, &tenant.0])
            .await?
            .is_some();
        if !known {
            return Err(Error::ChargeNotFound(id));
        }
    }
    let (sql, params) = list_statement(tenant, filter, cursor, limit);
    let rows = client.query(&sql, &params.params()).await?;
    let data = rows.iter().map(|r| from_row(r).map(|c| c.charge)).collect::<Result<Vec<_>>>()?;
    Ok(Page::read(data, limit, cursor))
}

/// The statement [`list`] runs for `filter` and `cursor` (its text depends
/// on which filters are given and on the cursor, not on their values).
pub fn list_sql(filter: &ChargeFilter<'_>, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), filter, cursor, 0).0
}

/// A page's statement: the given filters only, so that its generic plan
/// reads the page from the filter's index at the cursor
/// ([`Filters`](crate::pagination::Filters)).
fn list_statement<'a>(
    tenant: TenantId,
    filter: &ChargeFilter<'a>,
    cursor: Cursor,
    limit: i64,
) -> (String, Filters<'a>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("c.tenant_id =", tenant.0)
        .and_some("c.order_id =", filter.order_id)
        .and_some(&format!("({STATUS_SQL}) ="), filter.status.map(ChargeStatus::as_str))
        .and_some("c.buyer_account_id =", filter.buyer_account_id)
        .and_some("c.seller_account_id =", filter.seller_account_id)
        .and_some("c.created_at >=", filter.created_gte)
        .and_some("c.created_at <", filter.created_lt)
        .cursor("c.id", cursor, cursor.item());
    let limit = w.bind(limit + 1);
    (format!("SELECT {COLUMNS} FROM {FROM} WHERE {} ORDER BY c.id {order} LIMIT {limit}", w.sql()), w)
}
