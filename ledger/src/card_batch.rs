//! Many card charges' payments recorded in one database transaction, by
//! set-based statements: the group commit of a card charge's second
//! transaction ([`crate::cards::complete`]), as [`crate::charge_batch`] is
//! of a wallet charge's only one.
//!
//! A batch takes only the common case: the provider took the money
//! ([`Payment`]) for a charge still `processing`, for the charge's amount
//! and currency. It records what [`crate::cards::complete`] records for it
//! alone, under the same row lock: the one `charge` ledger transaction from
//! the tenant's provider clearing account to the seller and the platform,
//! the charge `succeeded` with its payment, and its `charge.succeeded`
//! event. Everything else it hands back ([`Batched::Alone`]) to be recorded
//! alone after the batch commits, where the lone path decides it: a charge
//! another transaction holds (a webhook or a retry recording it: the batch
//! skips it rather than wait), one already final or waiting for the buyer,
//! a payment that does not match the charge (flagged for an operator
//! there), the same charge twice in one batch.
//!
//! Every account a card payment touches takes it on a slot: the clearing
//! account has no floor and the seller and the platform are only credited,
//! so nothing is locked and no balance is read (the accounts were checked
//! by the charge's first transaction, and the entries' check at the end of
//! each statement holds every entry to its account's currency).
//!
//! The first transaction of new card charges is batched too
//! ([`begin_many`]): many charges created `processing`, before the provider
//! is asked, in set-based statements and one commit. It takes only the
//! common case, a new attempt of an order with no live charge, and
//! decides it as [`crate::cards::begin`] does; anything else (an attempt
//! already made, an order already paid or in flight, an account missing or
//! in another currency, the same order twice in one batch, a row another
//! transaction is inserting) it hands back to run alone, where the lone
//! path decides it.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::cards::NewCardCharge;
use crate::charge_batch::pipelined;
use crate::charges::{
    existing_in, find_order_many_sql, from_row, orders_of, Charge, ChargeStatus, ChargeTerms, COLUMNS, FROM,
};
use crate::db::Cached;
use crate::events::ChargeSucceededV1;
use crate::money::Currency;
use crate::posting::{Postings, POST_MANY_SQL};
use crate::{outbox, Batched, Error, Outcome, Result, TenantId};

/// What the provider answered for a card charge it paid
/// (`ProviderAnswer::Succeeded`): its payment, amount in minor units and
/// currency (lowercase, as the provider writes it). Owned: it goes from a
/// request's handler to the task that runs its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// One paid card charge of a batch.
pub struct PaidCharge<'a> {
    pub tenant: TenantId,
    pub charge_id: Uuid,
    pub payment: &'a Payment,
    /// The request it is recorded for, carried on its event (`request_id`).
    pub request_id: Option<&'a str>,
}

/// The charges `$1` of tenants `$2`, locked in id order; one another
/// transaction holds is skipped, not waited for.
const LOCK_MANY_SQL: &str = "SELECT c.id FROM charges c \
     JOIN unnest($1::uuid[], $2::uuid[]) AS d(id, t) ON c.id = d.id AND c.tenant_id = d.t \
     ORDER BY c.id FOR UPDATE OF c SKIP LOCKED";

/// What a paid charge becomes: `succeeded` with its ledger transaction, its
/// card row with the payment and the clearing account, done.
const PAID_MANY_SQL: &str = "WITH cards AS ( \
         UPDATE card_charges k SET provider_payment_id = d.payment, clearing_account_id = d.clearing, \
                completed_at = now(), lease_until = NULL \
           FROM unnest($1::uuid[], $3::text[], $4::uuid[]) AS d(id, payment, clearing) WHERE k.charge_id = d.id) \
     UPDATE charges c SET status = 'succeeded', transaction_id = d.tx \
       FROM unnest($1::uuid[], $2::uuid[]) AS d(id, tx) WHERE c.id = d.id";

/// The charges `$1`, as a charge is read.
fn read_many_sql() -> String {
    format!("SELECT {COLUMNS} FROM {FROM} WHERE c.id = ANY($1)")
}

