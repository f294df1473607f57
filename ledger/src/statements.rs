//! An account's history: its balance at a past instant, and statements over
//! a period (the balances at both ends, totals by kind, the entries between).
//!
//! An entry's `created_at` is its transaction's start (`now()`), not its
//! commit, so a transaction that began before an instant may still commit
//! after a first read of it. An instant is therefore answered only once it is
//! settled ([`settle`]): no transaction that could still commit an entry
//! stamped at or before it exists. The entries up to a settled instant never
//! change again (they are append-only), so every read of it agrees, whatever
//! snapshot it runs in, and a statement may be read a page at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::accounts::EntryKind;
use crate::money::Currency;
use crate::{Error, Result, TenantId};

/// How far behind the database's clock an instant must be: covers the moment
/// between a transaction taking its start time and its registration in
/// `pg_locks`, where [`settle`] looks for it (microseconds in practice).
pub const SETTLE_MARGIN: Duration = Duration::from_secs(1);

/// How long [`settle`] waits for transactions that may have begun at or
/// before the instant to end. The service's own are bounded by the pools'
/// idle-in-transaction timeout between statements; this is what a read
/// spends at most on them before it answers `AsOfTooRecent`.
pub const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The most entries a statement answers as one JSON document; more is
/// refused ([`Error::StatementTooLarge`]): the CSV form streams any number.
pub const MAX_STATEMENT_ENTRIES: i64 = 1000;

/// The balance of an account at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceAt {
    pub account_id: Uuid,
    pub currency: Currency,
    pub as_of: DateTime<Utc>,
    /// The sum of its entries stamped at or before `as_of`.
    pub available: Decimal,
    /// What its authorizations held at `as_of`: each one held from its
    /// hold's transaction until the transaction that ended it (a capture,
    /// a void, an expiry).
    pub pending: Decimal,
}

impl BalanceAt {
    pub fn posted(&self) -> Decimal {
        self.available + self.pending
    }
}

/// The transactions open in this database, other than this session's, that
/// may have begun at or before `$1`: the virtual transaction ids of
/// `pg_locks` (every transaction holds its own from its start to its end, and
/// `pg_locks` shows every role's). One whose start time this role can see
/// (`pg_stat_activity` hides other roles' without `pg_read_all_stats`) and
/// that began after `$1` is left out. The first column says whether `$1` is
/// at least the margin behind the database's clock.
const OPEN_SQL: &str = "SELECT $1 <= clock_timestamp() - make_interval(secs => $2), \
                               ARRAY(SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                                      WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid() \
                                        AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                                        AND (a.xact_start IS NULL OR a.xact_start <= $1))";

/// Which of `$1` are still open.
const STILL_OPEN_SQL: &str = "SELECT count(*) FROM pg_locks \
                               WHERE locktype = 'virtualxid' AND granted AND virtualxid = ANY($1)";

