//! Posting a balanced ledger transaction: lock the debited accounts that have
//! a floor, check floors, append the entries and move the cached balances
//! (account rows and slot rows), all in the caller's database transaction.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;

use crate::db::Cached;
use uuid::Uuid;

use crate::money::Currency;
use crate::{Decline, Error, Result, TenantId};

/// Locks the accounts with a floor among those a posting debits, in id order,
/// so that two postings cannot deadlock (`ledger-bench` runs it in pgbench
/// too). Only their debits need the row: a credit, or a debit of an account
/// that may go negative, lands on a slot row and locks no account row, so
/// the platform-fee account, sellers and external accounts are no hot rows.
/// `FOR NO KEY UPDATE`, like the balance UPDATE itself: it does not conflict
/// with the key-share locks that other transactions' foreign keys to the
/// account take.
pub const LOCK_ACCOUNTS_SQL: &str = "SELECT id FROM accounts WHERE id = ANY($1) AND tenant_id = $2 \
                                     AND NOT allow_negative ORDER BY id FOR NO KEY UPDATE";

/// The accounts of a posting and their whole balances (the row's part and
/// the sum of its slots), read in a snapshot taken after the locks above were
/// granted (`ledger-bench` runs it in pgbench too).
pub const READ_ACCOUNTS_SQL: &str = "SELECT a.id, a.currency, a.allow_negative, a.balance, \
                                            coalesce((SELECT sum(s.balance) FROM account_slots s \
                                                       WHERE s.account_id = a.id), 0) \
                                       FROM accounts a WHERE a.id = ANY($1) AND a.tenant_id = $2";

/// Folds the slots of the locked accounts `$1` into their rows: run by a
/// debit that the row's part alone cannot cover, under the account's row
/// lock, so no other debit of the account runs meanwhile. The slots are
/// locked (a credit in flight on one is waited for, its newest value read)
/// and zeroed; the rows get what they held.
pub(crate) const SWEEP_SQL: &str = "WITH s AS (
             SELECT account_id, slot, balance FROM account_slots
              WHERE account_id = ANY($1) AND balance <> 0 ORDER BY account_id, slot FOR UPDATE
         ), z AS (
             UPDATE account_slots t SET balance = 0 FROM s WHERE t.account_id = s.account_id AND t.slot = s.slot
         )
         UPDATE accounts a SET balance = a.balance + x.total
           FROM (SELECT account_id, sum(balance) AS total FROM s GROUP BY account_id) x
          WHERE a.id = x.account_id";

/// One round trip: the transaction, its entries, the debits of accounts with
/// a floor on their (locked) rows, everything else on this session's slots
/// (`ledger-bench` runs it in pgbench too). An account has up to 16 slots and
/// a session always writes the same one (its backend pid modulo 16), so
/// concurrent postings from the connections of a pool rarely share a slot;
/// the slots are written in account order, so two sessions that do cannot
/// deadlock.
pub const POST_SQL: &str = "WITH t AS (
             INSERT INTO ledger_transactions (id, tenant_id, kind, currency) VALUES ($1, $2, $3, $4)
         ), e AS (
             INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency)
             SELECT $1, leg, account, amount, $4 FROM unnest($5::int2[], $6::uuid[], $7::numeric[]) AS l(leg, account, amount)
         ), r AS (
             UPDATE accounts a SET balance = a.balance + d.delta
               FROM unnest($8::uuid[], $9::numeric[]) AS d(account, delta)
              WHERE a.id = d.account
         )
         INSERT INTO account_slots AS s (account_id, slot, balance)
         SELECT d.account, (pg_backend_pid() % 16)::int2, d.delta
           FROM unnest($10::uuid[], $11::numeric[]) AS d(account, delta) ORDER BY d.account
         ON CONFLICT (account_id, slot) DO UPDATE SET balance = s.balance + excluded.balance";

#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub id: Uuid,
    pub currency: Currency,
    pub allow_negative: bool,
    /// The whole balance: the row's part and its slots.
    pub balance: Decimal,
    /// The part of the balance on the account's row.
    pub row_balance: Decimal,
    /// Whether this transaction holds the account's row lock (an account
    /// with a floor that the posting may debit).
    pub locked: bool,
}

