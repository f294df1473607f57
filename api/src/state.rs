//! What every handler shares: the database pool and the configuration.

use deadpool_postgres::Pool;

use crate::config::Config;

pub struct AppState {
    pub pool: Pool,
    pub config: Config,
}