/// Waits until `as_of` is settled: at least [`SETTLE_MARGIN`] behind the
/// database's clock, and every transaction of this database that may have
/// begun at or before it has ended (its commit is then visible to every
/// later snapshot, since PostgreSQL releases a transaction's locks after it
/// is committed). A transaction that begins later is stamped later than
/// `as_of`. Refuses with [`Error::AsOfTooRecent`] an instant too near or in
/// the future, or one whose transactions did not end within [`SETTLE_WAIT`].
///
/// Each statement must run in a transaction of its own (a pooled client
/// outside `BEGIN`): `pg_stat_activity` is read once per transaction, and
/// the caller's reads must take their snapshots after this returns.
pub async fn settle(client: &impl GenericClient, as_of: DateTime<Utc>) -> Result<()> {
    let row = client.query_one(OPEN_SQL, &[&as_of, &SETTLE_MARGIN.as_secs_f64()]).await?;
    let (settled, open): (bool, Vec<String>) = (row.get(0), row.get(1));
    if !settled {
        return Err(Error::AsOfTooRecent {
            as_of,
            reason: "it is in the future or less than a second ago; history is answered once no transaction can \
                     still add to it",
        });
    }
    if open.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let left: i64 = client.query_one(STILL_OPEN_SQL, &[&open]).await?.get(0);
        if left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::AsOfTooRecent {
                as_of,
                reason: "a transaction that may have begun before it is still open; retry",
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The database's clock, for a read of the present (no `as_of`).
pub async fn now(client: &impl GenericClient) -> Result<DateTime<Utc>> {
    Ok(client.query_one("SELECT now()", &[]).await?.get(0))
}

/// The account's balance at `$3`, in one snapshot. `available` sums the
/// account's entries at or before `$3`: past the history horizon (an instant
/// of the last second or two), as its balance now (its row's part and its
/// slots, which always equal the sum of all its entries; the audit checks
/// it) less its entries after `$3`, a handful; at or before the horizon, as
/// its nearest balance checkpoint at or before `$3` plus the entries after
/// it up to `$3`, fewer than `checkpoints::EVERY` once the checkpointer has
/// passed (`checkpoints`). Index lookups and short range scans over
/// `balance_checkpoints` and `ledger_entries_account_created`, whatever the
/// account's size. `pending` reads the buyer's authorizations
/// (`charges_tenant_id_buyer_account_id_id`, then each one's transactions by
/// key).
const BALANCE_AT_SQL: &str = "SELECT a.currency, \
        CASE WHEN $3 < a.created_at THEN 0::numeric \
             WHEN $3 > (SELECT settled_to FROM history_horizon) THEN \
                  a.balance + coalesce((SELECT sum(s.balance) FROM account_slots s WHERE s.account_id = a.id), 0) \
                  - coalesce((SELECT sum(e.amount) FROM ledger_entries e \
                               WHERE e.account_id = a.id AND e.created_at > $3), 0) \
             ELSE (SELECT coalesce(c.balance, 0) + coalesce((SELECT sum(e.amount) FROM ledger_entries e \
                             WHERE e.account_id = a.id \
                               AND (e.created_at, e.id) > (coalesce(c.created_at, '-infinity'), coalesce(c.entry_id, 0)) \
                               AND e.created_at <= $3), 0) \
                     FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT balance, created_at, entry_id FROM balance_checkpoints c \
                            WHERE c.account_id = a.id AND c.created_at <= $3 \
                            ORDER BY c.created_at DESC, c.entry_id DESC LIMIT 1) c ON true) END, \
        coalesce((SELECT sum(h.amount) FROM charges c \
                    JOIN charge_authorizations h ON h.charge_id = c.id \
                    JOIN ledger_transactions ht ON ht.id = h.hold_transaction_id \
                    LEFT JOIN ledger_transactions rt ON rt.id = h.release_transaction_id \
                    LEFT JOIN ledger_transactions ct ON ct.id = c.transaction_id AND h.captured_at IS NOT NULL \
                   WHERE c.tenant_id = a.tenant_id AND c.buyer_account_id = a.id AND ht.created_at <= $3 \
                     AND coalesce(least(rt.created_at, ct.created_at) > $3, true)), 0) \
   FROM accounts a WHERE a.id = $1 AND a.tenant_id = $2";

/// The tenant's account `account` at `as_of`, which the caller has settled
/// ([`settle`]); an instant before the account existed gives zeros. Another
/// tenant's account is `AccountNotFound`.
pub async fn balance_at(
    client: &impl GenericClient,
    tenant: TenantId,
    account: Uuid,
    as_of: DateTime<Utc>,
) -> Result<BalanceAt> {
    let row = client
        .query_opt(BALANCE_AT_SQL, &[&account, &tenant.0, &as_of])
        .await?
        .ok_or(Error::AccountNotFound(account))?;
    let currency = crate::stored::currency(row.get(0))?;
    Ok(BalanceAt {
        account_id: account,
        currency,
        as_of,
        available: currency.normalize(row.get(1)),
        pending: currency.normalize(row.get(2)),
    })
}

/// The account's balance now, in one snapshot, as `GET /v1/accounts/{id}`
/// reads it; `as_of` is the database's clock at the read. Not repeatable:
/// transactions that began before it may still commit.
pub async fn balance_now(client: &impl GenericClient, tenant: TenantId, account: Uuid) -> Result<BalanceAt> {
    let a = crate::accounts::get(client, tenant, account).await?;
    let as_of = now(client).await?;
    Ok(BalanceAt { account_id: a.id, currency: a.currency, as_of, available: a.balance, pending: a.pending })
}

/// One entry of a statement, with the account's available balance after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub id: i64,
    pub transaction_id: Uuid,
    pub kind: EntryKind,
    /// Signed: positive credits the account.
    pub amount: Decimal,
    /// The running available balance: the opening one plus every entry of
    /// the period up to this one.
    pub balance: Decimal,
    pub created_at: DateTime<Utc>,
}

/// Where a page of a period's entries starts: after this entry, in the
/// statement's order (`created_at`, then `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryCursor {
    pub created_at: DateTime<Utc>,
    pub id: i64,
}

impl EntryCursor {
    /// The cursor before a period's first entry: entries stamped at `from`
    /// belong to the opening balance.
    pub fn start(from: DateTime<Utc>) -> EntryCursor {
        EntryCursor { created_at: from, id: i64::MAX }
    }
}

