//! The transactional outbox. Events are written in the caller's transaction,
//! beside the effect they report, so there is never an effect without its
//! event nor an event without its effect. The relay publishes them.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};

use crate::db::Cached;
use uuid::Uuid;

use crate::{Result, TenantId};

pub const CHARGE_SUCCEEDED: &str = "charge.succeeded";
pub const CHARGE_REFUNDED: &str = "charge.refunded";
pub const RESERVATION_HELD: &str = "reservation.held";
pub const RESERVATION_RELEASED: &str = "reservation.released";
pub const RESERVATION_COMMITTED: &str = "reservation.committed";

/// The statement that writes an event (`ledger-bench` runs it in pgbench too).
pub const ENQUEUE_SQL: &str =
    "INSERT INTO outbox (message_id, tenant_id, event_type, order_id, payload) VALUES ($1, $2, $3, $4, $5)";

/// The version of the event payloads this code writes.
pub const VERSION: u32 = 1;

/// What goes over the wire: the same bytes every time the event is published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub message_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub tenant_id: Uuid,
    pub order_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub data: T,
}

/// Writes an event into the outbox within `tx`; returns its message id.
pub async fn enqueue(
    tx: &Transaction<'_>,
    tenant: TenantId,
    event_type: &str,
    order_id: Option<&str>,
    data: &impl Serialize,
) -> Result<Uuid> {
    let envelope = Envelope {
        message_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        version: VERSION,
        tenant_id: tenant.0,
        order_id: order_id.map(str::to_owned),
        occurred_at: Utc::now(),
        data,
    };
    let payload = serde_json::to_value(&envelope).expect("events serialize");
    tx.cached_execute(ENQUEUE_SQL, &[&envelope.message_id, &tenant.0, &event_type, &order_id, &payload]).await?;
    Ok(envelope.message_id)
}
