//! Settings that both binaries read, declared once. Each binary's own
//! configuration flattens the groups it needs beside its own settings.
//! Every setting is an environment variable, and a flag of the same name in
//! kebab case.

use std::time::Duration;

use clap::{Args, FromArgMatches};
use ledger::db::{Keepalives, PoolOptions};
use ledger::retention::{self, Windows};

/// The database and the pool of connections to it.
#[derive(Debug, Clone, Args)]
pub struct Database {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ledger")]
    pub database_url: String,
    /// Connections in the pool (default: 16 for the API, 8 for the workers).
    #[arg(long, env = "DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
    /// Milliseconds a caller waits for a free connection before it is refused
    /// (a request gets 503).
    #[arg(long, env = "DB_POOL_WAIT_MS", default_value_t = 5000)]
    pub db_pool_wait_ms: u64,
    /// Milliseconds any statement waits for a row lock (a concurrent
    /// duplicate, a hot account) before it gives up (a request gets 409 with
    /// Retry-After).
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 5000)]
    pub db_lock_timeout_ms: u64,
    /// Milliseconds any statement may run before PostgreSQL cancels it (a
    /// request gets 503; 0: no limit). Keep it above DB_LOCK_TIMEOUT_MS.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub db_statement_timeout_ms: u64,
    /// Milliseconds a connection may sit idle inside an open transaction
    /// before PostgreSQL ends its session and releases its locks (0: no
    /// limit): what frees the rows a frozen or vanished process held.
    #[arg(long, env = "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_idle_in_transaction_timeout_ms: u64,
    /// Seconds of silence on a database connection before TCP keepalive
    /// probes start, on both ends.
    #[arg(long, env = "DB_KEEPALIVES_IDLE_SECS", default_value_t = 10)]
    pub db_keepalives_idle_secs: u64,
    /// Seconds between TCP keepalive probes.
    #[arg(long, env = "DB_KEEPALIVES_INTERVAL_SECS", default_value_t = 5)]
    pub db_keepalives_interval_secs: u64,
    /// Unanswered probes before a connection is given up.
    #[arg(long, env = "DB_KEEPALIVES_RETRIES", default_value_t = 3)]
    pub db_keepalives_retries: u32,
}

impl Database {
    /// The pool these settings make; `default_size` when DB_POOL_SIZE is unset.
    pub fn pool(&self, default_size: usize, verify_on_checkout: bool) -> ledger::Result<deadpool_postgres::Pool> {
        ledger::db::pool(&self.database_url, &self.pool_options(default_size, verify_on_checkout))
    }

    pub fn pool_options(&self, default_size: usize, verify_on_checkout: bool) -> PoolOptions {
        PoolOptions {
            max_size: self.db_pool_size.unwrap_or(default_size),
            wait_timeout: Duration::from_millis(self.db_pool_wait_ms),
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(self.db_idle_in_transaction_timeout_ms),
            keepalives: Keepalives {
                idle: Duration::from_secs(self.db_keepalives_idle_secs),
                interval: Duration::from_secs(self.db_keepalives_interval_secs),
                retries: self.db_keepalives_retries,
            },
            verify_on_checkout,
        }
    }
}

/// Where the workers serve their Prometheus metrics (the API serves its
/// own at `/metrics` on HTTP_ADDR).
#[derive(Debug, Clone, Args)]
pub struct WorkersMetrics {
    /// Address of the workers' `GET /metrics` (e.g. 127.0.0.1:9187); unset:
    /// not served. Each workers process needs an address of its own.
    #[arg(long, env = "WORKERS_METRICS_ADDR")]
    pub workers_metrics_addr: Option<String>,
}

/// Every retention window. Both binaries read all of them, so that every
/// process refuses the same inconsistent settings (see `ledger::retention`).
#[derive(Debug, Clone, Args)]
pub struct Retention {
    /// Seconds an Idempotency-Key is kept and replayed (default 24 h).
    #[arg(long, env = "IDEMPOTENCY_RETENTION_SECS", default_value_t = retention::IDEMPOTENCY_SECS)]
    pub idempotency_retention_secs: u64,
    /// Seconds a client may keep retrying a request with the same
    /// Idempotency-Key (the documented maximum retry window, default 24 h).
    /// IDEMPOTENCY_RETENTION_SECS must be at least this.
    #[arg(long, env = "CLIENT_MAX_RETRY_SECS", default_value_t = retention::CLIENT_MAX_RETRY_SECS)]
    pub client_max_retry_secs: u64,
    /// Seconds a published outbox row is kept (default 7 days); also how far
    /// back `replay` can republish.
    #[arg(long, env = "OUTBOX_RETENTION_SECS", default_value_t = retention::OUTBOX_SECS)]
    pub outbox_retention_secs: u64,
    /// Seconds a consumer's inbox row (a handled message id) is kept
    /// (default 14 days). Must cover OUTBOX_RETENTION_SECS + MAX_REDELIVERY_SECS.
    #[arg(long, env = "INBOX_RETENTION_SECS", default_value_t = retention::INBOX_SECS)]
    pub inbox_retention_secs: u64,
    /// The longest a message can still arrive after its outbox row was
    /// marked published: a queue backlog, or a dead-lettered message waiting
    /// for its redrive (default 7 days). Redrive older messages only after
    /// checking their effects by hand.
    #[arg(long, env = "MAX_REDELIVERY_SECS", default_value_t = retention::MAX_REDELIVERY_SECS)]
    pub max_redelivery_secs: u64,
}

