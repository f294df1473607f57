//! Accounts: create (natural key: the tenant's reference), read with balance,
//! and the account's entries, newest first.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

use crate::db::Cached;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::money::Currency;
use crate::pagination::{Cursor, Filters, Page, MAX_PAGE};
use crate::{Error, Outcome, Result, TenantId};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    /// The caller's own name for the account, unique per tenant.
    pub reference: String,
    pub currency: Currency,
    /// Whether the balance may go below zero (an external-funds account may).
    pub allow_negative: bool,
    /// The sum of the account's entries (its row's part and its slots):
    /// what it can spend. Money held by open authorizations already left
    /// it (for the tenant's holds account), so this is also its available
    /// balance, and every floor check reads it.
    pub balance: Decimal,
    /// What its open authorizations hold (`holds`): posted = balance + pending.
    pub pending: Decimal,
    pub created_at: DateTime<Utc>,
}

/// The columns of a new account (its balance is its row's: it has no slots yet).
const COLUMNS: &str = "id, reference, currency, allow_negative, balance, created_at, 0::numeric";

/// The columns of an account read back: its balance is the row's part and
/// the sum of its slots, exact in the statement's one snapshot.
const READ_COLUMNS: &str = "a.id, a.reference, a.currency, a.allow_negative, \
                            a.balance + coalesce((SELECT sum(s.balance) FROM account_slots s WHERE s.account_id = a.id), 0), \
                            a.created_at, \
                            coalesce((SELECT sum(h.amount) FROM charges c JOIN charge_authorizations h ON h.charge_id = c.id \
                                       WHERE c.buyer_account_id = a.id AND c.status = 'authorized'), 0)";

fn from_row(row: &Row) -> Result<Account> {
    let currency = crate::stored::currency(row.get(2))?;
    Ok(Account {
        id: row.get(0),
        reference: row.get(1),
        currency,
        allow_negative: row.get(3),
        balance: currency.normalize(row.get(4)),
        created_at: row.get(5),
        pending: currency.normalize(row.get(6)),
    })
}

pub struct NewAccount<'a> {
    pub reference: &'a str,
    pub currency: Currency,
    pub allow_negative: bool,
}

pub async fn create(tx: &Transaction<'_>, tenant: TenantId, new: &NewAccount<'_>) -> Result<Outcome<Account>> {
    let inserted = tx
        .cached_opt(
            &format!(
                "INSERT INTO accounts (id, tenant_id, reference, currency, allow_negative) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, reference) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[&Uuid::now_v7(), &tenant.0, &new.reference, &new.currency.code(), &new.allow_negative],
        )
        .await?;
    if let Some(row) = inserted {
        return Ok(Outcome::Applied(from_row(&row)?));
    }
    let existing = tx
        .cached_one(
            &format!("SELECT {READ_COLUMNS} FROM accounts a WHERE a.tenant_id = $1 AND a.reference = $2"),
            &[&tenant.0, &new.reference],
        )
        .await?;
    let existing = from_row(&existing)?;
    if existing.currency != new.currency || existing.allow_negative != new.allow_negative {
        return Err(Error::NaturalKeyConflict(format!(
            "account reference `{}` already names an account with other settings",
            new.reference
        )));
    }
    Ok(Outcome::Existing(existing))
}

/// A system account of the tenant's in `currency`, named `reference`,
/// created on first use: one that may go negative (the provider clearing
/// account, the holds account), so that postings credit and debit it on
/// slots, never waiting for its row. A reference already taken by an
/// account that cannot be it (another currency, a floor) is a conflict.
pub(crate) async fn system(
    client: &impl Cached,
    tenant: TenantId,
    reference: &str,
    currency: Currency,
    what: &str,
) -> Result<Uuid> {
    const FIND: &str = "SELECT id, currency, allow_negative FROM accounts WHERE tenant_id = $1 AND reference = $2";
    // read first: it exists but on the tenant's first use of the currency
    let row = match client.cached_opt(FIND, &[&tenant.0, &reference]).await? {
        Some(row) => row,
        None => {
            client
                .cached_execute(
                    "INSERT INTO accounts (id, tenant_id, reference, currency, allow_negative) \
                     VALUES ($1, $2, $3, $4, true) ON CONFLICT (tenant_id, reference) DO NOTHING",
                    &[&Uuid::now_v7(), &tenant.0, &reference, &currency.code()],
                )
                .await?;
            client.cached_one(FIND, &[&tenant.0, &reference]).await?
        }
    };
    let (id, held, negative): (Uuid, &str, bool) = (row.get(0), row.get(1), row.get(2));
    if held != currency.code() || !negative {
        return Err(Error::NaturalKeyConflict(format!(
            "account reference `{reference}` is taken by an account that cannot be {what}"
        )));
    }
    Ok(id)
}

pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Account> {
    let row = client
        .query_opt(
            &format!("SELECT {READ_COLUMNS} FROM accounts a WHERE a.id = $1 AND a.tenant_id = $2"),
            &[&id, &tenant.0],
        )
        .await?
        .ok_or(Error::AccountNotFound(id))?;
    from_row(&row)
}

/// Which of a tenant's accounts a list holds; every filter is optional.
#[derive(Debug, Default)]
pub struct AccountFilter<'a> {
    /// References that start with this.
    pub reference_prefix: Option<&'a str>,
    pub currency: Option<Currency>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
}