/// Reads the tenant's accounts `ids` and locks those among `debited` that
/// have a floor (in id order, so that two postings over the same accounts
/// cannot deadlock), and checks they all hold `currency`. An id that does not
/// exist or belongs to another tenant is "not found": nothing tells a caller
/// that another tenant's account exists.
pub async fn lock_debited(
    tx: &Transaction<'_>,
    tenant: TenantId,
    ids: &[Uuid],
    debited: &[Uuid],
    currency: Currency,
) -> Result<BTreeMap<Uuid, LockedAccount>> {
    let locked_ids: Vec<Uuid> = if debited.is_empty() {
        Vec::new()
    } else {
        tx.cached_query(LOCK_ACCOUNTS_SQL, &[&debited, &tenant.0]).await?.iter().map(|r| r.get(0)).collect()
    };
    // A new statement, so a new snapshot: every credit committed before the
    // locks were granted is in the balance read here.
    let rows = tx.cached_query(READ_ACCOUNTS_SQL, &[&ids, &tenant.0]).await?;
    let mut locked = BTreeMap::new();
    for row in rows {
        let row_balance: Decimal = row.get(3);
        let slots: Decimal = row.get(4);
        let account = LockedAccount {
            id: row.get(0),
            currency: crate::stored::currency(row.get(1))?,
            allow_negative: row.get(2),
            balance: row_balance + slots,
            row_balance,
            locked: false,
        };
        locked.insert(account.id, LockedAccount { locked: locked_ids.contains(&account.id), ..account });
    }
    for id in ids {
        let account = locked.get(id).ok_or(Error::AccountNotFound(*id))?;
        if account.currency != currency {
            return Err(Error::CurrencyMismatch {
                account: *id,
                account_currency: account.currency,
                requested: currency,
            });
        }
    }
    Ok(locked)
}

/// Appends one balanced transaction. `legs` are (account, signed amount):
/// positive credits, negative debits. Legs must sum to zero; zero legs are
/// dropped. Every account must have been read by [`lock_debited`], and every
/// account with a floor that is debited locked by it; a debit that would take
/// such an account below zero is declined (`InsufficientFunds`) before
/// anything is written.
pub async fn post(
    tx: &Transaction<'_>,
    tenant: TenantId,
    kind: &str,
    currency: Currency,
    locked: &BTreeMap<Uuid, LockedAccount>,
    legs: &[(Uuid, Decimal)],
) -> Result<Result<Uuid, Decline>> {
    let legs: Vec<(Uuid, Decimal)> = legs.iter().copied().filter(|(_, a)| !a.is_zero()).collect();
    debug_assert!(legs.iter().map(|(_, a)| *a).sum::<Decimal>().is_zero(), "unbalanced legs");

    let mut deltas: BTreeMap<Uuid, Decimal> = BTreeMap::new();
    for (account, amount) in &legs {
        *deltas.entry(*account).or_default() += *amount;
    }
    // Debits of accounts with a floor go to their locked rows; the rest to slots.
    let (mut row_accounts, mut row_deltas, mut slot_accounts, mut slot_deltas) = (vec![], vec![], vec![], vec![]);
    let mut sweep: Vec<Uuid> = Vec::new();
    for (id, delta) in &deltas {
        let account = locked.get(id).ok_or(Error::AccountNotFound(*id))?;
        if delta.is_sign_negative() && !account.allow_negative {
            if !account.locked {
                return Err(Error::DebitNotLocked(*id));
            }
            if account.balance + delta < Decimal::ZERO {
                return Ok(Err(Decline::InsufficientFunds { account: *id }));
            }
            if account.row_balance + delta < Decimal::ZERO {
                sweep.push(*id);
            }
            row_accounts.push(*id);
            row_deltas.push(*delta);
        } else {
            slot_accounts.push(*id);
            slot_deltas.push(*delta);
        }
    }
    if !sweep.is_empty() {
        tx.cached_execute(SWEEP_SQL, &[&sweep]).await?;
    }

    let transaction_id = Uuid::now_v7();
    let leg_numbers: Vec<i16> = (0..legs.len() as i16).collect();
    let leg_accounts: Vec<Uuid> = legs.iter().map(|l| l.0).collect();
    let leg_amounts: Vec<Decimal> = legs.iter().map(|l| l.1).collect();
    // One round trip: the transaction, its entries and the balances.
    tx.cached_execute(
        POST_SQL,
        &[
            &transaction_id,
            &tenant.0,
            &kind,
            &currency.code(),
            &leg_numbers,
            &leg_accounts,
            &leg_amounts,
            &row_accounts,
            &row_deltas,
            &slot_accounts,
            &slot_deltas,
        ],
    )
    .await?;
    Ok(Ok(transaction_id))
}

/// The floor accounts among a batch's debited (tenant, account) pairs,
/// locked in id order like [`LOCK_ACCOUNTS_SQL`], so that two batches, or a
/// batch and a lone posting, cannot deadlock on them.
pub(crate) const LOCK_MANY_SQL: &str = "SELECT a.id FROM accounts a \
     JOIN unnest($1::uuid[], $2::uuid[]) AS d(t, id) ON a.id = d.id AND a.tenant_id = d.t \
     WHERE NOT a.allow_negative ORDER BY a.id FOR NO KEY UPDATE OF a";