/// Records the payments `items` within `tx`; one result per item, in order.
/// An `Err` is the batch's (a statement failed): nothing of it may be
/// committed, and each payment should be recorded alone.
pub async fn record_paid_many(tx: &Transaction<'_>, items: &[PaidCharge<'_>]) -> Result<Vec<Batched<Charge>>> {
    let mut results: Vec<Option<Batched<Charge>>> = items.iter().map(|_| None).collect();
    // The same charge twice (a retry's payment beside the first request's):
    // the first is recorded, the others find it recorded, alone.
    let mut seen = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(item.charge_id) {
            results[i] = Some(Batched::Alone);
        }
    }
    let live: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
    let (ids, tenants): (Vec<Uuid>, Vec<Uuid>) = live.iter().map(|&i| (items[i].charge_id, items[i].tenant.0)).unzip();
    let locked: Vec<Uuid> = tx.cached_query(LOCK_MANY_SQL, &[&ids, &tenants]).await?.iter().map(|r| r.get(0)).collect();
    // read in a statement that starts after the locks were granted
    let mut charges: HashMap<Uuid, Charge> = HashMap::new();
    for row in tx.cached_query(&read_many_sql(), &[&locked]).await? {
        let charge = from_row(&row)?.charge;
        charges.insert(charge.id, charge);
    }

    // Each charge's clearing account, once per tenant and currency.
    let mut clearing: HashMap<(Uuid, Currency), Option<Uuid>> = HashMap::new();
    let mut paid: Vec<(usize, Uuid, Uuid)> = Vec::new();
    for &i in &live {
        let item = &items[i];
        let Some(charge) = charges.get(&item.charge_id).filter(|c| payable(c, item.payment)) else {
            results[i] = Some(Batched::Alone);
            continue;
        };
        let key = (item.tenant.0, charge.currency);
        let account = match clearing.get(&key) {
            Some(account) => *account,
            None => {
                let account = match crate::cards::clearing_account(tx, item.tenant, charge.currency).await {
                    Ok(id) => Some(id),
                    // the reference taken by another account: alone, it is the answer
                    Err(Error::NaturalKeyConflict(_)) => None,
                    Err(e) => return Err(e),
                };
                clearing.insert(key, account);
                account
            }
        };
        match account {
            Some(account) => paid.push((i, account, Uuid::now_v7())),
            None => results[i] = Some(Batched::Alone),
        }
    }
    if !paid.is_empty() {
        for (i, charge) in write(tx, items, &charges, &paid).await? {
            results[i] = Some(Batched::Done(Ok(Outcome::Applied(charge))));
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every payment decided")).collect())
}

/// Whether the batch records `payment` for `charge`: the charge is still
/// `processing` and the payment is for its amount and currency. (Alone,
/// a mismatch is flagged for an operator; a final charge answers as it is.)
fn payable(charge: &Charge, payment: &Payment) -> bool {
    charge.status == ChargeStatus::Processing
        && charge.authorize_for.is_none()
        && payment.amount_minor == crate::cards::minor_units(charge.amount, charge.currency)
        && payment.currency.eq_ignore_ascii_case(charge.currency.code())
}

/// Writes the payments `paid` (item, clearing account, ledger transaction):
/// the postings, the charges and their card rows, the events. Returns each
/// one's charge as recorded.
async fn write(
    tx: &Transaction<'_>,
    items: &[PaidCharge<'_>],
    charges: &HashMap<Uuid, Charge>,
    paid: &[(usize, Uuid, Uuid)],
) -> Result<Vec<(usize, Charge)>> {
    // every leg on a slot: the clearing account has no floor, the rest are credits
    let mut postings = Postings::default();
    let (mut charge_ids, mut transactions, mut payments, mut clearings) = (vec![], vec![], vec![], vec![]);
    for &(i, clearing, transaction_id) in paid {
        let item = &items[i];
        let charge = &charges[&item.charge_id];
        let terms = ChargeTerms {
            payer: Some(clearing),
            seller: charge.seller_account_id,
            amount: charge.amount,
            fee: charge.platform_fee.as_ref(),
        };
        postings.push("charge", transaction_id, item.tenant, charge.currency, &terms.legs(clearing), |_, _| false);
        charge_ids.push(charge.id);
        transactions.push(transaction_id);
        payments.push(item.payment.payment_id.as_str());
        clearings.push(clearing);
    }
    let postings = postings.columns();
    let paid_params: [&(dyn ToSql + Sync); 4] = [&charge_ids, &transactions, &payments, &clearings];
    // The postings, then the charges that name them (their foreign key),
    // sent together (`pipelined`).
    let (post, mark) = pipelined(tx, POST_MANY_SQL, PAID_MANY_SQL).await?;
    let post_params = postings.params();
    futures::try_join!(tx.execute(&post, &post_params), tx.execute(&mark, &paid_params))?;
    let mut by_id: HashMap<Uuid, Charge> = HashMap::new();
    for row in tx.cached_query(&read_many_sql(), &[&charge_ids]).await? {
        let charge = from_row(&row)?.charge;
        by_id.insert(charge.id, charge);
    }
    let mut recorded = Vec::with_capacity(paid.len());
    for &(i, _, _) in paid {
        let id = items[i].charge_id;
        recorded.push((i, by_id.remove(&id).ok_or_else(|| Error::unknown("paid card charge", id.to_string()))?));
    }
    let events: Vec<_> = recorded
        .iter()
        .map(|(i, charge)| {
            let item = &items[*i];
            (item.tenant, Some(charge.order_id.as_str()), item.request_id, ChargeSucceededV1::from(charge))
        })
        .collect();
    outbox::enqueue_many(tx, &events).await?;
    Ok(recorded)
}

/// One new card charge of a batch of first transactions.
pub struct NewCardBegin<'a> {
    pub tenant: TenantId,
    pub new: &'a NewCardCharge,
}

/// The accounts `$1`: their tenant and currency.
const ACCOUNTS_MANY_SQL: &str = "SELECT id, tenant_id, currency FROM accounts WHERE id = ANY($1)";

/// New card charges, `processing`, with their card rows (leased, as the
/// lone path's). A charge whose order attempt or live order another
/// transaction took meanwhile is skipped (`ON CONFLICT DO NOTHING`, after
/// that transaction ends), its card row with it; the charges made come
/// back as a charge is read ([`COLUMNS`]).
fn begin_many_sql() -> String {
    format!(
        "WITH d AS ( \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::uuid[], $6::uuid[], \
                                  $7::numeric[], $8::numeric[], $9::text[], $10::text[], $11::text[], $12::text[], \
                                  $13::float8[], $14::float8[]) \
                    AS d(id, t, order_id, attempt, seller, platform, amount, fee, currency, email, method, pkey, \
                         lease, authorize)), \
         made AS ( \
             INSERT INTO charges (id, tenant_id, order_id, attempt, seller_account_id, platform_account_id, amount, \
                                  fee, currency, receipt_email, status) \
             SELECT id, t, order_id, attempt, seller, platform, amount, fee, currency, email, 'processing' FROM d \
             ON CONFLICT DO NOTHING RETURNING *), \
         cards AS ( \
             INSERT INTO card_charges (charge_id, payment_method, provider_key, lease_until, authorize_secs) \
             SELECT d.id, d.method, d.pkey, now() + make_interval(secs => d.lease), d.authorize \
               FROM d JOIN made USING (id) \
             RETURNING *) \
         SELECT {COLUMNS} FROM made c JOIN cards k ON k.charge_id = c.id \
           LEFT JOIN charge_authorizations h ON h.charge_id = c.id"
    )
}

/// The first transactions of the new card charges `items`, within `tx`;
/// one result per item, in order: the charge created in flight
/// (`Outcome::Applied`, to be sent to the provider), its error, or
/// [`Batched::Alone`]. An `Err` is the batch's (a statement failed): nothing
/// of it may be committed, and each charge should run alone.
pub async fn begin_many(tx: &Transaction<'_>, items: &[NewCardBegin<'_>]) -> Result<Vec<Batched<Charge>>> {
    let mut results: Vec<Option<Batched<Charge>>> = items.iter().map(|_| None).collect();
    fn terms(new: &NewCardCharge) -> ChargeTerms<'_> {
        ChargeTerms { payer: None, seller: new.seller, amount: new.amount, fee: new.platform_fee.as_ref() }
    }
    // An order twice (two attempts, or one under two keys): the first goes
    // in, the others find it alone.
    let mut orders = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Err(e) = terms(item.new).check() {
            results[i] = Some(Batched::Done(Err(e)));
        } else if !orders.insert((item.tenant.0, item.new.order_id.as_str())) {
            results[i] = Some(Batched::Alone);
        }
    }
    let live: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
    if live.is_empty() {
        return Ok(results.into_iter().map(|r| r.expect("every charge decided")).collect());
    }

    // The seller and platform accounts, read and not locked (as alone:
    // they are only credited, later), and each order's charges so far, sent
    // together.
    let mut account_ids: Vec<Uuid> = Vec::new();
    let (mut order_tenants, mut order_ids): (Vec<Uuid>, Vec<&str>) = (Vec::new(), Vec::new());
    for &i in &live {
        let new = items[i].new;
        account_ids.extend(&terms(new).accounts(new.seller)[1..]);
        order_tenants.push(items[i].tenant.0);
        order_ids.push(new.order_id.as_str());
    }
    let (accounts_sql, orders_sql) = pipelined(tx, ACCOUNTS_MANY_SQL, &find_order_many_sql()).await?;
    let (account_params, order_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 2]) =
        ([&account_ids], [&order_tenants, &order_ids]);
    let (account_rows, order_rows) =
        futures::try_join!(tx.query(&accounts_sql, &account_params), tx.query(&orders_sql, &order_params))?;
    let mut accounts: HashMap<Uuid, (Uuid, Currency)> = HashMap::new();
    for row in account_rows {
        accounts.insert(row.get(0), (row.get(1), crate::stored::currency(row.get(2))?));
    }
    let charged = orders_of(&order_rows)?;

    let mut fresh: Vec<usize> = Vec::new();
    for &i in &live {
        let (tenant, new) = (items[i].tenant, items[i].new);
        let accounts_hold = terms(new).accounts(new.seller)[1..]
            .iter()
            .all(|id| accounts.get(id).is_some_and(|&(t, currency)| t == tenant.0 && currency == new.currency));
        let order = charged.get(&(tenant.0, new.order_id.clone())).map_or(&[][..], Vec::as_slice);
        // a missing account, an attempt made before, an order paid: alone,
        // the lone path gives its answer
        let new_attempt = matches!(existing_in(order, &new.order_id, new.attempt, |c| new.same_as(c)), Ok(None));
        if accounts_hold && new_attempt {
            fresh.push(i);
        } else {
            results[i] = Some(Batched::Alone);
        }
    }

    let ids: Vec<Uuid> = fresh.iter().map(|_| Uuid::now_v7()).collect();
    let mut by_id: HashMap<Uuid, Charge> = HashMap::new();
    if !fresh.is_empty() {
        let tenants: Vec<Uuid> = fresh.iter().map(|&i| items[i].tenant.0).collect();
        let new = |i: usize| items[i].new;
        let order_ids: Vec<&str> = fresh.iter().map(|&i| new(i).order_id.as_str()).collect();
        let attempts: Vec<i32> = fresh.iter().map(|&i| new(i).attempt).collect();
        let sellers: Vec<Uuid> = fresh.iter().map(|&i| new(i).seller).collect();
        let platforms: Vec<Option<Uuid>> =
            fresh.iter().map(|&i| new(i).platform_fee.as_ref().map(|f| f.account_id)).collect();
        let amounts: Vec<Decimal> = fresh.iter().map(|&i| new(i).amount).collect();
        let fees: Vec<Decimal> =
            fresh.iter().map(|&i| new(i).platform_fee.as_ref().map_or(Decimal::ZERO, |f| f.amount)).collect();
        let currencies: Vec<&str> = fresh.iter().map(|&i| new(i).currency.code()).collect();
        let emails: Vec<Option<&str>> = fresh.iter().map(|&i| new(i).receipt_email.as_deref()).collect();
        let methods: Vec<&str> = fresh.iter().map(|&i| new(i).payment_method.as_str()).collect();
        let provider_keys: Vec<&str> = fresh.iter().map(|&i| new(i).provider_key.as_str()).collect();
        let leases: Vec<f64> = fresh.iter().map(|&i| new(i).lease.as_secs_f64()).collect();
        let authorize: Vec<Option<f64>> = fresh.iter().map(|&i| new(i).authorize.map(|w| w.as_secs_f64())).collect();
        let params: [&(dyn ToSql + Sync); 14] = [
            &ids,
            &tenants,
            &order_ids,
            &attempts,
            &sellers,
            &platforms,
            &amounts,
            &fees,
            &currencies,
            &emails,
            &methods,
            &provider_keys,
            &leases,
            &authorize,
        ];
        for row in tx.cached_query(&begin_many_sql(), &params).await? {
            let charge = from_row(&row)?.charge;
            by_id.insert(charge.id, charge);
        }
    }
    for (&i, id) in fresh.iter().zip(&ids) {
        results[i] = Some(match by_id.remove(id) {
            Some(charge) => Batched::Done(Ok(Outcome::Applied(charge))),
            // its order taken by a transaction that committed meanwhile
            None => Batched::Alone,
        });
    }
    Ok(results.into_iter().map(|r| r.expect("every charge decided")).collect())
}
