//! Group commit as the API reports it: its batch metrics
//! (`ledger_charge_batch_size`, `ledger_charge_batch_phase_seconds{phase}`,
//! `ledger_charge_batches_failed_total`) scraped from its `/metrics`
//! (METRICS_ADDR) before and
//! after a new-charge workload (its warm-up included), and the difference:
//! how many batches, how large, and the mean time of each phase of one.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::load::round;

/// The counters of one scrape: (sum, count) per series.
#[derive(Default)]
pub struct Scrape {
    size: (f64, f64),
    phases: BTreeMap<String, (f64, f64)>,
    failed: f64,
}

/// Scrapes the metrics at `url`.
pub async fn scrape(client: &awc::Client, url: &str) -> Result<Scrape> {
    let mut res = client.get(url).send().await.map_err(|e| Error::Http(e.to_string()))?;
    let body = res.body().limit(8 << 20).await.map_err(|e| Error::Http(e.to_string()))?;
    let mut s = Scrape::default();
    for line in String::from_utf8_lossy(&body).lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, phase) = match series.split_once("{phase=\"") {
            Some((name, rest)) => (name, rest.split('"').next()),
            None => (series, None),
        };
        match (name, phase) {
            ("ledger_charge_batch_size_sum", None) => s.size.0 = value,
            ("ledger_charge_batch_size_count", None) => s.size.1 = value,
            ("ledger_charge_batches_failed_total", None) => s.failed = value,
            ("ledger_charge_batch_phase_seconds_sum", Some(p)) => s.phases.entry(p.to_owned()).or_default().0 = value,
            ("ledger_charge_batch_phase_seconds_count", Some(p)) => s.phases.entry(p.to_owned()).or_default().1 = value,
            _ => {}
        }
    }
    Ok(s)
}

/// What the batches of one workload looked like.
pub struct Profile {
    pub concurrency: usize,
    pub batches: u64,
    pub mean_size: f64,
    pub failed: u64,
    /// Mean milliseconds per batch, in the order a batch runs them.
    pub phase_ms: Vec<(String, f64)>,
}

/// The phases in the order a batch runs them.
const PHASES: [&str; 5] = ["connection", "claim", "charges", "answers", "commit"];

impl Profile {
    pub fn between(concurrency: usize, before: &Scrape, after: &Scrape) -> Profile {
        let batches = after.size.1 - before.size.1;
        let phase_ms = PHASES
            .iter()
            .map(|p| {
                let (s0, c0) = before.phases.get(*p).copied().unwrap_or_default();
                let (s1, c1) = after.phases.get(*p).copied().unwrap_or_default();
                let n = c1 - c0;
                (p.to_string(), if n > 0.0 { round((s1 - s0) / n * 1000.0) } else { 0.0 })
            })
            .collect();
        Profile {
            concurrency,
            batches: batches as u64,
            mean_size: if batches > 0.0 { round((after.size.0 - before.size.0) / batches) } else { 0.0 },
            failed: (after.failed - before.failed) as u64,
            phase_ms,
        }
    }

    pub fn line(&self) -> String {
        let phases: Vec<String> = self.phase_ms.iter().map(|(p, ms)| format!("{p} {ms:.2}")).collect();
        format!(
            "group commit at {}: {} batches, {:.1} requests each on average, {} failed; mean ms per batch: {}",
            self.concurrency,
            self.batches,
            self.mean_size,
            self.failed,
            phases.join(", ")
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "batches": self.batches,
            "mean_batch_size": self.mean_size,
            "failed_batches": self.failed,
            "phase_ms": self.phase_ms.iter().map(|(p, ms)| json!({"phase": p, "ms": ms})).collect::<Vec<_>>(),
        })
    }
}
