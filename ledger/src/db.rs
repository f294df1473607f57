//! Connections: the tokio-postgres pool for the request path, diesel for the
//! schema (embedded migrations) and the administrative commands.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error as PgError, Row};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    /// How long a request waits for a free connection before it is refused.
    pub wait_timeout: Duration,
    /// How long any statement waits for a row lock (a concurrent duplicate, a
    /// hot account) before it gives up. Bounds every wait in the service.
    pub lock_timeout: Duration,
    /// Check each connection with a round trip when it leaves the pool.
    /// The API skips it on its hot path; the workers use it, so a database
    /// restart costs a message one failed attempt, not one per dead pooled
    /// connection (which could exhaust its delivery limit).
    pub verify_on_checkout: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 16,
            wait_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
            verify_on_checkout: false,
        }
    }
}

pub fn pool(database_url: &str, opts: &PoolOptions) -> crate::Result<Pool> {
    let mut pg: tokio_postgres::Config = database_url.parse()?;
    pg.options(format!("-c lock_timeout={}", opts.lock_timeout.as_millis()));
    pg.application_name("ledger");
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: if opts.verify_on_checkout { RecyclingMethod::Verified } else { RecyclingMethod::Fast },
        },
    );
    Pool::builder(manager)
        .max_size(opts.max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(opts.wait_timeout))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(crate::Error::from)
}

/// One round trip: whether the database answers (readiness).
pub async fn ping(client: &impl tokio_postgres::GenericClient) -> crate::Result<()> {
    client.execute("SELECT 1", &[]).await?;
    Ok(())
}

/// Runs the pending embedded migrations and returns their names.
///
/// diesel's harness is synchronous; it runs on a thread of its own with the
/// wrapper's own runtime, so it can be called from any async context.
pub async fn migrate(database_url: &str) -> crate::Result<Vec<String>> {
    use diesel::Connection;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_async::AsyncPgConnection;

    let url = database_url.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let run = || -> crate::Result<Vec<String>> {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
            let done = conn.run_pending_migrations(MIGRATIONS).map_err(crate::Error::Migration)?;
            Ok(done.iter().map(|v| v.to_string()).collect())
        };
        let _ = tx.send(run());
    });
    rx.await.map_err(|_| crate::Error::Migration("the migration thread died".into()))?
}

/// Statements of the request path run as prepared statements cached on their
/// pooled connection: one round trip per statement instead of two (parse and
/// describe, then bind and execute), and PostgreSQL plans each shape once per
/// connection instead of on every request. The SQL text is the cache key, so
/// every call site keeps its SQL beside it as before.
#[allow(async_fn_in_trait)]
pub trait Cached {
    async fn cached_query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError>;
    async fn cached_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError>;
    async fn cached_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, PgError>;
    async fn cached_execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError>;
}

macro_rules! cached_impl {
    ($t:ty) => {
        impl Cached for $t {
            async fn cached_query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
                self.query(&self.prepare_cached(sql).await?, params).await
            }
            async fn cached_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError> {
                self.query_one(&self.prepare_cached(sql).await?, params).await
            }
            async fn cached_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, PgError> {
                self.query_opt(&self.prepare_cached(sql).await?, params).await
            }
            async fn cached_execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
                self.execute(&self.prepare_cached(sql).await?, params).await
            }
        }
    };
}

cached_impl!(deadpool_postgres::Transaction<'_>);
cached_impl!(deadpool_postgres::Client);
