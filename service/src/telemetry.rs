//! Logging and metrics, set up the same way by both binaries.
//!
//! Logs go to standard error, filtered by `RUST_LOG`; `LOG_FORMAT=json`
//! writes one JSON object per line, with the fields of the spans a line is
//! in (a request's or a message's `request_id`). Metrics are kept by the
//! `metrics` facade's Prometheus recorder, installed once per process, and
//! rendered by whichever endpoint serves `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process's log subscriber; `default_filter` applies when
/// `RUST_LOG` is unset. `LOG_FORMAT=json` switches to JSON lines.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json_logs(std::env::var("LOG_FORMAT").ok().as_deref()) {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
}

/// Whether LOG_FORMAT asks for JSON lines (anything else is text).
pub fn json_logs(format: Option<&str>) -> bool {
    format.is_some_and(|f| f.eq_ignore_ascii_case("json"))
}

/// Histogram buckets of request durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's metrics recorder: installed on first use, shared by every
/// server of the process (the tests run several in one).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
            .expect("the buckets are not empty");
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed already (not ours): keep an
            // unregistered one, so that /metrics still answers.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// What `/metrics` answers: the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The current metrics in Prometheus's text format.
pub fn render() -> String {
    let handle = metrics();
    handle.run_upkeep();
    handle.render()
}

/// Samples a connection pool into gauges (`pool` names it: `api`, `workers`).
/// How many callers wait for a connection right now is what shows the pool
/// running short; `ledger_db_pool_timeouts_total` counts those who gave up.
pub fn record_pool(pool_name: &'static str, pool: &deadpool_postgres::Pool) {
    let s = pool.status();
    metrics::gauge!("ledger_db_pool_max_connections", "pool" => pool_name).set(s.max_size as f64);
    metrics::gauge!("ledger_db_pool_connections", "pool" => pool_name).set(s.size as f64);
    metrics::gauge!("ledger_db_pool_idle_connections", "pool" => pool_name).set(s.available as f64);
    metrics::gauge!("ledger_db_pool_waiting", "pool" => pool_name).set(s.waiting as f64);
    // shown from the start (at 0), so that a rate over it has a baseline
    metrics::counter!("ledger_db_pool_timeouts_total").increment(0);
}
