//! The API's configuration: the settings shared with the workers (database,
//! retention windows; `service::settings`) and its own.

use std::time::Duration;

use clap::Args;
use service::settings::{Database, Gateway, Retention};

#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub database: Database,
    #[command(flatten)]
    pub retention: Retention,
    #[command(flatten)]
    pub gateway: Gateway,
    /// Address the HTTP server binds to.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Address of a listener of its own that serves `GET /metrics` (e.g.
    /// 127.0.0.1:9186); unset: not served. Never on HTTP_ADDR: the metrics
    /// count every tenant's requests and declines.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Seconds between purges of expired Idempotency-Keys.
    #[arg(long, env = "IDEMPOTENCY_PURGE_INTERVAL_SECS", default_value_t = 300)]
    pub idempotency_purge_interval_secs: u64,
    /// Whether a webhook endpoint may name a private, loopback or
    /// link-local address (`service::destinations`): for local runs and
    /// tests only; `make run` sets it.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16_384)]
    pub max_body_bytes: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Run pending migrations before serving.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = false)]
    pub migrate_on_start: bool,
    /// Requests per second each tenant may make to this process, on average
    /// (its token bucket's refill; 0: no limit). A tenant's own limit
    /// (`ledger-api set-rate-limit`) replaces it and RATE_LIMIT_BURST.
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 100)]
    pub rate_limit_per_sec: u32,
    /// Requests a tenant may make at once after a quiet spell (its token
    /// bucket's size).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// Milliseconds a looked-up API key is trusted without asking the
    /// database again (0: ask on every request): the longest a revoked key
    /// keeps working on this process. A key found unknown is remembered as
    /// unknown for as long.
    #[arg(long, env = "API_KEY_CACHE_MS", default_value_t = 2000)]
    pub api_key_cache_ms: u64,
    /// Failed authentications (wrong, revoked or malformed API keys) per
    /// second each client address may make on average before its keys are
    /// refused with 429 without a lookup (0: no limit).
    #[arg(long, env = "AUTH_FAILURES_PER_SEC", default_value_t = 2)]
    pub auth_failures_per_sec: u32,
    /// Failed authentications a client address may make at once after a
    /// quiet spell.
    #[arg(long, env = "AUTH_FAILURES_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failures_burst: u32,
    /// Seconds between the batched writes of the keys' `last_used_at` (one
    /// statement for every key used since the last one; also at shutdown).
    #[arg(long, env = "API_KEY_LAST_USED_FLUSH_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub api_key_last_used_flush_secs: u64,
    /// Most new wallet charges committed in one database transaction
    /// (group commit); 1: every charge runs alone.
    #[arg(long, env = "CHARGE_BATCH_MAX", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub charge_batch_max: u32,
    /// Microseconds a batch of charges waits to fill while other batches
    /// are in flight (0: never). On an idle service a request never waits.
    #[arg(long, env = "CHARGE_BATCH_WINDOW_US", default_value_t = 1000)]
    pub charge_batch_window_us: u64,
    /// Batches of charges in flight at once, each on its own connection.
    #[arg(long, env = "CHARGE_BATCH_CONCURRENCY", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub charge_batch_concurrency: u32,
}

/// Pool size when DB_POOL_SIZE is unset.
pub const DEFAULT_POOL_SIZE: usize = 16;

impl Config {
    /// The defaults (and whatever the environment sets), for `database_url`.
    pub fn local(database_url: &str) -> Config {
        let mut c: Config = service::settings::from_env();
        c.database.database_url = database_url.to_owned();
        c
    }

    /// The request path skips the connection check on checkout: a request
    /// that meets a dead connection gets a 503 and its retry runs afresh.
    pub fn pool_options(&self) -> ledger::db::PoolOptions {
        self.database.pool_options(DEFAULT_POOL_SIZE, false)
    }

    /// How charges are batched, or `None` when every charge runs alone.
    pub fn charge_batches(&self) -> Option<crate::idempotency::batches::Shape> {
        (self.charge_batch_max > 1).then(|| crate::idempotency::batches::Shape {
            max: self.charge_batch_max as usize,
            window: Duration::from_micros(self.charge_batch_window_us),
            concurrency: self.charge_batch_concurrency as usize,
        })
    }

    pub fn idempotency_purge_interval(&self) -> Duration {
        Duration::from_secs(self.idempotency_purge_interval_secs)
    }

    /// Every tenant's rate limit in this process, unless it has its own.
    pub fn rate_limit(&self) -> ledger::tenants::RateLimit {
        ledger::tenants::RateLimit { per_sec: self.rate_limit_per_sec, burst: self.rate_limit_burst }
    }

    pub fn auth_failures(&self) -> ledger::tenants::RateLimit {
        ledger::tenants::RateLimit { per_sec: self.auth_failures_per_sec, burst: self.auth_failures_burst }
    }

    pub fn api_key_cache(&self) -> Duration {
        Duration::from_millis(self.api_key_cache_ms)
    }

    pub fn api_key_last_used_flush(&self) -> Duration {
        Duration::from_secs(self.api_key_last_used_flush_secs)
    }
}
