//! `make chaos`: the seeded fault campaign. Usage:
//! `chaos [--seed N] [--secs S] [--clients C] [--apis A]` (also CHAOS_SEED, CHAOS_SECS).
//! It runs on a PostgreSQL cluster and a RabbitMQ node of its own, which it
//! also stops and restarts; `CHAOS_SERVERS=shared` runs it on the machine's
//! servers instead, without those outages.

use std::time::Duration;

use ledger_tests::chaos::{run, Settings};

#[actix_web::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut s = Settings {
        seed: env("CHAOS_SEED", now),
        duration: Duration::from_secs(env("CHAOS_SECS", 600)),
        clients: env("CHAOS_CLIENTS", 8) as usize,
        apis: env("CHAOS_APIS", 3) as usize,
        private_servers: std::env::var("CHAOS_SERVERS").as_deref() != Ok("shared"),
    };
    while let Some(flag) = args.next() {
        let value: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--seed" => s.seed = value,
            "--secs" => s.duration = Duration::from_secs(value),
            "--clients" => s.clients = value as usize,
            "--apis" => s.apis = value as usize,
            other => panic!("unknown flag {other}"),
        }
    }
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
