//! `make chaos-ha`: the fault campaign against the highly available stack
//! (`make ha-up`, started first if it is not running). Usage:
//! `chaos-ha [--seed N] [--secs S] [--clients C]` (also CHAOS_SEED,
//! CHAOS_SECS, CHAOS_CLIENTS). It kills the PostgreSQL primary, the RabbitMQ
//! node leading a queue, API and worker processes, one at a time, and prints
//! each failover's unavailability as the clients saw it.

use std::time::Duration;

use clap::Parser;
use ledger_tests::chaos::CampaignArgs;
use ledger_tests::chaos_ha::{run, Fault, Settings, Stack};

#[derive(Parser)]
#[command(about = "make chaos-ha: the fault campaign against the highly available stack")]
struct Args {
    #[command(flatten)]
    campaign: CampaignArgs,
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let s = Settings {
        seed: args.campaign.seed(),
        duration: Duration::from_secs(args.campaign.secs),
        clients: args.campaign.clients,
        round: vec![Fault::Primary, Fault::BrokerNode, Fault::Api, Fault::Worker],
        gap: (3, 12),
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(".ha");
    let stack = Stack::ensure(&root);
    eprintln!(
        "chaos-ha: seed {} for {}s, {} clients, the stack in {}, API logs in {}",
        s.seed,
        s.duration.as_secs(),
        s.clients,
        stack.dir.display(),
        ledger_tests::chaos_ha::api_log().display()
    );
    let summary = run(&stack, s.clone()).await;
    println!("{summary}");
    if !summary.chaos.violations.is_empty() {
        eprintln!("FAILED: replay with `make chaos-ha CHAOS_SEED={} CHAOS_SECS={}`", s.seed, s.duration.as_secs());
        std::process::exit(1);
    }
}
