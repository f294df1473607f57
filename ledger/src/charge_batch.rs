//! Many new wallet charges in one database transaction, by set-based
//! statements: group commit. Each charge gets the outcome it would get
//! alone, as if the batch's charges had run one after another in the order
//! given: its transaction and its event, its decline, its natural-key
//! answer or its error, and never its neighbours'.
//!
//! The decisions are the lone path's ([`crate::charges::create`]): the
//! same terms (`ChargeTerms`), natural keys (`existing_in`) and checks, in
//! the same order. Its statements are the lone path's over arrays, kept
//! apart from the lone path's own single-row ones because those measured
//! faster for a charge alone (`bench/README.md`): the buyers with a floor are locked in id order (one statement;
//! two batches, or a batch and a lone charge, cannot deadlock on them), the
//! accounts and every order's charges are read after the locks, floors are
//! checked here in order against running balances, and what was decided is
//! written in four statements (the transactions, entries and balances; the
//! charges; their events). The caller commits once for all.
//!
//! What a batch does not decide it hands back ([`Batched::Alone`]), to run
//! alone after the batch commits: a buyer whose row another transaction
//! holds (a batch skips it rather than wait, [`Locks::Skip`]: one locked
//! buyer never holds up a batch of strangers, whatever their tenant), a
//! second charge of an order already in the batch (alone, it finds the
//! first by its natural key), and a buyer
//! whose floor only a credit from earlier in the same batch would cover
//! (that credit lands on a slot; alone, after the commit, it is in the
//! balance).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;
use uuid::Uuid;

use crate::charges::{
    authorized_event, existing_in, find_order_many_sql, from_row, insert_many_sql, orders_of, Charge, NewCharge,
    AUTHORIZE_MANY_SQL,
};
use crate::db::Cached;
use crate::events::ChargeSucceededV1;
use crate::money::Currency;
use crate::posting::{Postings, LOCK_MANY_SQL, POST_MANY_SQL, READ_MANY_SQL, SKIP_LOCKED, SWEEP_SQL};
use crate::{outbox, Batched, Decline, Error, Outcome, Result, TenantId};

/// One charge of a batch.
pub struct BatchedCharge<'a> {
    pub tenant: TenantId,
    pub new: &'a NewCharge,
    /// The request it is made for, carried on its event (`request_id`).
    pub request_id: Option<&'a str>,
}

/// An account as the batch read it, and what the batch has done to it so far.
struct Account {
    currency: Currency,
    allow_negative: bool,
    locked: bool,
    /// The whole balance read (row and slots); of a debited account only
    /// (an account only credited reads its row's part).
    balance: Decimal,
    row_balance: Decimal,
    /// Debits applied in this batch so far (negative).
    debits: Decimal,
    /// Credits applied in this batch so far, on slots.
    credits: Decimal,
}

/// How a batch takes its buyers' row locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locks {
    /// Wait for a row another transaction holds.
    Wait,
    /// Skip it: that buyer's charge is left to run alone (a batch of
    /// requests, so that a stranger's locked row holds none of them up).
    Skip,
}