impl Retention {
    /// The retention windows these settings make.
    pub fn windows(&self) -> Windows {
        Windows {
            idempotency_secs: self.idempotency_retention_secs,
            client_max_retry_secs: self.client_max_retry_secs,
            outbox_secs: self.outbox_retention_secs,
            inbox_secs: self.inbox_retention_secs,
            max_redelivery_secs: self.max_redelivery_secs,
        }
    }

    pub fn idempotency(&self) -> Duration {
        Duration::from_secs(self.idempotency_retention_secs)
    }

    pub fn outbox(&self) -> Duration {
        Duration::from_secs(self.outbox_retention_secs)
    }

    pub fn inbox(&self) -> Duration {
        Duration::from_secs(self.inbox_retention_secs)
    }
}

/// The payment provider card charges go through, and the keys sent to it.
/// The defaults point at the local fake provider (`make run` starts it on
/// 127.0.0.1:12111 with the same secrets); a real provider's test mode needs
/// only GATEWAY_URL, GATEWAY_SECRET_KEY and GATEWAY_WEBHOOK_SECRET.
#[derive(Clone, Args)]
pub struct Gateway {
    /// Base URL of the provider's API (Stripe's shape).
    #[arg(long, env = "GATEWAY_URL", default_value = gateway::DEFAULT_URL)]
    pub gateway_url: String,
    /// The provider's secret API key (sent as a bearer token).
    #[arg(long, env = "GATEWAY_SECRET_KEY", default_value = "sk_test_ledger_local", hide_default_value = true)]
    pub gateway_secret_key: String,
    /// The secret the provider signs its webhooks with (`whsec_...`).
    #[arg(long, env = "GATEWAY_WEBHOOK_SECRET", default_value = "whsec_ledger_local", hide_default_value = true)]
    pub gateway_webhook_secret: String,
    /// Milliseconds one provider request may take, connection and body
    /// included; past it the outcome is unknown and the charge stays
    /// `processing`.
    #[arg(long, env = "GATEWAY_TIMEOUT_MS", default_value_t = 10_000)]
    pub gateway_timeout_ms: u64,
    /// The server secret provider keys are an HMAC under: a key is a pure
    /// function of (tenant, order, attempt) that nobody without this secret
    /// can guess. Never change it while charges are processing.
    #[arg(
        long,
        env = "GATEWAY_KEY_SECRET",
        default_value = "ledger-local-provider-key-secret",
        hide_default_value = true
    )]
    pub gateway_key_secret: String,
    /// Seconds the provider keeps an Idempotency-Key (Stripe: 24 h). A
    /// charge older than this is looked up at the provider by its metadata
    /// before it is ever sent again.
    #[arg(long, env = "GATEWAY_KEY_WINDOW_SECS", default_value_t = 86_400)]
    pub gateway_key_window_secs: u64,
    /// Seconds the provider may take to show what a send did (Stripe's
    /// search lags up to a minute; look-ups here list, which does not, but a
    /// slow first send may still be running). A charge or refund whose key
    /// the provider answers with a stored 5xx is given up (`failed`,
    /// `provider_error`: a new attempt or reference may follow) only when it
    /// was first sent longer ago than this and a look-up finds nothing.
    #[arg(long, env = "GATEWAY_SEARCH_LAG_SECS", default_value_t = 60)]
    pub gateway_search_lag_secs: u64,
    /// Seconds a request (or the completer) holds a processing card charge
    /// before the completer may take it over with the same provider key.
    /// Keep it above GATEWAY_TIMEOUT_MS.
    #[arg(long, env = "CARD_LEASE_SECS", default_value_t = 30)]
    pub card_lease_secs: u64,
    /// Seconds a buyer has to finish a card payment's authentication (3-D
    /// Secure) from its first send; past it the completer cancels the
    /// payment at the provider and the charge fails, so the next attempt may
    /// follow.
    #[arg(long, env = "GATEWAY_ACTION_WINDOW_SECS", default_value_t = 900)]
    pub gateway_action_window_secs: u64,
    /// Seconds a webhook's signature timestamp may be away from now.
    #[arg(long, env = "GATEWAY_WEBHOOK_TOLERANCE_SECS", default_value_t = 300)]
    pub gateway_webhook_tolerance_secs: u64,
    /// Accept the fake provider's published development secrets with a
    /// GATEWAY_URL that is not on this machine (a shared development
    /// provider). Never in production: anyone can sign webhooks with them.
    #[arg(long, env = "GATEWAY_ALLOW_DEVELOPMENT_SECRETS", default_value_t = false)]
    pub gateway_allow_development_secrets: bool,
}

