//! Per-tenant rate limits: one token bucket per tenant, in this process;
//! and a limit on failed authentications per client address
//! ([`FailedAuths`]), so that wrong keys cannot drain the database pool.
//!
//! Every authenticated request takes a token when its key is checked, before
//! anything else happens, so a request refused with 429 has read nothing and
//! written nothing (no Idempotency-Key row: its retry runs afresh). A replay
//! of a completed Idempotency-Key is cheap (one read), so it gives most of its
//! token back once it is known to be one: replays cost [`REPLAY_COST`] of a
//! token, a tenant replays at ten times its rate. The refund comes after the
//! fact because telling a replay from a new request takes that read, and a
//! tenant over its limit must cost the database nothing.
//!
//! The buckets live in this process: with N API processes behind a load
//! balancer, a tenant gets up to N times its limit in all. They are never
//! evicted; there is one per tenant that made a request since the start.
//!
//! A bucket of this size is a few lines; `governor`'s keyed limiter has one
//! quota for every key, where a tenant here may have its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use ledger::tenants::RateLimit;
use ledger::TenantId;

/// What a replay of a completed Idempotency-Key costs, in tokens.
pub const REPLAY_COST: f64 = 0.1;

pub struct RateLimits {
    default: RateLimit,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// The limit it was last filled under (the tenant's may change).
    limit: RateLimit,
}

impl Bucket {
    /// Adds what `limit` refills since the last look, up to its burst.
    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(limit.per_sec)).min(f64::from(limit.burst));
        self.at = now;
        self.limit = limit;
    }
}

