//! The fairness workloads' figures beside their baseline: new charges
//! measured while something else contends for the service (a buyer's row
//! held, a flood of wrong API keys), over the plain "new charge" workload at
//! the same concurrency, which ran just before in the same run.

use serde_json::{json, Value};

use crate::load::{round, Figures};

/// The most a fairness workload's p99 may be over its baseline's, or none
/// when the target is "unchanged" (a ratio near 1, stated, not judged).
pub(super) enum Target {
    AtMost(f64),
    Unchanged,
}

pub(super) struct Fairness {
    /// The charges measured (the other buyers', or the legitimate ones).
    pub(super) figures: Figures,
    baseline_name: &'static str,
    /// The baseline's p99 (ms) and req/s, when it ran at this concurrency.
    baseline: Option<(f64, f64)>,
    target: Target,
    /// What else happened during the measurement, one line each.
    notes: Vec<String>,
    /// The same, as fields of the JSON.
    details: Value,
}

impl Fairness {
    pub(super) fn new(
        figures: Figures,
        baseline_name: &'static str,
        baseline: Option<&Figures>,
        target: Target,
        notes: Vec<String>,
        details: Value,
    ) -> Fairness {
        let baseline = baseline.map(|b| (b.ms(0.99), b.rps()));
        Fairness { figures, baseline_name, baseline, target, notes, details }
    }

    /// p99 over the baseline's p99, and req/s over its req/s.
    fn ratios(&self) -> Option<(f64, f64)> {
        self.baseline.map(|(p99, rps)| (self.figures.ms(0.99) / p99, self.figures.rps() / rps))
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::AtMost(x) => format!("≤ {x}×"),
            Target::Unchanged => "≈ 1×, unchanged".into(),
        }
    }

    fn met(&self) -> Option<bool> {
        match (&self.target, self.ratios()) {
            (Target::AtMost(x), Some((p99, _))) => Some(p99 <= *x),
            _ => None,
        }
    }

    /// The comparison and the notes, as printed below the table.
    pub(super) fn lines(&self) -> Vec<String> {
        let f = &self.figures;
        let verdict = match self.met() {
            Some(true) => ": met",
            Some(false) => ": NOT met",
            None => "",
        };
        let head = match (self.baseline, self.ratios()) {
            (Some((p99, rps)), Some((p99_ratio, rps_ratio))) => format!(
                "{} at {}: p99 {:.2} ms ÷ {} p99 {:.2} ms = {:.2}× (target {}{verdict}); {:.0} req/s ÷ {:.0} = {:.2}×",
                f.workload,
                f.concurrency,
                f.ms(0.99),
                self.baseline_name,
                p99,
                p99_ratio,
                self.target_text(),
                f.rps(),
                rps,
                rps_ratio
            ),
            _ => format!(
                "{} at {}: p99 {:.2} ms, {:.0} req/s; no {} figure at this concurrency to compare with",
                f.workload,
                f.concurrency,
                f.ms(0.99),
                f.rps(),
                self.baseline_name
            ),
        };
        std::iter::once(head).chain(self.notes.iter().map(|n| format!("  {n}"))).collect()
    }

    pub(super) fn json(&self) -> Value {
        let mut j = json!({
            "workload": self.figures.workload,
            "concurrency": self.figures.concurrency,
            "figures": self.figures.json(),
            "baseline": self.baseline.map(|(p99, rps)| json!({
                "workload": self.baseline_name, "p99_ms": round(p99), "rps": round(rps),
            })),
            "p99_over_baseline": self.ratios().map(|(p99, _)| round(p99)),
            "rps_over_baseline": self.ratios().map(|(_, rps)| round(rps)),
            "target_p99_over_baseline": self.target_text(),
            "target_met": self.met(),
        });
        if let (Some(j), Some(details)) = (j.as_object_mut(), self.details.as_object()) {
            j.extend(details.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        j
    }
}
