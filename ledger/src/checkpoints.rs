//! Balance checkpoints: each account's balance at every [`EVERY`]th entry of
//! its history, in the account's own order (`created_at`, then `id`: the
//! order of its statements), so that its balance at a settled instant, or
//! after a settled entry, is the nearest checkpoint at or before it plus
//! fewer than [`EVERY`] entries (and the entries since the last pass): two
//! index lookups whatever the account's size.
//!
//! A pass ([`advance`]) first settles an instant a little behind the
//! database's clock ([`statements::settle`]: every transaction that may have
//! begun before it has ended), then reads the entries stamped since the
//! previous horizon and no others: each account's are counted and summed on
//! from its state at the previous horizon (`balance_settled`), the ones
//! that complete a checkpoint are written, and the horizon moves there. A
//! pass costs the entries since the last one, whatever the accounts' sizes. Nothing can be stamped
//! at or before a settled instant any more, so a checkpoint never changes,
//! and an entry at or before the horizon has a final `balance_after`.
//! Entries are append-only; the audit recomputes every checkpoint from them
//! (`balance_checkpoints_match_entries`).
//!
//! The workers' expirer role makes a pass every second. Without it, reads are
//! as right and only slower (the nearest checkpoint is further back), and an
//! entry newer than the horizon has no `balance_after` yet.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::accounts::Entry;
use crate::pagination::{Cursor, Page};
use crate::statements::{self, SETTLE_MARGIN};
use crate::{Error, Result, TenantId};

/// Entries between two checkpoints of an account.
pub const EVERY: i64 = 1000;

/// How far behind the database's clock a pass settles: the margin
/// [`statements::settle`] needs, and half as much again.
const BEHIND: Duration = Duration::from_millis(SETTLE_MARGIN.as_millis() as u64 * 3 / 2);

/// The history horizon: every entry stamped at or before it is committed.
pub async fn horizon(client: &impl GenericClient) -> Result<DateTime<Utc>> {
    Ok(client.query_one("SELECT settled_to FROM history_horizon", &[]).await?.get(0))
}

/// A pass over the entries stamped in `($1, $2]`: each account's are
/// counted and summed on from where the previous passes left it
/// (`balance_settled`: its count and balance through its last entry at or
/// before `$1`), every `$3`th is a checkpoint, and the account's new state
/// is its last of them. Nothing stamped at or before `$1` is read. Answers
/// the checkpoints written and the accounts carried on.
const ADVANCE_SQL: &str = "WITH run AS MATERIALIZED ( \
       SELECT e.account_id, e.created_at, e.id, \
              coalesce(s.balance, 0) + sum(e.amount) OVER w AS balance, \
              coalesce(s.entries, 0) + row_number() OVER w AS n, \
              row_number() OVER w = count(*) OVER (PARTITION BY e.account_id) AS last \
         FROM ledger_entries e LEFT JOIN balance_settled s ON s.account_id = e.account_id \
        WHERE e.created_at > $1 AND e.created_at <= $2 \
       WINDOW w AS (PARTITION BY e.account_id ORDER BY e.created_at, e.id) \
     ), checkpoints AS ( \
       INSERT INTO balance_checkpoints (account_id, created_at, entry_id, balance, entries) \
       SELECT account_id, created_at, id, balance, n FROM run WHERE n % $3 = 0 \
       RETURNING 1 \
     ), settled AS ( \
       INSERT INTO balance_settled (account_id, created_at, entry_id, balance, entries) \
       SELECT account_id, created_at, id, balance, n FROM run WHERE last \
       ON CONFLICT (account_id) DO UPDATE SET created_at = excluded.created_at, entry_id = excluded.entry_id, \
                                              balance = excluded.balance, entries = excluded.entries \
       RETURNING 1 \
     ) \
     SELECT (SELECT count(*) FROM checkpoints), (SELECT count(*) FROM settled)";

