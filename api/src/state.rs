//! What every handler shares: the database pool, the configuration and the
//! API key cache.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::config::Config;
use crate::keys::Keys;

pub struct AppState {
    pub pool: Pool,
    pub config: Config,
    pub keys: Arc<Keys>,
}
