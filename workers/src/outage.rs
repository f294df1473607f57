//! What a consumer does while PostgreSQL is away. An outage is not the
//! message's fault, so it must not count against the message: the delivery
//! is held, unacknowledged, while the work is retried with backoff until the
//! database answers. Holding spends none of the message's delivery count
//! (RabbitMQ counts a delivery when it comes back: a nack or reject with
//! requeue, or its channel closing), and the consumer takes nothing else
//! meanwhile: its other prefetched deliveries wait unacknowledged too. Only
//! a failure that belongs to the message (it cannot be applied, whatever the
//! database's state) is handed back to the broker and counts toward
//! AMQP_DELIVERY_LIMIT.
//!
//! The hold lasts until the database is back, or until shutdown (the
//! delivery then returns to its queue with the channel, which counts once),
//! or until the broker's `consumer_timeout` (30 minutes by default on 3.10)
//! closes the channel of a delivery unacknowledged for that long, which also
//! counts once: a paid order is dead-lettered only after about
//! consumer_timeout × AMQP_DELIVERY_LIMIT of outage, and kept there for a
//! redrive (at-least-once dead-lettering).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::Error;

/// Delays between attempts while the database is away: 0.2 s doubling to
/// 2 s, so the work resumes within about 2 s of the database's return.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(4)).min(2_000))
}

/// How often a hold that goes on is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Runs `work` until it succeeds or fails for a reason other than the
/// database being unavailable, retrying with [`retry_delay`] in between;
/// `None` when shutdown came first.
pub async fn through<T, F, Fut>(what: &str, shutdown: &mut Shutdown, mut work: F) -> Option<Result<T, Error>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut since: Option<Instant> = None;
    let mut logged = Instant::now();
    let mut attempt = 0;
    loop {
        match work().await {
            Err(e) if e.database_unavailable() => {
                let started = *since.get_or_insert_with(|| {
                    tracing::warn!(error = %e, "PostgreSQL is unavailable: {what} held, retrying until it is back");
                    Instant::now()
                });
                if logged.elapsed() > LOG_EVERY {
                    tracing::warn!(error = %e, waited = ?started.elapsed(), "PostgreSQL still unavailable: {what} held");
                    logged = Instant::now();
                }
                if !shutdown.sleep(retry_delay(attempt)).await {
                    return None;
                }
                attempt += 1;
            }
            done => {
                if let Some(started) = since {
                    tracing::info!(waited = ?started.elapsed(), "PostgreSQL is back: {what} resumed");
                }
                return Some(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_to_two_seconds() {
        let delays: Vec<u64> = (0..8).map(|a| retry_delay(a).as_millis() as u64).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
    }
}
