//! A short seeded fault campaign (the long one is `make chaos`).

use std::time::Duration;

use ledger_tests::chaos::{run, Settings};

#[actix_web::test]
async fn a_short_fault_campaign_ends_with_zero_violations() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let summary =
        run(Settings { seed, duration: Duration::from_secs(15), clients: 4, apis: 2, private_servers: false }).await;
    println!("{summary}");
    assert!(summary.violations.is_empty(), "{summary}\nreplay with CHAOS_SEED={seed}");
    assert!(summary.charged > 0 && summary.faults.values().sum::<u64>() > 0, "{summary}");
    // 3-D Secure payments ran beside the other card purchases, and the end compared them with the provider
    assert!(summary.three_ds_payments > 0 && summary.three_ds_compared > 0, "{summary}");
    // the storefront's endpoints were owed events, and the webhooks worker delivered and retried them
    assert!(summary.webhooks_delivered > 0 && summary.webhooks_dead_attempts > 0, "{summary}");
}