/// What a batch of charges appends to [`LOCK_MANY_SQL`]: a buyer whose row
/// another transaction holds is skipped, not waited for, and its charge
/// runs alone after the batch (where it waits for the row by itself), so
/// one locked buyer never holds up a batch of strangers.
pub(crate) const SKIP_LOCKED: &str = " SKIP LOCKED";
/// [`READ_ACCOUNTS_SQL`] for a batch's (tenant, account) pairs; the slots
/// are summed only for the pairs `$3` marks (the debited: an account only
/// credited needs no balance, and a seller's or a platform's slots are the
/// busiest, up to 16 rows each). The others read a zero.
pub(crate) const READ_MANY_SQL: &str = "SELECT a.id, a.tenant_id, a.currency, a.allow_negative, a.balance, \
            CASE WHEN d.debited THEN coalesce((SELECT sum(s.balance) FROM account_slots s WHERE s.account_id = a.id), 0) \
                 ELSE 0 END \
       FROM accounts a JOIN unnest($1::uuid[], $2::uuid[], $3::bool[]) AS d(t, id, debited) \
         ON a.id = d.id AND a.tenant_id = d.t";
/// [`POST_SQL`] for many transactions at once (each of its kind): their
/// rows, their entries, the debits of locked floor accounts on their rows
/// and every other delta on this session's slots, each account once (summed
/// by the caller), in account order.
pub(crate) const POST_MANY_SQL: &str = "WITH t AS (
             INSERT INTO ledger_transactions (id, tenant_id, kind, currency)
             SELECT id, t, k, c FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[]) AS x(k, id, t, c)
         ), e AS (
             INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency)
             SELECT tx, leg, account, amount, c
               FROM unnest($5::uuid[], $6::int2[], $7::uuid[], $8::numeric[], $9::text[]) AS l(tx, leg, account, amount, c)
         ), r AS (
             UPDATE accounts a SET balance = a.balance + d.delta
               FROM unnest($10::uuid[], $11::numeric[]) AS d(account, delta)
              WHERE a.id = d.account
         )
         INSERT INTO account_slots AS s (account_id, slot, balance)
         SELECT d.account, (pg_backend_pid() % 16)::int2, d.delta
           FROM unnest($12::uuid[], $13::numeric[]) AS d(account, delta) ORDER BY d.account
         ON CONFLICT (account_id, slot) DO UPDATE SET balance = s.balance + excluded.balance";

/// Many transactions as [`POST_MANY_SQL`] takes them: their rows, their
/// entries, and each account's deltas summed, on its row or on a slot.
#[derive(Default)]
pub(crate) struct Postings {
    columns: PostingColumns,
    /// Debits of locked floor accounts, on their rows.
    rows: BTreeMap<Uuid, Decimal>,
    /// Every other delta, on this session's slots.
    slots: BTreeMap<Uuid, Decimal>,
}

impl Postings {
    /// Adds the transaction `id` of `legs` (a zero leg is no entry);
    /// `on_row` says which legs go to their account's row.
    pub(crate) fn push(
        &mut self,
        kind: &'static str,
        id: Uuid,
        tenant: TenantId,
        currency: Currency,
        legs: &[(Uuid, Decimal)],
        mut on_row: impl FnMut(Uuid, Decimal) -> bool,
    ) {
        let c = &mut self.columns;
        c.kinds.push(kind);
        c.ids.push(id);
        c.tenants.push(tenant.0);
        c.currencies.push(currency.code());
        for (leg, &(account, amount)) in legs.iter().filter(|(_, a)| !a.is_zero()).enumerate() {
            c.entry_tx.push(id);
            c.entry_leg.push(leg as i16);
            c.entry_account.push(account);
            c.entry_amount.push(amount);
            c.entry_currency.push(currency.code());
            let deltas = if on_row(account, amount) { &mut self.rows } else { &mut self.slots };
            *deltas.entry(account).or_default() += amount;
        }
    }

    /// The row deltas so far, by account.
    pub(crate) fn rows(&self) -> &BTreeMap<Uuid, Decimal> {
        &self.rows
    }

    /// The columns, ready to be sent.
    pub(crate) fn columns(self) -> PostingColumns {
        let mut columns = self.columns;
        (columns.row_ids, columns.row_deltas) = self.rows.into_iter().unzip();
        (columns.slot_ids, columns.slot_deltas) = self.slots.into_iter().unzip();
        columns
    }
}

/// [`Postings`] as the arrays [`POST_MANY_SQL`] takes, deltas in account order.
#[derive(Default)]
pub(crate) struct PostingColumns {
    kinds: Vec<&'static str>,
    ids: Vec<Uuid>,
    tenants: Vec<Uuid>,
    currencies: Vec<&'static str>,
    entry_tx: Vec<Uuid>,
    entry_leg: Vec<i16>,
    entry_account: Vec<Uuid>,
    entry_amount: Vec<Decimal>,
    entry_currency: Vec<&'static str>,
    row_ids: Vec<Uuid>,
    row_deltas: Vec<Decimal>,
    slot_ids: Vec<Uuid>,
    slot_deltas: Vec<Decimal>,
}

impl PostingColumns {
    /// [`POST_MANY_SQL`]'s parameters.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.kinds,
            &self.ids,
            &self.tenants,
            &self.currencies,
            &self.entry_tx,
            &self.entry_leg,
            &self.entry_account,
            &self.entry_amount,
            &self.entry_currency,
            &self.row_ids,
            &self.row_deltas,
            &self.slot_ids,
            &self.slot_deltas,
        ]
    }
}
