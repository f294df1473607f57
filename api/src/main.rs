use clap::{Parser, Subcommand};

use api::config::Config;
use api::startup::Application;

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
    /// Revoke the API keys that start with PREFIX (the first 11 characters).
    RevokeKey { prefix: String },
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

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config.clone()).await?;
            tracing::info!(addr = %config.http_addr, port = app.port(), "serving");
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::Migrate => {
            let done = ledger::db::migrate(&config.database_url).await?;
            println!("{} migration(s) applied{}", done.len(), if done.is_empty() { "" } else { ":" });
            for m in done {
                println!("  {m}");
            }
            Ok(())
        }
        Command::CreateTenant { name } => {
            let mut conn = ledger::tenants::connect(&config.database_url).await?;
            let (tenant, key) = ledger::tenants::create_with_key(&mut conn, &name).await?;
            eprintln!("tenant {} ({})", tenant.name, tenant.id);
            println!("{key}");
            Ok(())
        }
        Command::RevokeKey { prefix } => {
            let mut conn = ledger::tenants::connect(&config.database_url).await?;
            let n = ledger::tenants::revoke_keys(&mut conn, &prefix).await?;
            println!("{n} key(s) revoked");
            Ok(())
        }
        Command::Openapi { check } => {
            let json = api::openapi::document().to_pretty_json().map_err(|e| e.to_string())? + "\n";
            match check {
                None => {
                    print!("{json}");
                    Ok(())
                }
                Some(path) => {
                    let committed = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    if committed == json {
                        Ok(())
                    } else {
                        Err(format!("{} is stale: run `make openapi` and commit it", path.display()))
                    }
                }
            }
        }
        Command::PurgeIdempotencyKeys => {
            let pool = ledger::db::pool(&config.database_url, &config.pool_options())?;
            let n = api::purge::purge_expired(&pool, config.idempotency_retention).await.map_err(|e| e.to_string())?;
            println!("{n} expired key(s) removed");
            Ok(())
        }
        Command::Audit { quiesced } => {
            let (client, conn) = tokio_postgres::connect(&config.database_url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let report =
                ledger::audit::audit(&client, ledger::audit::Options { quiesced }).await.map_err(|e| e.to_string())?;
            println!("{report}");
            if report.is_clean() {
                Ok(())
            } else {
                Err(format!("{} invariant(s) violated: {}", report.broken().len(), report.broken().join(", ")))
            }
        }
    }
}
