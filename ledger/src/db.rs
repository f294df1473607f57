//! Connections: the tokio-postgres pool for the request path, diesel for the
//! schema (embedded migrations) and the administrative commands.

use std::time::Duration;

use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
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
    /// How long any statement may run before PostgreSQL cancels it (zero: no
    /// limit). Longer than `lock_timeout`, so that a lock wait ends as a lock
    /// timeout first.
    pub statement_timeout: Duration,
    /// How long a session may sit idle inside an open transaction before
    /// PostgreSQL ends it and releases its locks (zero: no limit). This is what
    /// frees the key row and the accounts that a frozen or vanished process
    /// held: such a process keeps its socket open (a stopped process's kernel
    /// still answers TCP), so nothing else tells PostgreSQL it is gone. Every
    /// transaction of the service waits only on the database between its
    /// statements, except the relay's, which waits on the broker's confirms
    /// (milliseconds; each broker call is bounded at 15 s, and a relay batch
    /// cut short is published again, which consumers absorb).
    pub idle_in_transaction_timeout: Duration,
    /// TCP keepalives on both ends of every connection: the client notices a
    /// database host that vanished, and PostgreSQL a client host that did,
    /// after `idle + interval × retries` of silence instead of the system's
    /// two hours.
    pub keepalives: Keepalives,
    /// Check each connection with a round trip when it leaves the pool.
    /// The API skips it on its hot path; the workers use it, so a database
    /// restart costs a message one failed attempt, not one per dead pooled
    /// connection (which could exhaust its delivery limit).
    pub verify_on_checkout: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalives {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is given up.
    pub retries: u32,
}

impl Default for Keepalives {
    fn default() -> Self {
        Keepalives { idle: Duration::from_secs(10), interval: Duration::from_secs(5), retries: 3 }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 16,
            wait_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(10),
            keepalives: Keepalives::default(),
            verify_on_checkout: false,
        }
    }
}

impl PoolOptions {
    /// The session settings every pooled connection starts with, as
    /// PostgreSQL command-line options.
    ///
    /// `plan_cache_mode=force_generic_plan`: every statement of the request
    /// path is prepared once per connection (`Cached`), and is meant to be
    /// planned once too. Left to choose, PostgreSQL compares the generic
    /// plan's estimate with the custom plans' of the first five runs; for a
    /// statement over arrays (`unnest`) the generic plan guesses ten rows
    /// where a custom plan sees the array, so it is never chosen, and such a
    /// statement was planned again on every run. Each statement here is an
    /// index lookup by key whatever its values, which the generic plan is.
    pub fn session_options(&self) -> String {
        let k = &self.keepalives;
        format!(
            "-c lock_timeout={} -c statement_timeout={} -c idle_in_transaction_session_timeout={} \
             -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
             -c plan_cache_mode=force_generic_plan",
            self.lock_timeout.as_millis(),
            self.statement_timeout.as_millis(),
            self.idle_in_transaction_timeout.as_millis(),
            k.idle.as_secs(),
            k.interval.as_secs(),
            k.retries,
        )
    }
}

/// How long making a connection may take, TCP and the startup exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the check of a pooled connection on checkout may take.
pub const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn pool(database_url: &str, opts: &PoolOptions) -> crate::Result<Pool> {
    let mut pg: tokio_postgres::Config = database_url.parse()?;
    // what the URL sets (`?options=...`) first, then ours, which win
    let options = match pg.get_options() {
        Some(given) => format!("{given} {}", opts.session_options()),
        None => opts.session_options(),
    };
    pg.options(options);
    pg.keepalives(true)
        .keepalives_idle(opts.keepalives.idle)
        .keepalives_interval(opts.keepalives.interval)
        .keepalives_retries(opts.keepalives.retries);
    pg.application_name("ledger");
    // A connect that gets no answer (a host that vanished, a server that
    // accepts and then says nothing) fails instead of waiting forever.
    pg.connect_timeout(CONNECT_TIMEOUT);
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
        .create_timeout(Some(CONNECT_TIMEOUT))
        // The check on checkout is a round trip on a connection that may
        // be dead without its socket saying so: unbounded, it would hang
        // the caller. Past it the connection is dropped and another made.
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .post_recycle(Hook::sync_fn(|client, metrics| {
            // `recycle_count` counts the checkouts before this one, the first not
            // among them
            if replan_due(metrics.recycle_count + 1) {
                client.statement_cache.clear();
            }
            Ok(())
        }))
        .build()
        .map_err(crate::Error::from)
}

/// Whether a pooled connection, checked out for the `uses`-th time since it
/// was made, drops its prepared statements, to prepare each again when next
/// run: at 1, 2, 4, ... 1,024 uses, then every 1,024.
///
/// The pool's sessions keep one generic plan per prepared statement
/// (`plan_cache_mode`, above), made when the statement is prepared, for the
/// table sizes of that moment, and PostgreSQL replaces it only when a table
/// it reads is analyzed: without autovacuum, never, and on a new table not
/// before its first pass. Made while the tables were nearly empty, a plan
/// picks whichever index looks cheap then: a charge read by id and tenant
/// walked the tenant's seller index, a card charge's lease update the
/// tenant's live orders, the batched order lookup scanned every charge.
/// Measured in the benchmark: the lease update took 6.8 ms where its
/// lookup by key takes 0.2, card charges ran at half their rate, and new
/// wallet charges at a quarter at 64 clients. Prepared again, a statement is
/// planned for the table's current size (the planner reads its number of
/// pages), and the rows a connection can add between two re-plans are
/// bounded by its uses. The cost: a connection parses its statements again
/// once per 1,024 uses.
pub fn replan_due(uses: usize) -> bool {
    (uses.is_power_of_two() && uses <= 1024) || (uses > 0 && uses.is_multiple_of(1024))
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