/// The development secrets this repository publishes (the fake provider's
/// defaults): safe only against a fake on this machine.
const PUBLISHED_SECRETS: [(&str, &str); 3] = [
    ("GATEWAY_SECRET_KEY", "sk_test_ledger_local"),
    ("GATEWAY_WEBHOOK_SECRET", "whsec_ledger_local"),
    ("GATEWAY_KEY_SECRET", "ledger-local-provider-key-secret"),
];

/// A published development secret configured against a provider that is
/// not a loopback fake.
#[derive(Debug)]
pub struct DevelopmentSecrets {
    pub setting: &'static str,
    pub url: String,
}

impl std::fmt::Display for DevelopmentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is the fake provider's published development secret, and GATEWAY_URL ({}) is not a fake on this \
             machine: anyone could forge its webhooks or guess its keys. Set real secrets (or \
             GATEWAY_ALLOW_DEVELOPMENT_SECRETS=true for a shared development provider)",
            self.setting, self.url
        )
    }
}

impl std::error::Error for DevelopmentSecrets {}

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("gateway_url", &self.gateway_url)
            .field("gateway_timeout_ms", &self.gateway_timeout_ms)
            .field("gateway_key_window_secs", &self.gateway_key_window_secs)
            .field("card_lease_secs", &self.card_lease_secs)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Refuses the published development secrets unless the provider is a
    /// fake on this machine or they are allowed on purpose. A deployment
    /// that forgot GATEWAY_WEBHOOK_SECRET would otherwise accept webhooks
    /// anyone can sign.
    pub fn check_secrets(&self) -> Result<(), DevelopmentSecrets> {
        if self.gateway_allow_development_secrets || is_loopback(&self.gateway_url) {
            return Ok(());
        }
        let configured = [&self.gateway_secret_key, &self.gateway_webhook_secret, &self.gateway_key_secret];
        match PUBLISHED_SECRETS.iter().zip(configured).find(|((_, published), value)| *published == value.as_str()) {
            Some(((setting, _), _)) => Err(DevelopmentSecrets { setting, url: self.gateway_url.clone() }),
            None => Ok(()),
        }
    }

    pub fn client_config(&self) -> gateway::Config {
        gateway::Config::new(&self.gateway_url, &self.gateway_secret_key, &self.gateway_webhook_secret)
            .with_timeout(Duration::from_millis(self.gateway_timeout_ms))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.card_lease_secs)
    }

    pub fn key_window(&self) -> Duration {
        Duration::from_secs(self.gateway_key_window_secs)
    }

    pub fn webhook_tolerance(&self) -> Duration {
        Duration::from_secs(self.gateway_webhook_tolerance_secs)
    }
}

/// A configuration as the environment gives it with no flags: the local
/// defaults, with whatever the environment sets.
pub fn from_env<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("settings").no_binary_name(true));
    let matches = command.try_get_matches_from(std::iter::empty::<String>()).unwrap_or_else(|e| e.exit());
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_told_apart() {
        for url in ["http://127.0.0.1:12111", "http://localhost:1/v1", "http://[::1]:8080", "http://u:p@127.0.0.2"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["https://api.stripe.com", "http://10.0.0.1:12111", "http://127.0.0.1.example.com", "http://[::2]"] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn published_secrets_are_refused_against_a_remote_provider() {
        let mut g: Gateway = from_env();
        assert!(g.check_secrets().is_ok(), "the local defaults against the local fake");
        g.gateway_url = "https://api.stripe.com".to_owned();
        assert_eq!(g.check_secrets().unwrap_err().setting, "GATEWAY_SECRET_KEY");
        g.gateway_secret_key = "sk_live_real".to_owned();
        assert_eq!(g.check_secrets().unwrap_err().setting, "GATEWAY_WEBHOOK_SECRET");
        g.gateway_webhook_secret = "whsec_real".to_owned();
        assert_eq!(g.check_secrets().unwrap_err().setting, "GATEWAY_KEY_SECRET");
        g.gateway_key_secret = "a real secret".to_owned();
        assert!(g.check_secrets().is_ok());
        g.gateway_webhook_secret = "whsec_ledger_local".to_owned();
        g.gateway_allow_development_secrets = true;
        assert!(g.check_secrets().is_ok(), "allowed on purpose");
    }
}
