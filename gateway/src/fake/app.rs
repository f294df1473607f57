//! What every handler shares.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

use crate::faults::Faults;
use crate::settings::Settings;
use crate::state::State;

pub struct App {
    pub settings: Settings,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    durable: watch::Receiver<u64>,
    /// Wakes the webhook dispatcher when deliveries are queued.
    pub wake: Notify,
    pub stats: Stats,
    /// Idempotency keys belong to an account; this is ours.
    pub scope: String,
    /// Where this process listens (`http://host:port`), for links it hands
    /// out such as a 3-D Secure page. A restart on another port leaves the
    /// links already handed out pointing at the old one.
    pub url: String,
    /// What every answer under `/v1` is held, in milliseconds (`latency_ms`).
    latency_ms: AtomicU64,
}

impl App {
    pub fn new(settings: Settings, state: State, faults: Faults, durable: watch::Receiver<u64>, url: String) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, settings.secret_key.as_bytes());
        let scope = hex::encode(&digest.as_ref()[..8]);
        let settings_latency = settings.latency_ms;
        Self {
            settings,
            state: Mutex::new(state),
            faults: Mutex::new(faults),
            durable,
            wake: Notify::new(),
            stats: Stats::default(),
            scope,
            url,
            latency_ms: AtomicU64::new(settings_latency),
        }
    }

    /// How long every answer under `/v1` is held.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    pub fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Lock order: state, then faults.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last journal batch known to be on disk.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    pub async fn wait_durable(&self, seq: u64) {
        let mut rx = self.durable.clone();
        // The writer aborts the process rather than stop, so this ends.
        let _ = rx.wait_for(|&durable| durable >= seq).await;
    }

    pub fn idempotency_ttl_ms(&self) -> i64 {
        (self.settings.idempotency_ttl_secs * 1000.0) as i64
    }

    pub fn authorization_expiry_ms(&self) -> i64 {
        (self.settings.authorization_expiry_secs * 1000.0) as i64
    }

    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let base = self.settings.webhook_retry_ms.max(1);
        let factor = 1u64 << attempts.saturating_sub(1).min(20);
        Duration::from_millis(base.saturating_mul(factor).min(self.settings.webhook_retry_max_ms))
    }
}

/// Counters since this process started (payments themselves are durable and
/// counted from the state).
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    by_route: Mutex<BTreeMap<String, u64>>,
    pub replays: AtomicU64,
    pub in_flight_conflicts: AtomicU64,
    pub idempotency_mismatches: AtomicU64,
    pub webhook_attempts: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhook_deliveries: AtomicU64,
}

impl Stats {
    pub fn request(&self, route: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.by_route.lock().unwrap_or_else(|e| e.into_inner()).entry(route.to_owned()).or_default() += 1;
    }

    pub fn by_route(&self) -> BTreeMap<String, u64> {
        self.by_route.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}