/// Decides and writes the charges `items` within `tx`; one result per item,
/// in order. An `Err` is the batch's (a statement failed): nothing of it may
/// be committed, and each charge should run alone.
pub async fn create_many(
    tx: &Transaction<'_>,
    items: &[BatchedCharge<'_>],
    locks: Locks,
) -> Result<Vec<Batched<Charge>>> {
    let mut results: Vec<Option<Batched<Charge>>> = items.iter().map(|_| None).collect();
    // What needs no database: the lone path's own checks, and a second
    // charge of an order already in this batch.
    let mut orders = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let new = &item.new;
        if let Err(e) = new.terms().check() {
            results[i] = Some(Batched::Done(Err(e)));
        } else if !orders.insert((item.tenant.0, new.order_id.as_str())) {
            results[i] = Some(Batched::Alone);
        }
    }
    let live: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
    if live.is_empty() {
        return Ok(results.into_iter().map(|r| r.expect("decided")).collect());
    }

    // Lock the buyers with a floor, then read every account and every
    // order's charges in statements that start after the locks were granted.
    let mut debited: Vec<(Uuid, Uuid)> = live.iter().map(|&i| (items[i].tenant.0, items[i].new.buyer)).collect();
    debited.sort_unstable();
    debited.dedup();
    let (t, a): (Vec<Uuid>, Vec<Uuid>) = debited.iter().copied().unzip();
    let lock_sql = match locks {
        Locks::Wait => LOCK_MANY_SQL.to_owned(),
        Locks::Skip => format!("{LOCK_MANY_SQL}{SKIP_LOCKED}"),
    };
    let locked: HashSet<Uuid> = tx.cached_query(&lock_sql, &[&t, &a]).await?.iter().map(|r| r.get(0)).collect();
    // the keys and the buyers are locked by this transaction, nothing written yet
    crate::crash::point("charge-after-account-lock");
    let mut named: Vec<(Uuid, Uuid)> = Vec::new();
    for &i in &live {
        named.extend(items[i].new.accounts().into_iter().map(|id| (items[i].tenant.0, id)));
    }
    named.sort_unstable();
    named.dedup();
    let (t, a): (Vec<Uuid>, Vec<Uuid>) = named.iter().copied().unzip();
    // only a debited account's balance is read whole (`READ_MANY_SQL`)
    let whole: Vec<bool> = named.iter().map(|pair| debited.binary_search(pair).is_ok()).collect();
    let (ot, oo): (Vec<Uuid>, Vec<&str>) =
        live.iter().map(|&i| (items[i].tenant.0, items[i].new.order_id.as_str())).unzip();
    // Both reads at once: tokio-postgres pipelines them on the connection
    // (`pipelined`).
    let orders_sql = find_order_many_sql();
    let (account_params, order_params): ([&(dyn ToSql + Sync); 3], [&(dyn ToSql + Sync); 2]) =
        ([&t, &a, &whole], [&ot, &oo]);
    let (read, orders) = pipelined(tx, READ_MANY_SQL, &orders_sql).await?;
    let (account_rows, order_rows) =
        futures::try_join!(tx.query(&read, &account_params), tx.query(&orders, &order_params))?;
    let mut accounts: HashMap<(Uuid, Uuid), Account> = HashMap::new();
    for row in account_rows {
        let id: Uuid = row.get(0);
        let row_balance: Decimal = row.get(4);
        let slots: Decimal = row.get(5);
        accounts.insert(
            (row.get(1), id),
            Account {
                currency: crate::stored::currency(row.get(2))?,
                allow_negative: row.get(3),
                locked: locked.contains(&id),
                balance: row_balance + slots,
                row_balance,
                debits: Decimal::ZERO,
                credits: Decimal::ZERO,
            },
        );
    }
    let charges_of = orders_of(&order_rows)?;

    // Decide each charge in order, against balances that hold what the
    // charges before it in the batch did.
    let mut applied: Vec<Posting> = Vec::new();
    for &i in &live {
        let item = &items[i];
        let decided = decide(item, &mut accounts, &charges_of);
        match decided {
            Decided::Post(legs) => applied.push(Posting { item: i, transaction_id: Uuid::now_v7(), legs }),
            Decided::Alone => results[i] = Some(Batched::Alone),
            Decided::Done(r) => results[i] = Some(Batched::Done(r)),
        }
    }

    if !applied.is_empty() {
        let posted = write(tx, items, &accounts, &applied).await?;
        for (i, charge) in posted {
            results[i] = Some(Batched::Done(Ok(Outcome::Applied(charge))));
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every charge decided")).collect())
}

#[allow(clippy::large_enum_variant)]
enum Decided {
    Post(Vec<(Uuid, Decimal)>),
    Alone,
    Done(Result<Outcome<Charge>>),
}

/// A charge the batch posts: its item, its ledger transaction, its legs.
struct Posting {
    item: usize,
    transaction_id: Uuid,
    legs: Vec<(Uuid, Decimal)>,
}

/// One charge's fate, in the lone path's order of checks: the accounts
/// (each exists for the tenant, in the charge's currency), the natural
/// keys, then the buyer's floor.
fn decide(
    item: &BatchedCharge<'_>,
    accounts: &mut HashMap<(Uuid, Uuid), Account>,
    charges_of: &HashMap<(Uuid, String), Vec<Charge>>,
) -> Decided {
    let new = &item.new;
    let tenant = item.tenant.0;
    for id in &new.accounts() {
        match accounts.get(&(tenant, *id)) {
            None => return Decided::Done(Err(Error::AccountNotFound(*id))),
            Some(a) if a.currency != new.currency => {
                return Decided::Done(Err(Error::CurrencyMismatch {
                    account: *id,
                    account_currency: a.currency,
                    requested: new.currency,
                }))
            }
            Some(_) => {}
        }
    }
    let order = charges_of.get(&(tenant, new.order_id.clone())).map(Vec::as_slice).unwrap_or(&[]);
    match existing_in(order, &new.order_id, new.attempt, |c| new.same_as(c)) {
        Err(e) => return Decided::Done(Err(e)),
        Ok(Some(existing)) => return Decided::Done(Ok(Outcome::Existing(existing))),
        Ok(None) => {}
    }
    let buyer = accounts.get(&(tenant, new.buyer)).expect("checked above");
    if !buyer.allow_negative {
        // skipped (`Locks::Skip`): another transaction holds the row; alone,
        // the charge waits for it
        if !buyer.locked {
            return Decided::Alone;
        }
        let without_credits = buyer.balance + buyer.debits - new.amount;
        if without_credits < Decimal::ZERO {
            if without_credits + buyer.credits >= Decimal::ZERO {
                return Decided::Alone;
            }
            return Decided::Done(Ok(Outcome::Declined(Decline::InsufficientFunds { account: new.buyer })));
        }
    }
    let mut legs = new.legs();
    legs.retain(|(_, amount)| !amount.is_zero());
    for (id, amount) in &legs {
        let a = accounts.get_mut(&(tenant, *id)).expect("checked above");
        if amount.is_sign_negative() {
            a.debits += *amount;
        } else {
            a.credits += *amount;
        }
    }
    Decided::Post(legs)
}

/// Writes the decided charges: their transactions, entries and balances,
/// the charges and their events. Returns each one's charge.
async fn write(
    tx: &Transaction<'_>,
    items: &[BatchedCharge<'_>],
    accounts: &HashMap<(Uuid, Uuid), Account>,
    applied: &[Posting],
) -> Result<Vec<(usize, Charge)>> {
    // Debits of floor accounts go to their locked rows, everything else to
    // this session's slots, summed per account. A row whose own part cannot
    // take its debits gets its slots folded in first, as alone.
    let mut postings = Postings::default();
    for Posting { item: i, transaction_id, legs } in applied {
        let item = &items[*i];
        let tenant = item.tenant;
        let on_row = |id: Uuid, amount: Decimal| amount.is_sign_negative() && !accounts[&(tenant.0, id)].allow_negative;
        postings.push(item.new.kind(), *transaction_id, tenant, item.new.currency, legs, on_row);
    }
    // (a debit on a row is of the buyer's own tenant: the row's balance is its account's)
    let row_balance: HashMap<Uuid, Decimal> = accounts.iter().map(|((_, id), a)| (*id, a.row_balance)).collect();
    let sweep: Vec<Uuid> = postings
        .rows()
        .iter()
        .filter(|(id, delta)| row_balance[*id] + **delta < Decimal::ZERO)
        .map(|(id, _)| *id)
        .collect();
    if !sweep.is_empty() {
        tx.cached_execute(SWEEP_SQL, &[&sweep]).await?;
    }
    let postings = postings.columns();
    let (mut cols, mut holds) = (ChargeColumns::default(), ChargeColumns::default());
    let ids: Vec<Uuid> = applied
        .iter()
        .map(|p| {
            let item = &items[p.item];
            match item.new.hold {
                None => cols.push(item, p.transaction_id),
                Some(_) => holds.push(item, p.transaction_id),
            }
        })
        .collect();
    // The postings, the charges and the authorizations at once (pipelined):
    // their foreign keys to the transactions are checked at the end of their
    // statements, which PostgreSQL runs after the postings' (one
    // connection, in order).
    let insert_sql = insert_many_sql();
    let charge_params: [&(dyn ToSql + Sync); 12] = [
        &cols.ids,
        &cols.tenants,
        &cols.orders,
        &cols.attempts,
        &cols.buyers,
        &cols.sellers,
        &cols.platforms,
        &cols.amounts,
        &cols.fees,
        &cols.currencies,
        &cols.transactions,
        &cols.emails,
    ];
    let hold_params: [&(dyn ToSql + Sync); 14] = [
        &holds.ids,
        &holds.tenants,
        &holds.orders,
        &holds.attempts,
        &holds.buyers,
        &holds.sellers,
        &holds.platforms,
        &holds.amounts,
        &holds.fees,
        &holds.currencies,
        &holds.emails,
        &holds.hold_accounts,
        &holds.transactions,
        &holds.expires,
    ];
    let (post, insert) = pipelined(tx, POST_MANY_SQL, &insert_sql).await?;
    let authorize = tx.prepare_cached(AUTHORIZE_MANY_SQL).await?;
    // (an empty array is no statement)
    let post_params = postings.params();
    let (_, rows, held) = futures::try_join!(
        tx.execute(&post, &post_params),
        async {
            if cols.ids.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(&insert, &charge_params).await
            }
        },
        async {
            if holds.ids.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(&authorize, &hold_params).await
            }
        },
    )?;
    let mut by_id: HashMap<Uuid, Charge> = HashMap::new();
    for row in rows.iter().chain(&held) {
        let charge = from_row(row)?.charge;
        by_id.insert(charge.id, charge);
    }
    let mut posted = Vec::with_capacity(applied.len());
    let (mut paid, mut authorized) = (vec![], vec![]);
    for (p, id) in applied.iter().zip(&ids) {
        let charge = by_id.remove(id).ok_or_else(|| Error::unknown("batched charge", id.to_string()))?;
        let item = &items[p.item];
        let (tenant, order, request) = (item.tenant, Some(item.new.order_id.as_str()), item.request_id);
        match item.new.hold {
            None => paid.push((tenant, order, request, ChargeSucceededV1::from(&charge))),
            Some(_) => authorized.push((tenant, order, request, authorized_event(&charge)?)),
        }
        posted.push((p.item, charge));
    }
    if !paid.is_empty() {
        outbox::enqueue_many(tx, &paid).await?;
    }
    if !authorized.is_empty() {
        outbox::enqueue_many(tx, &authorized).await?;
    }
    Ok(posted)
}

/// The columns of the charges a batch inserts.
#[derive(Default)]
struct ChargeColumns<'a> {
    ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    orders: Vec<&'a str>,
    attempts: Vec<i32>,
    buyers: Vec<Uuid>,
    sellers: Vec<Uuid>,
    platforms: Vec<Option<Uuid>>,
    amounts: Vec<Decimal>,
    fees: Vec<Decimal>,
    currencies: Vec<&'static str>,
    transactions: Vec<Uuid>,
    emails: Vec<Option<&'a str>>,
    /// An authorization's holds account and deadline.
    hold_accounts: Vec<Uuid>,
    expires: Vec<chrono::DateTime<chrono::Utc>>,
}