/// One pass: settles an instant [`BEHIND`] the database's clock, writes the
/// checkpoints of the entries up to it (every `every`th of an account), and
/// moves the horizon there. Returns the checkpoints written, or `None` when
/// the instant could not be settled yet (a transaction that began before it
/// is still open: the next pass tries again). Passes of several processes
/// take turns on the horizon's row.
pub async fn advance(client: &mut tokio_postgres::Client, every: i64) -> Result<Option<u64>> {
    let to: DateTime<Utc> = client
        .query_one("SELECT clock_timestamp() - make_interval(secs => $1)", &[&BEHIND.as_secs_f64()])
        .await?
        .get(0);
    match statements::settle(&*client, to).await {
        Ok(()) => {}
        Err(Error::AsOfTooRecent { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let tx = client.transaction().await?;
    let from: DateTime<Utc> = tx.query_one("SELECT settled_to FROM history_horizon FOR UPDATE", &[]).await?.get(0);
    if from >= to {
        return Ok(Some(0));
    }
    let written: i64 = tx.query_one(ADVANCE_SQL, &[&from, &to, &every]).await?.get(0);
    tx.execute("UPDATE history_horizon SET settled_to = $1", &[&to]).await?;
    tx.commit().await?;
    Ok(Some(written as u64))
}

/// Passes ([`advance`]) until the horizon is past every entry stamped so
/// far, waiting a little while a pass cannot settle yet: what a caller that
/// needs every entry's checkpoints and `balance_after` now (a test, the
/// benchmark after seeding) runs instead of waiting for the workers.
pub async fn catch_up(client: &mut tokio_postgres::Client, every: i64) -> Result<()> {
    let newest: Option<DateTime<Utc>> =
        client.query_one("SELECT max(created_at) FROM ledger_entries", &[]).await?.get(0);
    let Some(newest) = newest else { return Ok(()) };
    while horizon(&*client).await? < newest {
        if advance(client, every).await? != Some(0) {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The sum of the account's entries up to and including the one at
/// (`$2`, `$3`) in its order: its nearest checkpoint there or before, and
/// the entries after that checkpoint up to it.
const THROUGH_SQL: &str = "SELECT coalesce(c.balance, 0) + coalesce((SELECT sum(e.amount) FROM ledger_entries e \
         WHERE e.account_id = $1 \
           AND (e.created_at, e.id) > (coalesce(c.created_at, '-infinity'), coalesce(c.entry_id, 0)) \
           AND (e.created_at, e.id) <= ($2, $3)), 0) \
       FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT balance, created_at, entry_id FROM balance_checkpoints c \
              WHERE c.account_id = $1 AND (c.created_at, c.entry_id) <= ($2, $3) \
              ORDER BY c.created_at DESC, c.entry_id DESC LIMIT 1) c ON true";

/// The account's balance right after its entry `entry_id` stamped
/// `created_at`, which the caller knows to be at or before the horizon.
pub async fn balance_through(
    client: &impl GenericClient,
    account: Uuid,
    created_at: DateTime<Utc>,
    entry_id: i64,
) -> Result<Decimal> {
    Ok(client.query_one(THROUGH_SQL, &[&account, &created_at, &entry_id]).await?.get(0))
}

/// The account's entries as `accounts::entries` lists them (newest first in
/// the account's order), each at or before the history horizon with its
/// `balance_after`: the balance through the page's oldest such entry from
/// its nearest checkpoint ([`balance_through`]), then summed on up the page.
pub async fn entries(
    client: &impl GenericClient,
    tenant: TenantId,
    account: Uuid,
    limit: i64,
    cursor: Cursor<i64>,
) -> Result<Page<Entry>> {
    // read first: every entry stamped at or before it committed before it
    // was set, so the page's snapshot, taken after, holds them all
    let horizon = horizon(client).await?;
    let mut page = crate::accounts::entries(client, tenant, account, limit, cursor).await?;
    let data = &mut page.data;
    // the page's settled entries are its oldest ones, a contiguous run of
    // the account's order: the balance through the oldest, then upwards
    if let Some(oldest) = data.iter().rposition(|e| e.created_at <= horizon) {
        let e = &data[oldest];
        let currency = e.currency;
        let mut balance = balance_through(client, account, e.created_at, e.id).await?;
        data[oldest].balance_after = Some(currency.normalize(balance));
        for e in data[..oldest].iter_mut().rev() {
            if e.created_at > horizon {
                break;
            }
            balance += e.amount;
            e.balance_after = Some(currency.normalize(balance));
        }
    }
    Ok(page)
}
