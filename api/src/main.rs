use clap::{Parser, Subcommand};

use api::config::Config;
use api::startup::{Application, StartupError};

/// The ledger service: REST API and administrative commands.
#[derive(Parser)]
#[command(name = "ledger-api", version)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Run pending database migrations.
    Migrate,
    /// Create a tenant (or find it by name) and print a new API key for it.
    CreateTenant {
        /// The tenant's name, e.g. the storefront's.
        name: String,
    },
    /// Issue one more API key to a tenant (by id or name) and print it; its
    /// other keys stay live, and a running API accepts the new one at once.
    CreateKey {
        /// The tenant's id or name.
        tenant: String,
    },
    /// Revoke the API keys that start with PREFIX (the first 11 characters);
    /// running APIs refuse them within API_KEY_CACHE_MS.
    RevokeKey { prefix: String },
    /// List a tenant's API keys: prefix, created, last used, revoked.
    ListKeys {
        /// The tenant's id or name.
        tenant: String,
    },
    /// Give a tenant its own rate limit (per API process), or with --default
    /// return it to RATE_LIMIT_PER_SEC and RATE_LIMIT_BURST. Running APIs
    /// apply it within API_KEY_CACHE_MS.
    SetRateLimit {
        /// The tenant's id or name.
        tenant: String,
        /// Requests per second, on average (0: no limit).
        #[arg(long, required_unless_present = "default", requires = "burst",
              value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
        per_sec: Option<u32>,
        /// Requests at once after a quiet spell.
        #[arg(long, requires = "per_sec", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
        burst: Option<u32>,
        /// Use the API's default limit again.
        #[arg(long, conflicts_with_all = ["per_sec", "burst"])]
        default: bool,
    },
    /// Print the OpenAPI document; with --check FILE, fail if FILE differs.
    Openapi {
        #[arg(long)]
        check: Option<std::path::PathBuf>,
    },
    /// Delete expired Idempotency-Keys now (the server also does it periodically).
    PurgeIdempotencyKeys,
    /// Check the ledger's invariants (docs/invariants.md); exit 1 on any violation.
    Audit {
        /// Also check what holds once the pipeline has settled (events published and consumed).
        #[arg(long)]
        quiesced: bool,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0} is stale: run `make openapi` and commit it")]
    StaleSpec(std::path::PathBuf),
    #[error("the document does not serialize: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("{} invariant(s) violated: {}", .0.len(), .0.join(", "))]
    Violated(Vec<&'static str>),
}

#[tokio::main]
async fn main() {
    service::telemetry::init("info,actix_server=warn");
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let config = cli.config;
    let database_url = config.database.database_url.clone();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config.clone()).await?;
            tracing::info!(addr = %config.http_addr, port = app.port(), "serving");
            Ok(app.run_until_stopped().await?)
        }
        Command::Migrate => {
            let done = ledger::db::migrate(&database_url).await?;
            println!("{} migration(s) applied{}", done.len(), if done.is_empty() { "" } else { ":" });
            for m in done {
                println!("  {m}");
            }
            Ok(())
        }
        Command::CreateTenant { name } => {
            let mut conn = ledger::tenants::connect(&database_url).await?;
            let (tenant, key) = ledger::tenants::create_with_key(&mut conn, &name).await?;
            eprintln!("tenant {} ({})", tenant.name, tenant.id);
            println!("{key}");
            Ok(())
        }
        Command::CreateKey { tenant } => {
            let mut conn = ledger::tenants::connect(&database_url).await?;
            let tenant = ledger::tenants::find(&mut conn, &tenant).await?;
            let key = ledger::tenants::issue_key(&mut conn, tenant.id).await?;
            eprintln!("new key for tenant {} ({})", tenant.name, tenant.id);
            println!("{key}");
            Ok(())
        }
        Command::RevokeKey { prefix } => {
            let mut conn = ledger::tenants::connect(&database_url).await?;
            let n = ledger::tenants::revoke_keys(&mut conn, &prefix).await?;
            println!("{n} key(s) revoked");
            Ok(())
        }
        Command::ListKeys { tenant } => {
            let mut conn = ledger::tenants::connect(&database_url).await?;
            let tenant = ledger::tenants::find(&mut conn, &tenant).await?;
            let limit = match ledger::tenants::rate_limit(&mut conn, tenant.id).await? {
                Some(l) => format!("its own: {} per second, burst {}", l.per_sec, l.burst),
                None => "the default (each API process's RATE_LIMIT_PER_SEC and RATE_LIMIT_BURST)".to_owned(),
            };
            println!("tenant {} ({}), rate limit {limit}", tenant.name, tenant.id);
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|| "-".to_owned())
            };
            println!("{:<12} {:<21} {:<21} {:<21}", "prefix", "created", "last used", "revoked");
            for k in ledger::tenants::list_keys(&mut conn, tenant.id).await? {
                println!(
                    "{:<12} {:<21} {:<21} {:<21}",
                    k.prefix,
                    time(Some(k.created_at)),
                    time(k.last_used_at),
                    time(k.revoked_at)
                );
            }
            Ok(())
        }
        Command::SetRateLimit { tenant, per_sec, burst, default } => {
            let mut conn = ledger::tenants::connect(&database_url).await?;
            let tenant = ledger::tenants::find(&mut conn, &tenant).await?;
            let limit = match (default, per_sec, burst) {
                (false, Some(per_sec), Some(burst)) => Some(ledger::tenants::RateLimit { per_sec, burst }),
                _ => None,
            };
            ledger::tenants::set_rate_limit(&mut conn, tenant.id, limit).await?;
            match limit {
                Some(l) => println!("tenant {}: {} per second, burst {}", tenant.name, l.per_sec, l.burst),
                None => println!("tenant {}: the default rate limit", tenant.name),
            }
            Ok(())
        }
        Command::Openapi { check } => {
            let json = serde_json::to_string_pretty(&api::openapi::document())? + "\n";
            match check {
                None => {
                    print!("{json}");
                    Ok(())
                }
                Some(path) => {
                    let committed = std::fs::read_to_string(&path)
                        .map_err(|source| Failure::Read { path: path.clone(), source })?;
                    if committed == json {
                        Ok(())
                    } else {
                        Err(Failure::StaleSpec(path))
                    }
                }
            }
        }
        Command::PurgeIdempotencyKeys => {
            let pool = ledger::db::pool(&database_url, &config.pool_options())?;
            let n =
                service::purge::once(&pool, service::purge::Target::IdempotencyKeys, config.retention.idempotency())
                    .await?;
            println!("{n} expired key(s) removed");
            Ok(())
        }
        Command::Audit { quiesced } => {
            let (client, conn) =
                tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await.map_err(ledger::Error::from)?;
            tokio::spawn(conn);
            let report = ledger::audit::audit(&client, ledger::audit::Options { quiesced }).await?;
            println!("{report}");
            if report.is_clean() {
                Ok(())
            } else {
                Err(Failure::Violated(report.broken()))
            }
        }
    }
}
