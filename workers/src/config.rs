//! Worker configuration from environment variables, with local defaults.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct Config {
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ledger")]
    pub database_url: String,
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10")]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name, so that environments (and
    /// tests) sharing a broker stay apart.
    #[arg(long, env = "AMQP_PREFIX", default_value = "ledger")]
    pub amqp_prefix: String,
    /// Unacknowledged deliveries a consumer holds at once.
    #[arg(long, env = "AMQP_PREFETCH", default_value_t = 100)]
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered.
    #[arg(long, env = "AMQP_DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: i64,
    /// Outbox rows the relay publishes per batch.
    #[arg(long, env = "RELAY_BATCH", default_value_t = 500)]
    pub relay_batch: i64,
    /// Milliseconds between outbox polls when no notification arrives.
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 1000)]
    pub relay_poll_ms: u64,
    /// Seconds a published outbox row is kept (default 7 days); also how
    /// far back `replay` can republish.
    #[arg(long, env = "OUTBOX_RETENTION_SECS", default_value_t = ledger::retention::OUTBOX_SECS)]
    pub outbox_retention_secs: u64,
    /// Seconds a consumer's inbox row (a handled message id) is kept
    /// (default 14 days). Must cover OUTBOX_RETENTION_SECS + MAX_REDELIVERY_SECS.
    #[arg(long, env = "INBOX_RETENTION_SECS", default_value_t = ledger::retention::INBOX_SECS)]
    pub inbox_retention_secs: u64,
    /// The longest a message can still arrive after its outbox row was
    /// marked published: a queue backlog, or a dead-lettered message waiting
    /// for its redrive (default 7 days). Redrive older messages only after
    /// checking their effects by hand.
    #[arg(long, env = "MAX_REDELIVERY_SECS", default_value_t = ledger::retention::MAX_REDELIVERY_SECS)]
    pub max_redelivery_secs: u64,
    /// The API's windows, read here too so that every process refuses the
    /// same inconsistent settings (see `ledger::retention`).
    #[arg(long, env = "IDEMPOTENCY_RETENTION_SECS", default_value_t = ledger::retention::IDEMPOTENCY_SECS)]
    pub idempotency_retention_secs: u64,
    #[arg(long, env = "CLIENT_MAX_RETRY_SECS", default_value_t = ledger::retention::CLIENT_MAX_RETRY_SECS)]
    pub client_max_retry_secs: u64,
    /// SMTP server for order emails, e.g. smtp://127.0.0.1:2525. When unset,
    /// emails are written as files into EMAIL_DIR instead.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    #[arg(long, env = "EMAIL_DIR", default_value = "target/emails")]
    pub email_dir: String,
    #[arg(long, env = "EMAIL_FROM", default_value = "orders@ledger.localhost")]
    pub email_from: String,
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,
}

impl Config {
    /// The defaults, as the environment would give them with nothing set.
    pub fn local(database_url: &str, amqp_prefix: &str) -> Config {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut c = Wrapper::parse_from(["ledger-workers"]).config;
        c.database_url = database_url.to_owned();
        c.amqp_prefix = amqp_prefix.to_owned();
        c
    }

    /// The retention windows these settings make.
    pub fn windows(&self) -> ledger::retention::Windows {
        ledger::retention::Windows {
            idempotency_secs: self.idempotency_retention_secs,
            client_max_retry_secs: self.client_max_retry_secs,
            outbox_secs: self.outbox_retention_secs,
            inbox_secs: self.inbox_retention_secs,
            max_redelivery_secs: self.max_redelivery_secs,
        }
    }

    pub fn pool(&self) -> Result<deadpool_postgres::Pool, String> {
        ledger::db::pool(
            &self.database_url,
            &ledger::db::PoolOptions { max_size: self.db_pool_size, verify_on_checkout: true, ..Default::default() },
        )
    }
}
