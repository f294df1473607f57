//! What every handler shares: the database pool, the configuration, the API
//! key cache, the tenants' rate limits, the failed authentications per
//! address and the payment provider.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::config::Config;
use crate::idempotency::batches::Batcher;
use crate::idempotency::keyed::Keyed;
use crate::keys::Keys;
use crate::limits::{FailedAuths, RateLimits};

pub struct AppState {
    pub pool: Pool,
    pub config: Config,
    pub keys: Arc<Keys>,
    pub limits: RateLimits,
    pub failed_auths: FailedAuths,
    pub provider: service::provider::Provider,
    /// Group commit of new wallet charges; `None` when CHARGE_BATCH_MAX is 1.
    pub batcher: Option<Batcher<Keyed<crate::idempotency::charge_batch::Charges>>>,
    /// Group commit of new reservations (the same shape).
    pub reservations: Option<Batcher<Keyed<crate::idempotency::reservation_batch::Reservations>>>,
    /// Card payments recorded in batches (the same shape as `batcher`).
    pub card_records: Option<Batcher<crate::idempotency::card_records::CardRecords>>,
    /// New card charges' first transactions, batched when batching is on.
    pub card_begins: Option<Batcher<Keyed<crate::idempotency::card_begins::CardBegins>>>,
}
