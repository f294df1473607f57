//! `make chaos`: the seeded fault campaign. Usage:
//! `chaos [--seed N] [--secs S] [--clients C] [--apis A]` (also CHAOS_SEED,
//! CHAOS_SECS, CHAOS_CLIENTS, CHAOS_APIS). It runs on a PostgreSQL cluster
//! and a RabbitMQ node of its own, which it also stops and restarts;
//! `CHAOS_SERVERS=shared` runs it on the machine's servers instead, without
//! those outages.

use std::time::Duration;

use clap::Parser;
use ledger_tests::chaos::{run, CampaignArgs, Settings};

#[derive(Parser)]
#[command(about = "make chaos: the seeded fault campaign on servers of its own, which it also stops and restarts")]
struct Args {
    #[command(flatten)]
    campaign: CampaignArgs,
    /// API processes behind the clients.
    #[arg(long, env = "CHAOS_APIS", default_value_t = 3)]
    apis: usize,
    /// `private` (servers of its own, stopped and restarted) or `shared`.
    #[arg(long, env = "CHAOS_SERVERS", default_value = "private")]
    servers: String,
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let s = Settings {
        seed: args.campaign.seed(),
        duration: Duration::from_secs(args.campaign.secs),
        clients: args.campaign.clients,
        apis: args.apis,
        private_servers: args.servers != "shared",
    };
    eprintln!(
        "chaos: seed {} for {}s, {} clients, {} API processes, {} servers",
        s.seed,
        s.duration.as_secs(),
        s.clients,
        s.apis,
        if s.private_servers { "private" } else { "shared" }
    );
    let summary = run(s.clone()).await;
    println!("{summary}");
    if !summary.violations.is_empty() {
        eprintln!("FAILED: replay with `make chaos CHAOS_SEED={} CHAOS_SECS={}`", s.seed, s.duration.as_secs());
        std::process::exit(1);
    }
}