impl RateLimits {
    /// Buckets of `default`'s shape, for tenants without their own.
    pub fn new(default: RateLimit) -> RateLimits {
        RateLimits { default, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token from `tenant`'s bucket (shaped by its `own` limit, if it
    /// has one); when there is none, the whole seconds until there is one.
    pub fn admit(&self, tenant: TenantId, own: Option<RateLimit>) -> Result<(), u32> {
        self.admit_at(tenant, own, Instant::now())
    }

    fn admit_at(&self, tenant: TenantId, own: Option<RateLimit>, now: Instant) -> Result<(), u32> {
        let limit = own.unwrap_or(self.default);
        if limit.per_sec == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("no panic while holding the buckets");
        let bucket = buckets.entry(tenant).or_insert_with(|| Bucket { tokens: f64::from(limit.burst), at: now, limit });
        bucket.refill(limit, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / f64::from(limit.per_sec);
            Err((wait.ceil() as u32).max(1))
        }
    }

    /// Gives back what a replay does not cost, once a request admitted for
    /// `tenant` turned out to be one.
    pub fn replayed(&self, tenant: TenantId) {
        let mut buckets = self.buckets.lock().expect("no panic while holding the buckets");
        if let Some(bucket) = buckets.get_mut(&tenant) {
            bucket.tokens = (bucket.tokens + (1.0 - REPLAY_COST)).min(f64::from(bucket.limit.burst));
        }
    }
}

/// Failed authentications per client address: a bucket per address that
/// each failure (a wrong, revoked or malformed key) takes a token from. An
/// address whose bucket is empty gets 429 before its key is looked up, so a
/// client cycling through wrong keys costs the database at most
/// `AUTH_FAILURES_PER_SEC` lookups a second; a key already in the cache
/// (`keys`) is still answered, so a legitimate client behind the same
/// address keeps working. Successes cost nothing.
pub struct FailedAuths {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Past this many addresses, a failure first drops the buckets that have
/// refilled (a full bucket is what a new address gets anyway).
const ADDRESSES_SWEPT_ABOVE: usize = 10_000;

impl FailedAuths {
    /// `limit.per_sec` 0: no limit.
    pub fn new(limit: RateLimit) -> FailedAuths {
        FailedAuths { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `addr` may have a key looked up; when not, the whole seconds
    /// until it may.
    pub fn check(&self, addr: IpAddr) -> Result<(), u32> {
        self.check_at(addr, Instant::now())
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), u32> {
        if self.limit.per_sec == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("no panic while holding the buckets");
        let Some(bucket) = buckets.get_mut(&addr) else { return Ok(()) };
        bucket.refill(self.limit, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err((((1.0 - bucket.tokens) / f64::from(self.limit.per_sec)).ceil() as u32).max(1))
        }
    }

    /// Counts a failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        self.failed_at(addr, Instant::now())
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) {
        let limit = self.limit;
        if limit.per_sec == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().expect("no panic while holding the buckets");
        if buckets.len() >= ADDRESSES_SWEPT_ABOVE {
            buckets.retain(|_, b| {
                b.refill(limit, now);
                b.tokens < f64::from(limit.burst)
            });
        }
        let bucket = buckets.entry(addr).or_insert_with(|| Bucket { tokens: f64::from(limit.burst), at: now, limit });
        bucket.refill(limit, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;

    fn tenant() -> TenantId {
        TenantId(Uuid::new_v4())
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let limits = RateLimits::new(RateLimit { per_sec: 10, burst: 5 });
        let (t, start) = (tenant(), Instant::now());
        for _ in 0..5 {
            assert_eq!(limits.admit_at(t, None, start), Ok(()));
        }
        assert_eq!(limits.admit_at(t, None, start), Err(1));
        // 10 per second: one token every 100 ms
        assert_eq!(limits.admit_at(t, None, start + Duration::from_millis(100)), Ok(()));
        assert_eq!(limits.admit_at(t, None, start + Duration::from_millis(150)), Err(1));
        // a long quiet spell refills up to the burst, not beyond
        let later = start + Duration::from_secs(60);
        let admitted = (0..20).filter(|_| limits.admit_at(t, None, later).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn tenants_have_their_own_buckets_and_may_have_their_own_limit() {
        let limits = RateLimits::new(RateLimit { per_sec: 1, burst: 2 });
        let (a, b, now) = (tenant(), tenant(), Instant::now());
        assert!(limits.admit_at(a, None, now).is_ok() && limits.admit_at(a, None, now).is_ok());
        assert!(limits.admit_at(a, None, now).is_err());
        assert!(limits.admit_at(b, None, now).is_ok(), "another tenant is not refused");
        let own = Some(RateLimit { per_sec: 1, burst: 50 });
        let c = tenant();
        assert_eq!((0..60).filter(|_| limits.admit_at(c, own, now).is_ok()).count(), 50);
        let unlimited = Some(RateLimit { per_sec: 0, burst: 1 });
        assert!((0..1000).all(|_| limits.admit_at(c, unlimited, now).is_ok()));
    }

    #[test]
    fn retry_after_is_the_whole_seconds_until_a_token() {
        let limits = RateLimits::new(RateLimit { per_sec: 1, burst: 1 });
        let slow = Some(RateLimit { per_sec: 1, burst: 1 });
        let (t, now) = (tenant(), Instant::now());
        assert!(limits.admit_at(t, slow, now).is_ok());
        assert_eq!(limits.admit_at(t, slow, now), Err(1));
        assert_eq!(limits.admit_at(t, slow, now + Duration::from_millis(999)), Err(1));
        assert_eq!(limits.admit_at(t, slow, now + Duration::from_millis(1000)), Ok(()));
    }

    #[test]
    fn an_address_is_refused_lookups_after_its_burst_of_failures_and_recovers_at_the_rate() {
        let limits = FailedAuths::new(RateLimit { per_sec: 2, burst: 3 });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.check_at(a, now), Ok(()));
            limits.failed_at(a, now);
        }
        assert_eq!(limits.check_at(a, now), Err(1), "three failures spent the burst");
        assert_eq!(limits.check_at(b, now), Ok(()), "another address is not refused");
        // two per second: one lookup again after 500 ms
        assert_eq!(limits.check_at(a, now + Duration::from_millis(500)), Ok(()));
        let off = FailedAuths::new(RateLimit { per_sec: 0, burst: 1 });
        for _ in 0..10 {
            off.failed_at(a, now);
        }
        assert_eq!(off.check_at(a, now), Ok(()), "0: no limit");
    }

    #[test]
    fn a_replay_costs_a_tenth_of_a_request() {
        let limits = RateLimits::new(RateLimit { per_sec: 1, burst: 10 });
        let (t, now) = (tenant(), Instant::now());
        let mut admitted = 0;
        while limits.admit_at(t, None, now).is_ok() {
            limits.replayed(t);
            admitted += 1;
        }
        // a request needs a whole token to be let in, and a replay leaves 0.1
        // of it taken: 10 tokens let 91 replays in (90 with float rounding)
        assert!((90..=91).contains(&admitted), "{admitted}");
    }
}
