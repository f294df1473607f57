//! API keys on the request path: a short cache of key lookups, and the record
//! of when each key was last used.
//!
//! **The cache.** A key found live is trusted for `API_KEY_CACHE_MS` (2 s by
//! default) from the moment its lookup was sent, then looked up again. So a
//! revoked key is refused by every API process at most that long after the
//! revocation committed, with no message between processes to lose. A key
//! the database does not know (or knows as revoked) is remembered as unknown
//! for the same period, so a client repeating a wrong key costs one lookup
//! per period, not one per request; a new key still works from its first
//! request (it is random: nobody sends it before it exists). A key that does
//! not even have the key shape costs no lookup at all (`auth`). A tenant's
//! rate limit comes with its key, so a changed limit applies within the same
//! period.
//!
//! **Last used.** Each authenticated request notes its key's id and the time
//! in memory; a loop writes them every `API_KEY_LAST_USED_FLUSH_SECS` (60 s)
//! in one statement, whatever the number of keys and requests, and once more
//! at shutdown. `last_used_at` is therefore at most that interval behind,
//! and a process that crashes loses at most one interval of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use ledger::tenants::KeyOwner;
use service::shutdown::Shutdown;
use uuid::Uuid;

pub struct Keys {
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// key digest → its owner, and when the lookup that found it was sent
    found: HashMap<Vec<u8>, (KeyOwner, Instant)>,
    /// key digest → when the lookup that found no live key was sent
    unknown: HashMap<Vec<u8>, Instant>,
    /// key id → the last time it authenticated a request, not yet written
    used: HashMap<Uuid, DateTime<Utc>>,
}

/// Past this many cached keys, an insert first drops the expired ones (keys
/// revoked or no longer used would otherwise stay until the process ends).
const SWEEP_ABOVE: usize = 10_000;

/// What the cache knows of a key, without asking the database.
#[derive(Debug, Clone, Copy)]
pub enum Cached {
    /// Live, owned by this tenant.
    Owner(KeyOwner),
    /// Looked up within the period and not found live.
    Unknown,
    /// Not looked up within the period: ask the database. `known`: it was
    /// found live before (its period ran out), so it is no stranger's guess
    /// and its lookup is never refused for the address's failures.
    Ask { known: bool },
}

impl Keys {
    pub fn new(ttl: Duration) -> Keys {
        Keys { ttl, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("no panic while holding the key cache")
    }

    /// What the cache knows of the key with `digest` (noting a live key's
    /// use), without asking the database.
    pub fn cached(&self, digest: &[u8]) -> Cached {
        let mut inner = self.lock();
        let fresh = inner.found.get(digest).filter(|(_, at)| at.elapsed() < self.ttl).map(|(owner, _)| *owner);
        if let Some(owner) = fresh {
            inner.used.insert(owner.key_id, Utc::now());
            return Cached::Owner(owner);
        }
        if inner.unknown.get(digest).is_some_and(|at| at.elapsed() < self.ttl) {
            return Cached::Unknown;
        }
        Cached::Ask { known: inner.found.contains_key(digest) }
    }

    /// The owner of the live key with `digest`, asked of the database (and
    /// noted in the cache, found or not); `None` for an unknown or revoked
    /// key.
    pub async fn look_up(&self, pool: &Pool, digest: Vec<u8>) -> ledger::Result<Option<KeyOwner>> {
        // The period starts before the lookup is sent: whatever it finds was
        // true at some moment after `sent`.
        let sent = Instant::now();
        let client = pool.get().await?;
        let found = ledger::tenants::authenticate(&client, &digest).await?;
        let mut inner = self.lock();
        let ttl = self.ttl;
        match found {
            Some(owner) => {
                inner.unknown.remove(&digest);
                if !ttl.is_zero() {
                    if inner.found.len() >= SWEEP_ABOVE {
                        inner.found.retain(|_, (_, at)| at.elapsed() < ttl);
                    }
                    inner.found.insert(digest, (owner, sent));
                }
                inner.used.insert(owner.key_id, Utc::now());
            }
            // revoked since it was cached (or never known): forget it, and
            // remember it as unknown for the period
            None => {
                inner.found.remove(&digest);
                if !ttl.is_zero() {
                    if inner.unknown.len() >= SWEEP_ABOVE {
                        inner.unknown.retain(|_, at| at.elapsed() < ttl);
                    }
                    // a flood of distinct wrong keys within one period is
                    // not remembered past the bound: the failure limit per
                    // address (`limits`) is what stops it
                    if inner.unknown.len() < SWEEP_ABOVE {
                        inner.unknown.insert(digest, sent);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Writes the noted uses in one statement; on failure they are kept for
    /// the next attempt. Returns how many keys moved.
    pub async fn flush(&self, pool: &Pool) -> ledger::Result<u64> {
        let used: Vec<(Uuid, DateTime<Utc>)> = std::mem::take(&mut self.lock().used).into_iter().collect();
        if used.is_empty() {
            return Ok(0);
        }
        let written = match pool.get().await {
            Ok(client) => ledger::tenants::record_use(&client, &used).await,
            Err(e) => Err(e.into()),
        };
        if written.is_err() {
            let mut inner = self.lock();
            for (id, at) in used {
                let newest = inner.used.entry(id).or_insert(at);
                *newest = (*newest).max(at);
            }
        }
        written
    }
}

/// Writes the keys' last use every `every` until shutdown, then once more.
pub async fn record_last_used(keys: std::sync::Arc<Keys>, pool: Pool, every: Duration, mut shutdown: Shutdown) {
    loop {
        let running = shutdown.sleep(every).await;
        if let Err(e) = keys.flush(&pool).await {
            tracing::warn!(error = %e, "could not record when API keys were last used; will retry");
        }
        if !running {
            return;
        }
    }
}
