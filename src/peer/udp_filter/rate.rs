//! Token buckets per source IP, in a map of bounded size: a flood from spoofed addresses
//! cannot grow it. Hand-written because the keyed limiters on crates.io (governor) keep a
//! key per source without a bound, which is what a spoofing flood exploits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked at most; beyond this, new sources share one bucket.
pub(crate) const MAX_SOURCES: usize = 4096;
/// How often a full map is swept of the sources whose bucket has refilled.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// `rate` tokens per second up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimit {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            updated: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate).min(limit.burst);
        self.updated = now;
    }

    fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source token buckets (sans-IO: the caller passes the time).
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
    /// Shared by new sources while the map is full of sources still spending.
    overflow: Bucket,
    capacity: usize,
    last_sweep: Option<Instant>,
}

impl SourceLimiter {
    pub(crate) fn new(limit: RateLimit, capacity: usize, now: Instant) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
            overflow: Bucket::full(limit, now),
            capacity,
            last_sweep: None,
        }
    }

    /// Spends a token of `source`'s bucket; `false` when it has none left.
    pub(crate) fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        let limit = self.limit;
        if let Some(bucket) = self.buckets.get_mut(&source) {
            return bucket.take(limit, now);
        }
        if self.buckets.len() >= self.capacity {
            self.sweep(now);
        }
        if self.buckets.len() < self.capacity {
            let mut bucket = Bucket::full(limit, now);
            let allowed = bucket.take(limit, now);
            self.buckets.insert(source, bucket);
            allowed
        } else {
            self.overflow.take(limit, now)
        }
    }

    /// Forgets the sources whose bucket is full again: a new bucket would be the same.
    /// At most once a second, so a flood of new sources costs O(1) per datagram amortised.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let limit = self.limit;
        self.buckets.retain(|_, bucket| {
            bucket.refill(limit, now);
            bucket.tokens < limit.burst
        });
    }

    /// Sources tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        rate: 10.0,
        burst: 5.0,
    };

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn a_source_gets_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(LIMIT, 16, t0);
        let allowed = (0..20).filter(|_| limiter.allow(t0, ip(1))).count();
        assert_eq!(allowed, 5);
        // 10 per second: one more every 100 ms.
        assert!(!limiter.allow(t0 + Duration::from_millis(50), ip(1)));
        assert!(limiter.allow(t0 + Duration::from_millis(100), ip(1)));
        assert!(!limiter.allow(t0 + Duration::from_millis(100), ip(1)));
        // Refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| limiter.allow(later, ip(1))).count(), 5);
    }

    #[test]
    fn sources_do_not_share_buckets() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(LIMIT, 16, t0);
        for _ in 0..20 {
            limiter.allow(t0, ip(1));
        }
        assert!(limiter.allow(t0, ip(2)));
    }

    #[test]
    fn a_spoofing_flood_neither_grows_the_map_nor_escapes_the_limit() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(LIMIT, 8, t0);
        // Eight sources fill the map, each with one token spent (not full: kept).
        for n in 0..8 {
            assert!(limiter.allow(t0, ip(n)));
        }
        // Thousands of new sources at once share the overflow bucket's burst.
        let allowed = (100..10_100).filter(|&n| limiter.allow(t0, ip(n))).count();
        assert_eq!(allowed, 5);
        assert_eq!(limiter.tracked(), 8);
    }

    #[test]
    fn refilled_sources_make_room_for_new_ones() {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(LIMIT, 2, t0);
        assert!(limiter.allow(t0, ip(1)));
        assert!(limiter.allow(t0, ip(2)));
        // A second later both buckets are full again: the sweep forgets them.
        let later = t0 + Duration::from_secs(1);
        assert!(limiter.allow(later, ip(3)));
        assert!(limiter.tracked() <= 2);
        for _ in 0..4 {
            assert!(limiter.allow(later, ip(3)));
        }
        assert!(!limiter.allow(later, ip(3)), "ip 3 has its own bucket");
    }
}
