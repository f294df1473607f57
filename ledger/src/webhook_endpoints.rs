//! Webhook endpoints: where a tenant's storefront wants its events pushed.
//! Each has its signing secret (shown to the tenant once, when it is made
//! or rotated), the event types it is subscribed to (`*`: all), and
//! whether it is enabled. A rotation keeps the previous secret valid (it
//! signs beside the new one) until its expiry. A deleted endpoint keeps its
//! row, is never listed nor delivered to again, and its id is not found.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::db::Cached;
use crate::pagination::{Cursor, Filters, Page};
use crate::{Error, Outcome, Result, TenantId};

/// Every event type an endpoint may subscribe to (`*` stands for all).
pub const EVENT_TYPES: &[&str] = &[
    "charge.succeeded",
    "charge.refunded",
    "charge.refund_failed",
    "charge.authorized",
    "charge.captured",
    "charge.voided",
    "reservation.held",
    "reservation.released",
    "reservation.committed",
    "webhook_endpoint.disabled",
];

/// All event types, in `enabled_events`.
pub const ALL: &str = "*";

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub enabled_events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Set when it was deleted (only what a deletion answers shows it).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Since when every attempt to it has failed (none since a delivery).
    pub failing_since: Option<DateTime<Utc>>,
    /// Why the service disabled it, until it is enabled again.
    pub disabled_reason: Option<String>,
}

/// An endpoint with its current signing secret: what its creation and a
/// rotation answer, once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    pub endpoint: Endpoint,
    pub secret: String,
}

const COLUMNS: &str = "id, url, description, enabled_events, enabled, created_at, updated_at, \
                       previous_secret_expires_at, deleted_at, secret, failing_since, disabled_reason";

fn from_row(row: &Row) -> WithSecret {
    WithSecret {
        endpoint: Endpoint {
            id: row.get(0),
            url: row.get(1),
            description: row.get(2),
            enabled_events: row.get(3),
            enabled: row.get(4),
            created_at: row.get(5),
            updated_at: row.get(6),
            previous_secret_expires_at: row.get(7),
            deleted_at: row.get(8),
            failing_since: row.get(10),
            disabled_reason: row.get(11),
        },
        secret: row.get(9),
    }
}

/// A new endpoint as asked for (its URL and events already checked).
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub enabled_events: &'a [String],
    pub secret: &'a str,
}

pub async fn create(tx: &Transaction<'_>, tenant: TenantId, new: &NewEndpoint<'_>) -> Result<Outcome<WithSecret>> {
    let row = tx
        .cached_one(
            &format!(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, description, enabled_events, secret) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[&Uuid::now_v7(), &tenant.0, &new.url, &new.description, &new.enabled_events, &new.secret],
        )
        .await?;
    Ok(Outcome::Applied(from_row(&row)))
}

pub async fn get(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Endpoint> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL"),
            &[&id, &tenant.0],
        )
        .await?
        .ok_or(Error::WebhookEndpointNotFound(id))?;
    Ok(from_row(&row).endpoint)
}

/// The tenant's live endpoints, newest first, `limit` from `cursor` (one
/// of them, else `WebhookEndpointNotFound`).
pub async fn list(client: &impl GenericClient, tenant: TenantId, cursor: Cursor, limit: i64) -> Result<Page<Endpoint>> {
    if let Some(id) = cursor.item() {
        get(client, tenant, id).await?;
    }
    let (_, order) = cursor.sql();
    let mut w = Filters::new();
    w.and("tenant_id =", tenant.0).push("deleted_at IS NULL".to_owned()).cursor("id", cursor, cursor.item());
    let limit_param = w.bind(limit + 1);
    let sql =
        format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE {} ORDER BY id {order} LIMIT {limit_param}", w.sql());
    let rows = client.query(&sql, &w.params()).await?;
    Ok(Page::read(rows.iter().map(|r| from_row(r).endpoint).collect(), limit, cursor))
}

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Change<'a> {
    pub url: Option<&'a str>,
    /// `Some(None)` clears it.
    pub description: Option<Option<&'a str>>,
    pub enabled_events: Option<&'a [String]>,
    pub enabled: Option<bool>,
}

pub async fn update(client: &impl GenericClient, tenant: TenantId, id: Uuid, change: &Change<'_>) -> Result<Endpoint> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET url = coalesce($3, url), \
                        description = CASE WHEN $4 THEN $5 ELSE description END, \
                        enabled_events = coalesce($6, enabled_events), enabled = coalesce($7, enabled), \
                        disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END, \
                        failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END, \
                        updated_at = now() \
                  WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &tenant.0,
                &change.url,
                &change.description.is_some(),
                &change.description.flatten(),
                &change.enabled_events,
                &change.enabled,
            ],
        )
        .await?
        .ok_or(Error::WebhookEndpointNotFound(id))?;
    Ok(from_row(&row).endpoint)
}

/// Deletes an endpoint: it is delivered to no more, and not found again.
pub async fn delete(client: &impl GenericClient, tenant: TenantId, id: Uuid) -> Result<Endpoint> {
    let row = client
        .query_opt(
            &format!(
                "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, updated_at = now() \
                  WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
            ),
            &[&id, &tenant.0],
        )
        .await?
        .ok_or(Error::WebhookEndpointNotFound(id))?;
    Ok(from_row(&row).endpoint)
}

/// Replaces the signing secret with `secret`; the one it replaces still
/// signs for `overlap` seconds (none when 0).
pub async fn rotate(
    tx: &Transaction<'_>,
    tenant: TenantId,
    id: Uuid,
    secret: &str,
    overlap_secs: i64,
) -> Result<Outcome<WithSecret>> {
    let row = tx
        .cached_opt(
            &format!(
                "UPDATE webhook_endpoints \
                    SET previous_secret = CASE WHEN $4::float8 > 0 THEN secret END, \
                        previous_secret_expires_at = CASE WHEN $4::float8 > 0 THEN now() + make_interval(secs => $4) END, \
                        secret = $3, updated_at = now() \
                  WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {COLUMNS}"
            ),
            &[&id, &tenant.0, &secret, &(overlap_secs as f64)],
        )
        .await?
        .ok_or(Error::WebhookEndpointNotFound(id))?;
    Ok(Outcome::Applied(from_row(&row)))
}

/// The secrets a delivery to the endpoint is signed with now: the current
/// one, and the previous one until its expiry.
pub async fn signing_secrets(client: &impl GenericClient, id: Uuid) -> Result<Vec<String>> {
    let row = client
        .query_opt(
            "SELECT secret, CASE WHEN previous_secret_expires_at > now() THEN previous_secret END \
               FROM webhook_endpoints WHERE id = $1",
            &[&id],
        )
        .await?
        .ok_or(Error::WebhookEndpointNotFound(id))?;
    Ok(std::iter::once(row.get(0)).chain(row.get::<_, Option<String>>(1)).collect())
}
