//! Posting a balanced ledger transaction: lock the accounts, check floors,
//! append the entries and move the cached balances, all in the caller's
//! database transaction.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

use crate::db::Cached;
use uuid::Uuid;

use crate::money::Currency;
use crate::{Decline, Error, Result, TenantId};

/// Locks the accounts of a posting (`ledger-bench` runs it in pgbench too).
pub const LOCK_ACCOUNTS_SQL: &str = "SELECT id, currency, allow_negative, balance FROM accounts \
                                     WHERE id = ANY($1) AND tenant_id = $2 ORDER BY id FOR UPDATE";

/// One round trip: the transaction, its entries and the balances.
pub const POST_SQL: &str = "WITH t AS (
             INSERT INTO ledger_transactions (id, tenant_id, kind, currency) VALUES ($1, $2, $3, $4)
         ), e AS (
             INSERT INTO ledger_entries (transaction_id, leg, account_id, amount, currency)
             SELECT $1, leg, account, amount, $4 FROM unnest($5::int2[], $6::uuid[], $7::numeric[]) AS l(leg, account, amount)
         )
         UPDATE accounts a SET balance = a.balance + d.delta
           FROM unnest($8::uuid[], $9::numeric[]) AS d(account, delta)
          WHERE a.id = d.account";

#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub id: Uuid,
    pub currency: Currency,
    pub allow_negative: bool,
    pub balance: Decimal,
}

/// Locks the tenant's accounts `ids` (in id order, so that two postings over
/// the same accounts cannot deadlock) and checks they all hold `currency`.
/// An id that does not exist or belongs to another tenant is "not found":
/// nothing tells a caller that another tenant's account exists.
pub async fn lock_accounts(
    tx: &Transaction<'_>,
    tenant: TenantId,
    ids: &[Uuid],
    currency: Currency,
) -> Result<BTreeMap<Uuid, LockedAccount>> {
    let rows = tx.cached_query(LOCK_ACCOUNTS_SQL, &[&ids, &tenant.0]).await?;
    let mut locked = BTreeMap::new();
    for row in rows {
        let account = LockedAccount {
            id: row.get(0),
            currency: crate::stored::currency(row.get(1))?,
            allow_negative: row.get(2),
            balance: row.get(3),
        };
        locked.insert(account.id, account);
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
/// dropped. Every account must have been locked by [`lock_accounts`]; a debit
/// that would take an account without overdraft below zero is declined
/// (`InsufficientFunds`) before anything is written.
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
    for (id, delta) in &deltas {
        let account = locked.get(id).ok_or(Error::AccountNotFound(*id))?;
        if delta.is_sign_negative() && !account.allow_negative && account.balance + delta < Decimal::ZERO {
            return Ok(Err(Decline::InsufficientFunds { account: *id }));
        }
    }

    let transaction_id = Uuid::now_v7();
    let leg_numbers: Vec<i16> = (0..legs.len() as i16).collect();
    let leg_accounts: Vec<Uuid> = legs.iter().map(|l| l.0).collect();
    let leg_amounts: Vec<Decimal> = legs.iter().map(|l| l.1).collect();
    let delta_accounts: Vec<Uuid> = deltas.keys().copied().collect();
    let delta_amounts: Vec<Decimal> = deltas.values().copied().collect();
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
            &delta_accounts,
            &delta_amounts,
        ],
    )
    .await?;
    Ok(Ok(transaction_id))
}