/// A page of the account's entries after `$2, $3` and at or before `$4`,
/// oldest first: one range of `ledger_entries_account_created`, and each
/// entry's transaction by key.
const PERIOD_PAGE_SQL: &str = "SELECT e.id, e.transaction_id, t.kind, e.amount, e.created_at \
                                 FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id \
                                WHERE e.account_id = $1 AND (e.created_at, e.id) > ($2, $3) AND e.created_at <= $4 \
                                ORDER BY e.created_at, e.id LIMIT $5";

/// Up to `limit` of the account's entries after `after` and stamped at or
/// before `to`, oldest first, with the running balance from `balance` (the
/// balance before the first of them). The account must be the caller's
/// (read by [`balance_at`] first) and `to` settled.
pub async fn period_page(
    client: &impl GenericClient,
    account: Uuid,
    currency: Currency,
    after: EntryCursor,
    to: DateTime<Utc>,
    mut balance: Decimal,
    limit: i64,
) -> Result<Vec<StatementEntry>> {
    let rows = client.query(PERIOD_PAGE_SQL, &[&account, &after.created_at, &after.id, &to, &limit]).await?;
    rows.iter()
        .map(|r| {
            let amount = currency.normalize(r.get(3));
            balance += amount;
            Ok(StatementEntry {
                id: r.get(0),
                transaction_id: r.get(1),
                kind: EntryKind::stored(r.get(2))?,
                amount,
                balance,
                created_at: r.get(4),
            })
        })
        .collect()
}

/// Every kind, in the order totals are given.
pub const KINDS: [EntryKind; 6] = [
    EntryKind::Charge,
    EntryKind::Refund,
    EntryKind::Transfer,
    EntryKind::Authorization,
    EntryKind::Release,
    EntryKind::RefundReversal,
];

/// What the entries of one kind did to the account in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindTotal {
    pub kind: EntryKind,
    pub count: i64,
    /// The sum of its credits (positive entries).
    pub credits: Decimal,
    /// The sum of its debits (negative entries), negative or zero.
    pub debits: Decimal,
}

impl KindTotal {
    pub fn net(&self) -> Decimal {
        self.credits + self.debits
    }
}

/// Totals by kind, added up entry by entry (so that a streamed statement
/// needs no second pass).
#[derive(Debug, Clone)]
pub struct Totals(Vec<KindTotal>);

impl Totals {
    pub fn new(currency: Currency) -> Totals {
        let zero = currency.normalize(Decimal::ZERO);
        Totals(KINDS.iter().map(|&kind| KindTotal { kind, count: 0, credits: zero, debits: zero }).collect())
    }

    pub fn add(&mut self, entry: &StatementEntry) {
        if let Some(t) = self.0.iter_mut().find(|t| t.kind == entry.kind) {
            t.count += 1;
            if entry.amount >= Decimal::ZERO {
                t.credits += entry.amount;
            } else {
                t.debits += entry.amount;
            }
        }
    }

    pub fn into_vec(self) -> Vec<KindTotal> {
        self.0
    }
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub opening: BalanceAt,
    pub closing: BalanceAt,
    /// Every kind, zeros included, in [`KINDS`]' order.
    pub totals: Vec<KindTotal>,
    /// The entries stamped after `from` and at or before `to`, oldest first:
    /// `opening.available` plus their sum is `closing.available`.
    pub entries: Vec<StatementEntry>,
}

/// The ends of a period, checked: `from` before `to`, both settled.
pub async fn period(client: &impl GenericClient, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<()> {
    if from >= to {
        return Err(Error::InvalidPeriod { from, to });
    }
    settle(client, to).await
}

/// The balances at both ends of a settled period ([`period`]).
pub async fn ends(
    client: &impl GenericClient,
    tenant: TenantId,
    account: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(BalanceAt, BalanceAt)> {
    let opening = balance_at(client, tenant, account, from).await?;
    let closing = balance_at(client, tenant, account, to).await?;
    Ok((opening, closing))
}

/// The account's statement from `from` to `to`, whole, with at most
/// [`MAX_STATEMENT_ENTRIES`] entries (else `StatementTooLarge`, having read
/// one more than that).
pub async fn statement(
    client: &impl GenericClient,
    tenant: TenantId,
    account: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Statement> {
    period(client, from, to).await?;
    let (opening, closing) = ends(client, tenant, account, from, to).await?;
    let entries = period_page(
        client,
        account,
        opening.currency,
        EntryCursor::start(from),
        to,
        opening.available,
        MAX_STATEMENT_ENTRIES + 1,
    )
    .await?;
    if entries.len() as i64 > MAX_STATEMENT_ENTRIES {
        return Err(Error::StatementTooLarge { max: MAX_STATEMENT_ENTRIES });
    }
    let mut totals = Totals::new(opening.currency);
    entries.iter().for_each(|e| totals.add(e));
    Ok(Statement { opening, closing, totals: totals.into_vec(), entries })
}
