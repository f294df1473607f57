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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = if json_logs(std::env::var("LOG_FORMAT").ok().as_deref()) {
        lines.json().with_current_span(true).with_span_list(false).boxed()
    } else {
        lines.boxed()
    };
    tracing_subscriber::registry().with(filter).with(lines.with_filter(ExpectedProbes)).init();
}

/// Drops the lines that are expected answers, not problems: tracing-actix-
/// web's WARN for each request answered 4xx, and lapin's ERROR line for the
/// two channel closes the workers expect
/// and answer themselves, each on a channel of its own: a 404 to a
/// `queue.declare` (a passive declare looking for an older version's queues
/// finds none), and a 405 to the declare of the exclusive upgrade lock
/// (another process holds it and is retiring those queues; logged at debug
/// by `workers::upgrade`). Every other channel close stays an error.
struct ExpectedProbes;

impl<S> tracing_subscriber::layer::Filter<S> for ExpectedProbes {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        let meta = event.metadata();
        if is_client_error_line(meta.target(), *meta.level()) {
            return false;
        }
        if meta.target() != "lapin::channel" || *meta.level() != tracing::Level::ERROR {
            return true;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        !is_expected_probe(&fields.0)
    }
}

/// Whether a line is tracing-actix-web's WARN for a request answered 4xx
/// (a wrong key, a decline, a conflict): the client's error, not the
/// service's, answered with a problem document and counted in
/// `ledger_http_problems_total`; one line each would let any client flood
/// the log. Its 5xx lines are at ERROR and stay.
fn is_client_error_line(target: &str, level: tracing::Level) -> bool {
    target.starts_with("tracing_actix_web") && level == tracing::Level::WARN
}

/// Whether a lapin channel close is the broker's answer to a
/// `queue.declare` (class 50, method 10) that the workers expect: 404 (no
/// such queue), or 405 RESOURCE_LOCKED to the upgrade lock's declare.
fn is_expected_probe(fields: &str) -> bool {
    let declare = fields.contains("class_id: 50, method_id: 10");
    let absent = fields.contains("reply_code: 404");
    let lock_held = fields.contains("reply_code: 405") && fields.contains(".upgrade-lock'");
    declare && (absent || lock_held)
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
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
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed already (not ours): keep an
            // unregistered one, so that /metrics still answers.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        };
        // Histograms keep their samples until the next upkeep (or render):
        // without a scraper they would grow with every request.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .expect("a thread for the metrics' upkeep");
        handle
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

#[cfg(test)]
mod probe_tests {
    use super::{is_client_error_line, is_expected_probe};

    #[test]
    fn client_errors_are_not_logged_and_server_errors_are() {
        assert!(is_client_error_line("tracing_actix_web::middleware", tracing::Level::WARN));
        assert!(!is_client_error_line("tracing_actix_web::middleware", tracing::Level::ERROR));
        assert!(!is_client_error_line("api::error", tracing::Level::WARN));
    }

    #[test]
    fn only_a_404_to_a_queue_declare_and_a_405_to_the_upgrade_lock_are_expected_probes() {
        let probe = "method=Close { reply_code: 404, reply_text: ShortString(\"NOT_FOUND - no queue 'x.inventory'\"), \
                     class_id: 50, method_id: 10 }";
        assert!(is_expected_probe(probe));
        // a publish to a missing exchange, a precondition failure: real errors
        let publish = "method=Close { reply_code: 404, reply_text: ShortString(\"NOT_FOUND - no exchange\"), \
                       class_id: 60, method_id: 40 }";
        assert!(!is_expected_probe(publish));
        let mismatch = "method=Close { reply_code: 406, reply_text: ShortString(\"PRECONDITION_FAILED\"), \
                        class_id: 50, method_id: 10 }";
        assert!(!is_expected_probe(mismatch));
        let lock = "method=Close { reply_code: 405, reply_text: ShortString(\"RESOURCE_LOCKED - cannot obtain \
                    exclusive access to locked queue 'x.upgrade-lock' in vhost '/'\"), class_id: 50, method_id: 10 }";
        assert!(is_expected_probe(lock));
        // another exclusive queue locked: a real error
        let other = "method=Close { reply_code: 405, reply_text: ShortString(\"RESOURCE_LOCKED - cannot obtain \
                     exclusive access to locked queue 'x.inventory' in vhost '/'\"), class_id: 50, method_id: 10 }";
        assert!(!is_expected_probe(other));
    }
}
