use clap::{Parser, Subcommand};
use workers::config::Config;
use workers::{email, inventory, relay, shutdown};

/// The ledger's workers: the outbox relay and the RabbitMQ consumers.
#[derive(Parser)]
#[command(name = "ledger-workers", version)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone)]
enum Command {
    /// Publish the outbox to RabbitMQ (at least once).
    Relay,
    /// Commit reservations of paid orders (at least once, inbox-deduplicated).
    Inventory,
    /// Send order confirmation emails (at most once).
    Email,
    /// Relay, inventory and email in one process.
    All,
    /// List paid orders whose confirmation email was lost; with --send, send them.
    ReconcileEmails {
        #[arg(long)]
        send: bool,
        /// Ignore orders younger than this many seconds (still in flight).
        #[arg(long, default_value_t = 60)]
        older_than: u64,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = cli.config;
    let pool = match config.pool() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Command::ReconcileEmails { send, older_than } = cli.command {
        let result = async {
            let mailer = email::Mailer::from_config(&config)?;
            email::reconcile(&pool, &mailer, &config.email_from, older_than, send).await
        }
        .await;
        match result {
            Ok(lost) => {
                for l in &lost {
                    println!(
                        "{} {} {} {}{}",
                        l.tenant_id,
                        l.order_id,
                        l.recipient,
                        l.state.as_deref().unwrap_or("never sent"),
                        if send { " -> sent" } else { "" }
                    );
                }
                println!("{} order(s) without a sent confirmation{}", lost.len(), if send { ", sent now" } else { "" });
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }

    let (trigger, stop) = shutdown::channel();
    let mut tasks = tokio::task::JoinSet::new();
    let cmd = cli.command;
    if matches!(cmd, Command::Relay | Command::All) {
        tasks.spawn(relay::run(config.clone(), pool.clone(), stop.clone()));
    }
    if matches!(cmd, Command::Inventory | Command::All) {
        tasks.spawn(inventory::run(config.clone(), pool.clone(), stop.clone()));
    }
    if matches!(cmd, Command::Email | Command::All) {
        tasks.spawn(email::run(config.clone(), pool.clone(), stop.clone()));
    }
    let signals = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::select! {
        _ = signals => {
            tracing::info!("shutting down: no new deliveries, in-flight ones finish or go back to the queue");
            trigger.fire();
        }
        _ = tasks.join_next() => {
            trigger.fire();
        }
    }
    while tasks.join_next().await.is_some() {}
}
