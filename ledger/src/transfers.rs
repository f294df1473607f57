//! Transfers: money from one account to another of the same tenant and
//! currency, e.g. funding a buyer's wallet from an external-funds account.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;

use crate::db::Cached;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::money::Currency;
use crate::pagination::{Cursor, Filters, Page};
use crate::posting::{lock_debited, post};
use crate::{Error, Outcome, Result, TenantId};

#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: Uuid,
    pub source_account_id: Uuid,
    pub destination_account_id: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub description: Option<String>,
    /// The ledger transaction that moved the money.
    pub transaction_id: Uuid,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, source_account_id, destination_account_id, amount, currency, description, transaction_id, created_at";

fn from_row(row: &Row) -> Result<Transfer> {
    let currency = crate::stored::currency(row.get(4))?;
    Ok(Transfer {
        id: row.get(0),
        source_account_id: row.get(1),
        destination_account_id: row.get(2),
        amount: currency.normalize(row.get(3)),
        currency,
        description: row.get(5),
        transaction_id: row.get(6),
        created_at: row.get(7),
    })
}

pub struct NewTransfer<'a> {
    pub source: Uuid,
    pub destination: Uuid,
    pub amount: Decimal,
    pub currency: Currency,
    pub description: Option<&'a str>,
}

/// Moves the money, or declines when the source would go below its floor.
pub async fn create(tx: &Transaction<'_>, tenant: TenantId, new: &NewTransfer<'_>) -> Result<Outcome<Transfer>> {
    if new.source == new.destination {
        return Err(Error::SameAccount);
    }
    let locked = lock_debited(tx, tenant, &[new.source, new.destination], &[new.source], new.currency).await?;
    let legs = [(new.source, -new.amount), (new.destination, new.amount)];
    let transaction_id = match post(tx, tenant, "transfer", new.currency, &locked, &legs).await? {
        Ok(id) => id,
        Err(decline) => return Ok(Outcome::Declined(decline)),
    };
    let row = tx
        .cached_one(
            &format!(
                "INSERT INTO transfers (id, tenant_id, source_account_id, destination_account_id, amount, currency, description, transaction_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &tenant.0,
                &new.source,
                &new.destination,
                &new.amount,
                &new.currency.code(),
                &new.description,
                &transaction_id,
            ],
        )
        .await?;
    Ok(Outcome::Applied(from_row(&row)?))
}

pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Transfer> {
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM transfers WHERE id = $1 AND tenant_id = $2"), &[&id, &tenant.0])
        .await?
        .ok_or(Error::TransferNotFound(id))?;
    from_row(&row)
}

/// Which of a tenant's transfers a list holds; every filter is optional.
#[derive(Debug, Default)]
pub struct TransferFilter {
    /// Transfers from or to this account.
    pub account_id: Option<Uuid>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
}

/// The tenant's transfers that pass `filter`, newest first, `limit` (1 to
/// [`MAX_PAGE`](crate::pagination::MAX_PAGE)) from `cursor`. A cursor must
/// be one of the tenant's transfers (else `TransferNotFound`, as for any id
/// of another tenant's).
///
/// An account's transfers are the page of those it sent and the page of
/// those it received, each read from its own index (`(tenant_id,
/// source_account_id, id)`, `(tenant_id, destination_account_id, id)`),
/// merged: two index probes and at most twice the page, never a scan of
/// the account's history. A transfer's two accounts differ (a CHECK), so the
/// two never hold the same transfer. Without an account the page is read
/// from `(tenant_id, id)`.
pub async fn list(
    client: &impl GenericClient,
    tenant: TenantId,
    filter: &TransferFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Transfer>> {
    if let Some(id) = cursor.item() {
        let known = client
            .query_opt("SELECT 1 FROM transfers WHERE id = $1 AND tenant_id = $2", &[&id, &tenant.0])
            .await?
            .is_some();
        if !known {
            return Err(Error::TransferNotFound(id));
        }
    }
    let (sql, params) = list_statement(tenant, filter, cursor, limit);
    let rows = client.query(&sql, &params.params()).await?;
    let data = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    Ok(Page::read(data, limit, cursor))
}

/// The statement [`list`] runs for `filter` and `cursor` (its text depends
/// on which filters are given and on the cursor, not on their values).
pub fn list_sql(filter: &TransferFilter, cursor: Cursor) -> String {
    list_statement(TenantId(Uuid::nil()), filter, cursor, 0).0
}

/// A page's statement: the given filters only, so that its generic plan
/// reads each page from its index at the cursor
/// ([`Filters`](crate::pagination::Filters)).
fn list_statement(tenant: TenantId, filter: &TransferFilter, cursor: Cursor, limit: i64) -> (String, Filters<'static>) {
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("tenant_id =", tenant.0);
    let account = filter.account_id.map(|id| w.bind(id));
    w.and_some("created_at >=", filter.created_gte);
    w.and_some("created_at <", filter.created_lt);
    w.cursor("id", cursor, cursor.item());
    let limit = w.bind(limit + 1);
    let filters = w.sql();
    let sql = match account {
        None => format!("SELECT {COLUMNS} FROM transfers WHERE {filters} ORDER BY id {order} LIMIT {limit}"),
        Some(account) => {
            let page = |side: &str| {
                format!(
                    "(SELECT {COLUMNS} FROM transfers WHERE {side} = {account} AND {filters} \
                      ORDER BY id {order} LIMIT {limit})"
                )
            };
            format!(
                "SELECT {COLUMNS} FROM ({} UNION ALL {}) t ORDER BY id {order} LIMIT {limit}",
                page("source_account_id"),
                page("destination_account_id"),
            )
        }
    };
    (sql, w)
}
