use clap::{Parser, Subcommand};
use workers::config::Config;
use workers::{dlq, email, metrics, replay, shutdown, Error, Role};

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
    /// Finish card charges left `processing` past their lease, with the same
    /// provider key (looking the payment up first past the provider's key window).
    Completer,
    /// Void authorizations past their deadline, giving their hold back.
    Expirer,
    /// Deliver events to the tenants' webhook endpoints, signed, at least once.
    Webhooks,
    /// Relay, inventory, email, the completer, the expirer and webhooks in one process.
    All,
    /// List paid orders whose confirmation email is not known to be sent;
    /// with --send, send the ones that never were. An email whose outcome is
    /// unknown (claimed, never marked sent) is only listed.
    ReconcileEmails {
        /// Send the confirmations of orders never claimed (they were never sent).
        #[arg(long)]
        send: bool,
        /// Also resend the claimed ones whose outcome is unknown. This breaks
        /// at most once: the mail server may already have taken them, and the
        /// buyer may get a second copy (with the same Message-ID). Check the
        /// mail server's log for the Message-IDs listed first.
        #[arg(long, requires = "send")]
        resend_claimed: bool,
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
    /// Compare the payment provider's payments and refunds of a period with
    /// the ledger's card charges and card refunds; print every difference.
    /// Exits 0 when clean, 1 on differences, 2 when it could not run.
    ReconcilePayments {
        /// Start of the period (RFC 3339); default: 24 hours before --to.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// End of the period, excluded (RFC 3339); default: now.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List what the payment provider told us that contradicts the ledger
    /// (flagged by webhooks and the completer; no money moved on them).
    /// Exits 1 when any is open.
    ProviderFlags,
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

#[tokio::main]
async fn main() {
    service::telemetry::init("info");
    let cli = Cli::parse();
    let reconciling = matches!(cli.command, Command::ReconcilePayments { .. });
    if let Err(e) = run(cli.config, cli.command).await {
        eprintln!("error: {e}");
        // reconcile-payments: 1 for differences found, 2 when it could not run
        let could_not_run = reconciling && !matches!(e, Failure::Differences(_));
        std::process::exit(if could_not_run { 2 } else { 1 });
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Retention(#[from] ledger::retention::Inconsistent),
    #[error(transparent)]
    Workers(#[from] Error),
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    #[error("replay needs at least one of --tenant, --order, --since, --until, --type")]
    UnfilteredReplay,
    #[error("{0} open provider flag(s)")]
    Flagged(usize),
    #[error("{0} difference(s) between the payment provider and the ledger")]
    Differences(usize),
    #[error("payment provider: {0}")]
    Gateway(#[from] gateway::BuildError),
    #[error(transparent)]
    DevelopmentSecrets(#[from] service::settings::DevelopmentSecrets),
}

/// Each subcommand and what runs it.
async fn run(config: Config, command: Command) -> Result<(), Failure> {
    // Every command refuses retention windows that do not nest.
    config.retention.windows().check()?;
    match command {
        Command::Relay => serve(&config, &[Role::Relay]).await,
        Command::Inventory => serve(&config, &[Role::Inventory]).await,
        Command::Email => serve(&config, &[Role::Email]).await,
        Command::Completer => serve(&config, &[Role::Completer]).await,
        Command::Expirer => serve(&config, &[Role::Expirer]).await,
        Command::Webhooks => serve(&config, &[Role::Webhooks]).await,
        Command::All => {
            let all = [Role::Relay, Role::Inventory, Role::Email, Role::Completer, Role::Expirer, Role::Webhooks];
            serve(&config, &all).await
        }
        Command::ReconcileEmails { send, resend_claimed, older_than } => {
            let sends = email::Sends { never_claimed: send, resend_claimed };
            reconcile_emails(&config, sends, older_than).await
        }
        Command::Replay { filter, dry_run } => replay(&config, &filter, dry_run).await,
        Command::ProviderFlags => provider_flags(&config).await,
        Command::ReconcilePayments { from, to } => reconcile_payments(&config, from, to).await,
        Command::Dlq { command: DlqCommand::List } => dlq_list(&config).await,
        Command::Dlq { command: DlqCommand::Redrive { all, id } } => dlq_redrive(&config, all, id).await,
    }
}

/// Runs the long-lived workers until SIGTERM or SIGINT (or one of them ends):
/// consumers stop, unacknowledged deliveries go back to their queue.
async fn serve(config: &Config, roles: &[Role]) -> Result<(), Failure> {
    if roles.contains(&Role::Completer) {
        config.gateway.check_secrets()?;
    }
    let pool = config.pool()?;
    let (trigger, stop) = shutdown::channel();
    let mut tasks = workers::spawn(config, &pool, roles, &stop);
    if let Some(addr) = &config.metrics.workers_metrics_addr {
        let listener = metrics::bind(addr).await?;
        if let Ok(bound) = listener.local_addr() {
            tracing::info!(addr = %bound, "serving metrics at /metrics");
        }
        tokio::spawn(metrics::serve(listener, config.clone(), pool.clone(), stop.clone()));
    }
    tokio::select! {
        _ = shutdown::signalled() => {
            tracing::info!("shutting down: no new deliveries, in-flight ones finish or go back to the queue");
        }
        _ = tasks.join_next() => {}
    }
    trigger.fire();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn reconcile_emails(config: &Config, sends: email::Sends, older_than: u64) -> Result<(), Failure> {
    let pool = config.pool()?;
    let mailer = email::Mailer::from_config(config)?;
    let found = email::reconcile_with(&pool, &mailer, &config.email_from, older_than, sends).await?;
    let (mut never, mut unknown) = (0, 0);
    for r in &found {
        let l = &r.lost;
        let state = match l.state {
            ledger::emails::Unsent::NeverClaimed => {
                never += 1;
                "never sent".to_owned()
            }
            ledger::emails::Unsent::Claimed => {
                unknown += 1;
                format!("outcome unknown ({} send attempt(s))", l.attempts)
            }
        };
        let sent = if r.sent { " -> sent" } else { "" };
        println!("{} {} {} {} {}{sent}", l.tenant_id, l.order_id, l.recipient, r.message_id, state);
    }
    let sent = found.iter().filter(|r| r.sent).count();
    println!("{never} order(s) whose confirmation was never sent, {unknown} whose send has an unknown outcome; {sent} sent now");
    if unknown > sent && !sends.resend_claimed {
        println!(
            "an unknown outcome is never sent again automatically: look for its Message-ID in the mail server's log; \
             `--send --resend-claimed` resends them all, possibly a second time"
        );
    }
    Ok(())
}

async fn replay(config: &Config, filter: &replay::Filter, dry_run: bool) -> Result<(), Failure> {
    if filter.is_empty() {
        return Err(Failure::UnfilteredReplay);
    }
    // Only events first published within OUTBOX_RETENTION_SECS: an older
    // one could reach a consumer after its inbox row expired.
    let filter = &replay::Filter { window: Some(config.retention.outbox()), ..filter.clone() };
    let pool = config.pool()?;
    if dry_run {
        let events = replay::plan(&pool, filter).await?;
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
        let n = replay::replay(&pool, filter).await?;
        println!("{n} event(s) marked for republishing; the running relay publishes them");
    }
    Ok(())
}

async fn reconcile_payments(
    config: &Config,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), Failure> {
    let to = to.unwrap_or_else(chrono::Utc::now);
    let from = from.unwrap_or(to - chrono::Duration::hours(24));
    let pool = config.pool()?;
    let payments = service::provider::Provider::new(&config.gateway)?;
    let differences = workers::reconcile_payments::reconcile(&pool, &payments, from, to).await?;
    for d in &differences {
        println!("{} {}", d.kind, d.detail);
    }
    println!(
        "{} difference(s) between the payment provider and the ledger from {} to {}",
        differences.len(),
        from.to_rfc3339(),
        to.to_rfc3339()
    );
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Failure::Differences(differences.len()))
    }
}

async fn provider_flags(config: &Config) -> Result<(), Failure> {
    let pool = config.pool()?;
    let client = pool.get().await.map_err(ledger::Error::from)?;
    let flags = ledger::provider_events::open_flags(&**client).await?;
    let o = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for f in &flags {
        println!(
            "{}  {}  kind={}  tenant={}  charge={}  event={}  {}",
            f.id,
            f.created_at.to_rfc3339(),
            f.kind,
            o(f.tenant_id.map(|t| t.to_string())),
            o(f.charge_id.map(|c| c.to_string())),
            o(f.event_id.clone()),
            f.detail
        );
    }
    println!("{} open provider flag(s)", flags.len());
    if flags.is_empty() {
        Ok(())
    } else {
        Err(Failure::Flagged(flags.len()))
    }
}

async fn dlq_list(config: &Config) -> Result<(), Failure> {
    let dead = dlq::list(config).await?;
    dead.iter().for_each(print_dead);
    println!("{} dead-lettered message(s)", dead.len());
    Ok(())
}

async fn dlq_redrive(config: &Config, all: bool, ids: Vec<String>) -> Result<(), Failure> {
    let select = if all { dlq::Select::All } else { dlq::Select::Ids(ids) };
    let moved = dlq::redrive(config, &select).await?;
    moved.iter().for_each(print_dead);
    println!("{} message(s) redriven", moved.len());
    Ok(())
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
