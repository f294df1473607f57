//! Transfers: money from one account to another of the same tenant and
//! currency, e.g. funding a buyer's wallet from an external-funds account.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::db::Cached;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::money::Currency;
use crate::posting::{lock_accounts, post};
use crate::{Error, Result, TenantId};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Transfer {
    pub id: Uuid,
    pub source_account_id: Uuid,
    pub destination_account_id: Uuid,
    #[schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "100.00")]
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
    let currency: Currency = row.get::<_, String>(4).parse()?;
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

pub async fn create(tx: &Transaction<'_>, tenant: TenantId, new: &NewTransfer<'_>) -> Result<Transfer> {
    if new.source == new.destination {
        return Err(Error::SameAccount);
    }
    let locked = lock_accounts(tx, tenant, &[new.source, new.destination], new.currency).await?;
    let transaction_id = post(
        tx,
        tenant,
        "transfer",
        new.currency,
        &locked,
        &[(new.source, -new.amount), (new.destination, new.amount)],
    )
    .await?;
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
    from_row(&row)
}

pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Transfer> {
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM transfers WHERE id = $1 AND tenant_id = $2"), &[&id, &tenant.0])
        .await?
        .ok_or(Error::TransferNotFound(id))?;
    from_row(&row)
}