/// The tenant's accounts that pass `filter`, newest first, `limit` (1 to
/// [`MAX_PAGE`]) from `cursor`. A cursor must be one of the tenant's
/// accounts (else `AccountNotFound`, as for any id of another tenant's); a
/// new account created while a client pages never shows up on
/// a later page (it is newer than every cursor), so pages never repeat nor
/// skip an account.
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    filter: &AccountFilter<'_>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Account>> {
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM accounts WHERE id = $1 AND tenant_id = $2", &[&id, &tenant.0])
            .await?
            .is_some();
        if !known {
            return Err(Error::AccountNotFound(id));
        }
    }
    let (sql, params) = list_statement(tenant, filter, cursor, limit);
    let rows = client.query(&sql, &params.params()).await?;
    let data = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    Ok(Page::read(data, limit, cursor))
}

/// The statement [`list`] runs for `filter` and `cursor` (its text depends
/// on which filters are given and on the cursor, not on their values).
pub fn list_sql(filter: &AccountFilter<'_>, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), filter, cursor, 0).0
}

/// A page's statement: the given filters only, so that its generic plan
/// reads the page from `(tenant_id, id)` at the cursor
/// ([`Filters`](crate::pagination::Filters)).
fn list_statement<'a>(
    tenant: TenantId,
    filter: &AccountFilter<'a>,
    cursor: Cursor,
    limit: i64,
) -> (String, Filters<'a>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("a.tenant_id =", tenant.0);
    if let Some(prefix) = filter.reference_prefix {
        let p = w.bind(prefix);
        w.push(format!("starts_with(a.reference, {p})"));
    }
    w.and_some("a.currency =", filter.currency.map(|c| c.code()))
        .and_some("a.created_at >=", filter.created_gte)
        .and_some("a.created_at <", filter.created_lt)
        .cursor("a.id", cursor, cursor.item());
    let limit = w.bind(limit + 1);
    (format!("SELECT {READ_COLUMNS} FROM accounts a WHERE {} ORDER BY a.id {order} LIMIT {limit}", w.sql()), w)
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Entry id; also the pagination cursor.
    pub id: i64,
    pub transaction_id: Uuid,
    /// What the transaction was: transfer, charge, refund, or the reversal of
    /// a card refund the provider failed.
    pub kind: EntryKind,
    /// Signed: positive credits the account, negative debits it.
    pub amount: Decimal,
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
    /// The account's available balance right after this entry, in the
    /// account's order (`created_at`, then `id`); `None` while the entry is
    /// newer than the history horizon (`checkpoints`), when a transaction
    /// that began before it could still add an entry before it.
    pub balance_after: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Transfer,
    Charge,
    Refund,
    RefundReversal,
    /// An authorization's hold: the buyer's amount to the holds account.
    Authorization,
    /// Held money given back: what a capture did not take, or a void's.
    Release,
}

impl EntryKind {
    /// A ledger transaction's stored `kind`.
    pub(crate) fn stored(kind: &str) -> Result<EntryKind> {
        match kind {
            "transfer" => Ok(EntryKind::Transfer),
            "charge" => Ok(EntryKind::Charge),
            "refund" => Ok(EntryKind::Refund),
            "refund_reversal" => Ok(EntryKind::RefundReversal),
            "authorization" => Ok(EntryKind::Authorization),
            "release" => Ok(EntryKind::Release),
            other => Err(Error::unknown("ledger transaction kind", other)),
        }
    }
}

/// The account's entries, newest first in the account's order (`created_at`,
/// then `id`, as its statements), `limit` at a time, from an entry of this
/// account's when `cursor` names one (else [`Error::EntryNotFound`]): just
/// older (`After`) or just newer (`Before`). Without `balance_after`: read
/// through `checkpoints::entries`, which adds it.
pub async fn entries(
    client: &impl GenericClient,
    tenant: TenantId,
    account: Uuid,
    limit: i64,
    cursor: Cursor<i64>,
) -> Result<Page<Entry>> {
    let acc = get(client, tenant, account).await?;
    let limit = limit.clamp(1, MAX_PAGE);
    let from = match cursor.item() {
        Some(id) => Some(
            client
                .query_opt("SELECT created_at FROM ledger_entries WHERE id = $1 AND account_id = $2", &[&id, &account])
                .await?
                .map(|r| (r.get::<_, DateTime<Utc>>(0), id))
                .ok_or(Error::EntryNotFound(id))?,
        ),
        None => None,
    };
    // a statement per direction, not one with `$2 IS NULL OR ...`: a
    // generic plan of that cannot start the index scan at the cursor, and
    // walks the account's entries from its newest down to it
    const SELECT: &str = "SELECT e.id, e.transaction_id, t.kind, e.amount, e.created_at \
                            FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id \
                           WHERE e.account_id = $1";
    let rows = match (cursor, from) {
        (Cursor::After(_), Some((created_at, id))) => {
            let sql =
                format!("{SELECT} AND (e.created_at, e.id) < ($2, $3) ORDER BY e.created_at DESC, e.id DESC LIMIT $4");
            client.query(&sql, &[&account, &created_at, &id, &(limit + 1)]).await?
        }
        (Cursor::Before(_), Some((created_at, id))) => {
            let sql = format!("{SELECT} AND (e.created_at, e.id) > ($2, $3) ORDER BY e.created_at, e.id LIMIT $4");
            client.query(&sql, &[&account, &created_at, &id, &(limit + 1)]).await?
        }
        _ => {
            let sql = format!("{SELECT} ORDER BY e.created_at DESC, e.id DESC LIMIT $2");
            client.query(&sql, &[&account, &(limit + 1)]).await?
        }
    };
    let entries = rows
        .iter()
        .map(|r| {
            Ok(Entry {
                id: r.get(0),
                transaction_id: r.get(1),
                kind: EntryKind::stored(r.get(2))?,
                amount: acc.currency.normalize(r.get(3)),
                currency: acc.currency,
                created_at: r.get(4),
                balance_after: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::read(entries, limit, cursor))
}
