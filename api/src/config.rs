//! Configuration from environment variables, with local defaults that work
//! on a developer machine as is.

use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ledger")]
    pub database_url: String,
    /// Address the HTTP server binds to.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Database connections in the pool.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// Milliseconds a request waits for a free connection before a 503.
    #[arg(long, env = "DB_POOL_WAIT_MS", default_value_t = 5000)]
    pub db_pool_wait_ms: u64,
    /// Milliseconds any statement waits for a row lock (a concurrent duplicate,
    /// a hot account) before the request gets 409 with Retry-After.
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 5000)]
    pub db_lock_timeout_ms: u64,
    /// Seconds an Idempotency-Key is kept and replayed (default 24 h).
    #[arg(long, env = "IDEMPOTENCY_RETENTION_SECS", default_value = "86400", value_parser = parse_secs)]
    pub idempotency_retention: Duration,
    /// Seconds a client may keep retrying a request with the same
    /// Idempotency-Key (the documented maximum retry window, default 24 h).
    /// IDEMPOTENCY_RETENTION_SECS must be at least this.
    #[arg(long, env = "CLIENT_MAX_RETRY_SECS", default_value_t = ledger::retention::CLIENT_MAX_RETRY_SECS)]
    pub client_max_retry_secs: u64,
    /// The workers' windows, read here too so that the API refuses to start
    /// with the same inconsistent settings the workers refuse (see
    /// `ledger::retention`).
    #[arg(long, env = "OUTBOX_RETENTION_SECS", default_value_t = ledger::retention::OUTBOX_SECS)]
    pub outbox_retention_secs: u64,
    #[arg(long, env = "INBOX_RETENTION_SECS", default_value_t = ledger::retention::INBOX_SECS)]
    pub inbox_retention_secs: u64,
    #[arg(long, env = "MAX_REDELIVERY_SECS", default_value_t = ledger::retention::MAX_REDELIVERY_SECS)]
    pub max_redelivery_secs: u64,
    /// Seconds between purges of expired Idempotency-Keys.
    #[arg(long, env = "IDEMPOTENCY_PURGE_INTERVAL_SECS", default_value = "300", value_parser = parse_secs)]
    pub idempotency_purge_interval: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16_384)]
    pub max_body_bytes: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Run pending migrations before serving.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = false)]
    pub migrate_on_start: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_secs).map_err(|e| e.to_string())
}

impl Config {
    /// The defaults, as the environment would give them with nothing set.
    pub fn local(database_url: &str) -> Config {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut c = Wrapper::parse_from(["ledger-api"]).config;
        c.database_url = database_url.to_owned();
        c
    }

    /// The retention windows these settings make.
    pub fn windows(&self) -> ledger::retention::Windows {
        ledger::retention::Windows {
            idempotency_secs: self.idempotency_retention.as_secs(),
            client_max_retry_secs: self.client_max_retry_secs,
            outbox_secs: self.outbox_retention_secs,
            inbox_secs: self.inbox_retention_secs,
            max_redelivery_secs: self.max_redelivery_secs,
        }
    }

    pub fn pool_options(&self) -> ledger::db::PoolOptions {
        ledger::db::PoolOptions {
            max_size: self.db_pool_size,
            wait_timeout: Duration::from_millis(self.db_pool_wait_ms),
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            verify_on_checkout: false,
        }
    }
}
