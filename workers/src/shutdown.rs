//! Supervision of a worker's sessions: reconnect with backoff until
//! shutdown. The shutdown signal itself is `service::shutdown`'s.

use std::time::Duration;

pub use service::shutdown::{channel, signalled, Shutdown, Trigger};

/// Reconnect delays: 0.2 s doubling to 10 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(6)).min(10_000))
}

/// Set by a session once it is connected, so that the next failure starts
/// the backoff from the beginning.
#[derive(Clone, Default)]
pub struct Connected(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Connected {
    pub fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    fn take(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Runs `session` until shutdown: when it fails (the broker or the database
/// went away), waits with backoff and runs it again.
pub async fn supervise<F, Fut>(name: &str, mut shutdown: Shutdown, mut session: F)
where
    F: FnMut(Shutdown, Connected) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::Error>>,
{
    let mut attempt = 0;
    let connected = Connected::default();
    while !shutdown.is_set() {
        match session(shutdown.clone(), connected.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if connected.take() {
                    attempt = 0;
                }
                tracing::warn!(error = %e, "{name} lost its connection; reconnecting");
                if !shutdown.sleep(backoff(attempt)).await {
                    return;
                }
                attempt += 1;
            }
        }
    }
}
