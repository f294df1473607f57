use clap::{Parser, Subcommand};
use workers::config::Config;
use workers::{dlq, email, inventory, purge, relay, replay, shutdown};

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
    /// Republish outbox events through the relay, with their original
    /// message ids: consumers absorb what they handled and process what they
    /// missed. Writes no business effect, and never resends an email.
    Replay {
        #[command(flatten)]
        filter: replay::Filter,
        /// Print what would be republished, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The dead-letter queue: list it, or redrive messages back to their queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand, Clone)]
enum DlqCommand {
    /// Show dead-lettered messages (they stay in the queue).
    List,
    /// Move messages back to the queue they died in, after a fix.
    Redrive {
        /// Every dead-lettered message.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        all: bool,
        /// The message ids to redrive (repeatable).
        #[arg(long)]
        id: Vec<String>,
    },
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}

fn print_dead(d: &dlq::Dead) {
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let n = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    println!(
        "{}  type={}  order={}  queue={}  reason={}  deliveries={}  deaths={}",
        o(&d.message_id),
        o(&d.event_type),
        o(&d.order_id),
        o(&d.queue),
        o(&d.reason),
        o(&d.deliveries),
        n(d.deaths)
    );
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = cli.config;
    // Every command refuses retention windows that do not nest.
    if let Err(e) = config.windows().check() {
        fail(e);
    }
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

    if let Command::Replay { filter, dry_run } = &cli.command {
        if filter.is_empty() {
            fail("replay needs at least one of --tenant, --order, --since, --until, --type");
        }
        let events = replay::plan(&pool, filter).await.unwrap_or_else(|e| fail(e));
        if *dry_run {
            for e in &events {
                println!(
                    "{} {} {} {} {}",
                    e.message_id,
                    e.created_at.to_rfc3339(),
                    e.tenant_id,
                    e.event_type,
                    e.order_id.as_deref().unwrap_or("-")
                );
            }
            println!("{} event(s) would be republished (dry run)", events.len());
        } else {
            let n = replay::replay(&pool, filter).await.unwrap_or_else(|e| fail(e));
            println!("{n} event(s) marked for republishing; the running relay publishes them");
        }
        return;
    }
    if let Command::Dlq { command } = &cli.command {
        match command {
            DlqCommand::List => {
                let dead = dlq::list(&config).await.unwrap_or_else(|e| fail(e));
                dead.iter().for_each(print_dead);
                println!("{} dead-lettered message(s)", dead.len());
            }
            DlqCommand::Redrive { all, id } => {
                let select = if *all { dlq::Select::All } else { dlq::Select::Ids(id.clone()) };
                let moved = dlq::redrive(&config, &select).await.unwrap_or_else(|e| fail(e));
                moved.iter().for_each(print_dead);
                println!("{} message(s) redriven", moved.len());
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
        tasks.spawn(purge::run(
            pool.clone(),
            config.inbox_retention_secs,
            std::time::Duration::from_secs(300),
            stop.clone(),
        ));
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
