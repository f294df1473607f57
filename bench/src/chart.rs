//! The chart beside `latest.json`: throughput and latency percentiles per
//! workload and concurrency, the service beside pgbench's ceiling, drawn
//! from the same report the JSON file holds.

use plotters::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};

/// One bar group: a workload at one concurrency.
struct Group {
    label: String,
    ceiling: bool,
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

fn short(workload: &str) -> String {
    match workload {
        "new charge" => "charge".into(),
        "purchase (res+charge)" => "purchase".into(),
        "purchase (live workers)" => "purchase+workers".into(),
        "new charge (one buyer locked)" => "charge, locked buyer".into(),
        "new charge (under bad keys)" => "charge, bad keys".into(),
        // its latencies are the lag from an event's commit to its receipt
        crate::webhooks::NAME => "webhooks (lag)".into(),
        // the growth pair: "new charge (empty)", "new charge (10M)"
        w if w.starts_with("new charge (") => {
            format!("charge {}", w.trim_start_matches("new charge (").trim_end_matches(')'))
        }
        w => w.split_whitespace().next().unwrap_or(w).into(),
    }
}

fn groups(report: &Value) -> Vec<Group> {
    let mut out = Vec::new();
    let growth: Vec<&Value> = report["growth"]["by_concurrency"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|pair| [&pair["empty"], &pair["grown"]])
        .collect();
    let fairness = report["fairness"].as_array().into_iter().flatten().map(|f| &f["figures"]);
    let service: Vec<&Value> =
        report["service"].as_array().into_iter().flatten().chain(fairness).chain(growth).collect();
    let pgbench: Vec<&Value> = report["pgbench"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(report["yardstick"].as_array().into_iter().flatten())
        .collect();
    for (figures, ceiling) in [(service, false), (pgbench, true)] {
        for f in figures {
            let n = |k: &str| f[k].as_f64().unwrap_or(0.0);
            let workload = f["workload"].as_str().unwrap_or("?");
            let name = match (ceiling, workload.starts_with("yardstick")) {
                (true, true) => "yardstick".to_owned(),
                (true, false) => "pgbench".to_owned(),
                (false, _) => short(workload),
            };
            out.push(Group {
                label: format!("{name} @{}", f["concurrency"]),
                ceiling,
                rps: n("rps"),
                p50: n("p50_ms"),
                p90: n("p90_ms"),
                p99: n("p99_ms"),
            });
        }
    }
    out
}

/// Writes an SVG with two panels: requests per second, and p50/p90/p99 in
/// milliseconds on a log scale.
pub fn write(report: &Value, path: &str) -> Result<()> {
    let groups = groups(report);
    if groups.is_empty() {
        return Err(Error::Chart("no figures to chart".into()));
    }
    let n = groups.len() as f64;
    let width = (140 * groups.len()).max(900) as u32;
    let root = SVGBackend::new(path, (width, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_err)?;
    let title = format!(
        "ledger-bench {} on {} cores, {} s per workload",
        report["git_revision"].as_str().unwrap_or("?"),
        report["cores"],
        report["duration_secs"]
    );
    let root = root.titled(&title, ("sans-serif", 22)).map_err(chart_err)?;
    let (top, bottom) = root.split_vertically(420);
    let label_style = ("sans-serif", 13).into_font();
    let service = RGBColor(52, 101, 164);
    let ceiling = RGBColor(204, 0, 0);

    // Throughput.
    let max_rps = groups.iter().map(|g| g.rps).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&top)
        .caption("requests per second (service blue, pgbench on the same SQL red)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..max_rps)
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("req/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(chart_err)?;
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            let color = if g.ceiling { ceiling } else { service };
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, g.rps)], color.filled())
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            Text::new(format!("{:.0}", g.rps), (i as f64 + 0.2, g.rps + max_rps * 0.03), label_style.clone())
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(
            groups
                .iter()
                .enumerate()
                .map(|(i, g)| Text::new(g.label.clone(), (i as f64 + 0.1, max_rps * 0.97), label_style.clone())),
        )
        .map_err(chart_err)?;

    // Latency percentiles, log scale.
    // Headroom above the tallest bar for the labels.
    let max_ms = groups.iter().map(|g| g.p99).fold(1.0, f64::max) * 8.0;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency in ms, log scale: p50, p90, p99 (lighter to darker)", ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (0.1f64..max_ms).log_scale())
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ms")
        .y_label_formatter(&|v| if *v < 1.0 { format!("{v:.1}") } else { format!("{v:.0}") })
        .draw()
        .map_err(chart_err)?;
    for (k, shade) in [0.35, 0.65, 1.0].into_iter().enumerate() {
        chart
            .draw_series(groups.iter().enumerate().map(|(i, g)| {
                let base = if g.ceiling { ceiling } else { service };
                let mix = |c: u8| (255.0 - (255.0 - c as f64) * shade) as u8;
                let color = RGBColor(mix(base.0), mix(base.1), mix(base.2));
                let v = [g.p50, g.p90, g.p99][k].max(0.1);
                let x = i as f64 + 0.12 + 0.26 * k as f64;
                Rectangle::new([(x, 0.1), (x + 0.24, v)], color.filled())
            }))
            .map_err(chart_err)?;
    }
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            Text::new(format!("p99 {:.1}", g.p99), (i as f64 + 0.1, g.p99.max(0.1) * 1.25), label_style.clone())
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(
            groups
                .iter()
                .enumerate()
                .map(|(i, g)| Text::new(g.label.clone(), (i as f64 + 0.1, max_ms / 1.3), label_style.clone())),
        )
        .map_err(chart_err)?;
    root.present().map_err(chart_err)?;
    Ok(())
}

/// plotters' drawing errors are generic over the backend; only their message matters here.
fn chart_err(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}