impl<'a> ChargeColumns<'a> {
    /// Adds a charge's columns; returns its new id.
    fn push(&mut self, item: &'a BatchedCharge<'a>, transaction_id: Uuid) -> Uuid {
        let new = &item.new;
        let id = Uuid::now_v7();
        self.ids.push(id);
        self.tenants.push(item.tenant.0);
        self.orders.push(&new.order_id);
        self.attempts.push(new.attempt);
        self.buyers.push(new.buyer);
        self.sellers.push(new.seller);
        self.platforms.push(new.platform_fee.as_ref().map(|f| f.account_id));
        self.amounts.push(new.amount);
        self.fees.push(new.platform_fee.as_ref().map_or(Decimal::ZERO, |f| f.amount));
        self.currencies.push(new.currency.code());
        self.transactions.push(transaction_id);
        self.emails.push(new.receipt_email.as_deref());
        if let Some(hold) = new.hold {
            self.hold_accounts.push(hold.account);
            self.expires.push(hold.expires_at);
        }
        id
    }
}

/// Two statements prepared (from the connection's cache) before they are
/// sent together. Only then does the connection run them in the order they
/// are polled: a statement not prepared yet sends its `Parse` first and
/// its execution only after the answer, so one already prepared, polled
/// second, would run first (its insert then failed the foreign key to the
/// postings it was sent after, found by `make chaos` on a fresh
/// connection). In that order a failure of the first is also the error
/// `try_join!` returns, not the second's "transaction is aborted".
pub(crate) async fn pipelined(tx: &Transaction<'_>, first: &str, second: &str) -> Result<(Statement, Statement)> {
    Ok((tx.prepare_cached(first).await?, tx.prepare_cached(second).await?))
}
