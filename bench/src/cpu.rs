//! Where the CPU goes: the CPU time (user + system, from `/proc/<pid>/stat`)
//! the API processes, PostgreSQL and the fake provider spent during a
//! workload's measured window, divided by the requests measured in it.
//! PostgreSQL's is summed over its processes (backends, WAL writer,
//! checkpointer...) alive at both ends of the window: the services' pools
//! keep their backends for the whole run, and a process that started or
//! exited inside the window is left out. The benchmark's own process (the
//! clients, and a workload's flood of wrong keys) is read too: it shares
//! the machine's cores with the rest.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Value};

static WATCHED: OnceLock<Watched> = OnceLock::new();

struct Watched {
    api: Vec<u32>,
    provider: Option<u32>,
}

/// The processes whose CPU the windows read: the API processes under test
/// and the fake provider (PostgreSQL's are found by name).
pub(crate) fn watch(api: Vec<u32>, provider: Option<u32>) {
    let _ = WATCHED.set(Watched { api, provider });
}

/// CPU milliseconds spent in a window, by whom.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    pub(crate) api_ms: f64,
    pub(crate) postgres_ms: f64,
    pub(crate) provider_ms: f64,
    /// The benchmark's own process: the load it generates.
    pub(crate) bench_ms: f64,
}

impl Cpu {
    /// Per request, as JSON (`None` for no requests).
    pub(crate) fn per_request(&self, requests: u64) -> Option<Value> {
        (requests > 0).then(|| {
            let n = requests as f64;
            json!({"api_ms": round3(self.api_ms / n), "postgres_ms": round3(self.postgres_ms / n),
                   "provider_ms": round3(self.provider_ms / n), "bench_ms": round3(self.bench_ms / n)})
        })
    }

    /// `api 0.412  postgres 0.803  provider 0.000  bench 0.310` (ms per request).
    pub(crate) fn line(&self, requests: u64) -> String {
        let n = requests.max(1) as f64;
        format!(
            "api {:>7.3}  postgres {:>7.3}  provider {:>7.3}  bench {:>7.3}",
            self.api_ms / n,
            self.postgres_ms / n,
            self.provider_ms / n,
            self.bench_ms / n
        )
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The watched processes' CPU ticks at one moment.
pub(crate) struct Reading {
    api: u64,
    postgres: BTreeMap<u32, u64>,
    provider: u64,
    bench: u64,
}

/// Now, when there is something to watch.
pub(crate) fn read() -> Option<Reading> {
    let w = WATCHED.get()?;
    Some(Reading {
        api: w.api.iter().filter_map(|&pid| ticks(pid)).sum(),
        postgres: postgres(),
        provider: w.provider.and_then(ticks).unwrap_or(0),
        bench: ticks(std::process::id()).unwrap_or(0),
    })
}

/// What was spent from `a` to `b`.
pub(crate) fn between(a: &Reading, b: &Reading) -> Cpu {
    let ms = |t: u64| t as f64 * 1000.0 / hz();
    let pg: u64 = b
        .postgres
        .iter()
        .filter_map(|(pid, after)| a.postgres.get(pid).map(|before| after.saturating_sub(*before)))
        .sum();
    Cpu {
        api_ms: ms(b.api.saturating_sub(a.api)),
        postgres_ms: ms(pg),
        provider_ms: ms(b.provider.saturating_sub(a.provider)),
        bench_ms: ms(b.bench.saturating_sub(a.bench)),
    }
}

fn hz() -> f64 {
    // SAFETY: sysconf(3) reads a constant of the system; no memory is touched.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The CPU milliseconds (user + system) a process has spent so far.
pub(crate) fn process_ms(pid: u32) -> Option<f64> {
    ticks(pid).map(|t| t as f64 * 1000.0 / hz())
}

/// utime + stime of a process, in clock ticks.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: utime and stime are the 12th and 13th
    // fields after the command's closing parenthesis
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Every `postgres` process's ticks, by pid.
fn postgres() -> BTreeMap<u32, u64> {
    let mut found = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return found };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres");
        if let (true, Some(t)) = (is_postgres, ticks(pid)) {
            found.insert(pid, t);
        }
    }
    found
}
