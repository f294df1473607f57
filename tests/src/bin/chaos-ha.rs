//! `make chaos-ha`: the fault campaign against the highly available stack
//! (`make ha-up`, started first if it is not running). Usage:
//! `chaos-ha [--seed N] [--secs S] [--clients C]` (also CHAOS_SEED,
//! CHAOS_SECS, CHAOS_CLIENTS). It kills the PostgreSQL primary, the RabbitMQ
//! node leading a queue, API and worker processes, one at a time, and prints
//! each failover's unavailability as the clients saw it.

use std::time::Duration;

use ledger_tests::chaos_ha::{run, Fault, Settings, Stack};

#[actix_web::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut s = Settings {
        seed: env("CHAOS_SEED", now),
        duration: Duration::from_secs(env("CHAOS_SECS", 600)),
        clients: env("CHAOS_CLIENTS", 8) as usize,
        round: vec![Fault::Primary, Fault::BrokerNode, Fault::Api, Fault::Worker],
        gap: (3, 12),
    };
    while let Some(flag) = args.next() {
        let value: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--seed" => s.seed = value,
            "--secs" => s.duration = Duration::from_secs(value),
            "--clients" => s.clients = value as usize,
            other => panic!("unknown flag {other}"),
        }
    }
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
