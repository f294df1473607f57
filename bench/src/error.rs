//! What can stop a benchmark run. Wrong answers are not errors: they are
//! counted and reported; these are the failures that leave no figures.

use std::process::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A seeding step found the database other than it wrote it.
    #[error("growth seeding: {0}")]
    Seeding(String),
    /// The audit's checks of a run (`ledger::audit`) could not run.
    #[error("audit: {0}")]
    Audit(#[from] ledger::Error),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the relay: {0}")]
    Relay(#[from] workers::Error),
    #[error("queue {queue}: {source}")]
    Queue { queue: String, source: lapin::Error },
    /// A transport failure of one HTTP request; awc's errors are not `Send`,
    /// so only their message travels.
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{0}")]
    Provider(#[from] gateway::launch::LaunchError),
    #[error("pgbench: {0}")]
    Pgbench(String),
    #[error("{0} failed pgbench transactions")]
    PgbenchFailed(u64),
    #[error("latency histogram: {0}")]
    Histogram(#[from] hdrhistogram::RecordError),
    #[error("ledger-workers {role} exited: {status}")]
    WorkerExited { role: &'static str, status: ExitStatus },
    #[error("{0} did not come up")]
    NotUp(&'static str),
    #[error("{what}: {reached} of {target} after {secs} s")]
    Timeout { what: String, reached: i64, target: i64, secs: u64 },
    #[error("the plain loop's event was returned: {0}")]
    Returned(String),
    #[error("expected an unpublished outbox backlog, found {unpublished} unpublished of {total}")]
    NoBacklog { unpublished: i64, total: i64 },
    #[error("the locked buyer: {0}")]
    LockedBuyer(String),
    #[error("no charge was created: nothing to replay")]
    NothingToReplay,
    #[error("the benchmark panicked")]
    Panicked,
    #[error("chart: {0}")]
    Chart(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
