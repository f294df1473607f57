//! The workers' configuration: the settings shared with the API (database,
//! retention windows; `service::settings`) and their own.

use clap::Args;
use service::settings::{Database, Gateway, Retention, WorkersMetrics};

#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub database: Database,
    #[command(flatten)]
    pub retention: Retention,
    #[command(flatten)]
    pub metrics: WorkersMetrics,
    #[command(flatten)]
    pub gateway: Gateway,
    /// Milliseconds between the completer's scans for card charges left
    /// `processing` past their lease.
    #[arg(long, env = "COMPLETER_POLL_MS", default_value_t = 1000)]
    pub completer_poll_ms: u64,
    /// Milliseconds between the expirer's scans for authorizations past
    /// their deadline.
    #[arg(long, env = "EXPIRER_POLL_MS", default_value_t = 1000)]
    pub expirer_poll_ms: u64,
    /// Milliseconds between the webhooks worker's scans for due deliveries.
    #[arg(long, env = "WEBHOOK_POLL_MS", default_value_t = 500)]
    pub webhook_poll_ms: u64,
    /// How long an endpoint has to answer one attempt (a 2xx in time is a
    /// delivery; anything else is retried).
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// The waits between a delivery's attempts, in seconds, comma-separated:
    /// about three days in all by default; once they run out the delivery
    /// is failed. Each wait gets up to a tenth more, at random (jitter).
    #[arg(long, env = "WEBHOOK_SCHEDULE", default_value = "5,300,1800,7200,18000,36000,36000,36000,36000,36000,36000")]
    pub webhook_schedule: String,
    /// Deliveries in flight at once, and of them at most this many to any
    /// one endpoint: one slow or dead endpoint never takes the others' turn.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    #[arg(long, env = "WEBHOOK_PER_ENDPOINT", default_value_t = 2)]
    pub webhook_per_endpoint: usize,
    /// How long an endpoint may fail every attempt before it is disabled
    /// (with `webhook_endpoint.disabled`), in seconds: 3 days by default.
    #[arg(long, env = "WEBHOOK_DISABLE_AFTER_SECS", default_value_t = 259_200)]
    pub webhook_disable_after_secs: u64,
    /// Whether a webhook may go to a private, loopback or link-local
    /// address (`service::destinations`): local runs and tests only.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10")]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name, so that environments (and
    /// tests) sharing a broker stay apart.
    #[arg(long, env = "AMQP_PREFIX", default_value = "ledger")]
    pub amqp_prefix: String,
    /// Unacknowledged deliveries a consumer holds at once.
    #[arg(long, env = "AMQP_PREFETCH", default_value_t = 100)]
    pub prefetch: u16,
    /// Most deliveries the inventory worker applies in one database
    /// transaction (those already prefetched; it never waits for more).
    #[arg(long, env = "INVENTORY_BATCH", default_value_t = 100)]
    pub inventory_batch: usize,
    /// Failures of a message's own (not a database outage, not a lost
    /// connection) before the consumer dead-letters it; counted by each
    /// worker process.
    #[arg(long, env = "AMQP_DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: i64,
    /// The consumers' queues' `x-delivery-limit`, a backstop: RabbitMQ 3.10
    /// counts every return of a message, and each lost connection returns
    /// all the unacknowledged deliveries of its consumer. A queue's
    /// argument: RabbitMQ refuses a redeclare with another value
    /// (PRECONDITION_FAILED), so it is the same for every process.
    #[arg(long, env = "AMQP_QUEUE_DELIVERY_LIMIT", default_value_t = 1000)]
    pub queue_delivery_limit: i64,
    /// Outbox rows the relay publishes per batch.
    #[arg(long, env = "RELAY_BATCH", default_value_t = 500)]
    pub relay_batch: i64,
    /// Milliseconds between outbox polls once the outbox is drained (a
    /// backlog is drained without pause). Polled, not notified: a NOTIFY
    /// would serialize the commits of every transaction that writes an
    /// event (migration `outbox_without_notify`).
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 50)]
    pub relay_poll_ms: u64,
    /// SMTP server for order emails, e.g. smtp://127.0.0.1:2525. When unset,
    /// emails are written as files into EMAIL_DIR instead.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    #[arg(long, env = "EMAIL_DIR", default_value = "target/emails")]
    pub email_dir: String,
    #[arg(long, env = "EMAIL_FROM", default_value = "orders@ledger.localhost")]
    pub email_from: String,
}

/// Pool size when DB_POOL_SIZE is unset.
pub const DEFAULT_POOL_SIZE: usize = 8;

impl Config {
    /// The defaults (and whatever the environment sets), for `database_url`
    /// and the broker names under `amqp_prefix`.
    pub fn local(database_url: &str, amqp_prefix: &str) -> Config {
        let mut c: Config = service::settings::from_env();
        c.database.database_url = database_url.to_owned();
        c.amqp_prefix = amqp_prefix.to_owned();
        c
    }

    /// How long one unit of database work may take before the worker gives
    /// it up as unanswered (`in_database`): longer than anything PostgreSQL
    /// itself bounds (a checkout's wait, a lock wait, a statement), so that
    /// a server that is only slow answers with its own error first.
    pub fn database_bound(&self) -> std::time::Duration {
        let d = &self.database;
        let statement = match d.db_statement_timeout_ms {
            0 => 30_000,
            ms => ms,
        };
        std::time::Duration::from_millis(d.db_pool_wait_ms + statement.max(d.db_lock_timeout_ms) + 15_000)
    }

    /// The workers' pool checks each connection on checkout, so a database
    /// restart costs a message one failed attempt, not one per dead pooled
    /// connection (which could exhaust its delivery limit).
    pub fn pool(&self) -> ledger::Result<deadpool_postgres::Pool> {
        self.database.pool(DEFAULT_POOL_SIZE, true)
    }
}
