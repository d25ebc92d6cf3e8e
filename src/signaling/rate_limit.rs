//! What each signaling stream may send: a request rate (`--signaling-rate`, a bucket of
//! `--signaling-burst`) and a message size (`--max-message-bytes`). One [`RequestGate`] per
//! gRPC stream or WebSocket, checked before a request is handled, by both transports.
//!
//! A refused request is answered (RESOURCE_EXHAUSTED, -32010) and the stream stays: a client
//! that trickles a burst of candidates should slow down, not reconnect. Refusals have a budget
//! of their own, though: a client refused ten buckets' worth of requests faster than the rate
//! refills is flooding, not bursting, and is cut off, since answering it costs a core as much
//! as serving it.

use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::error::SignalingError;
use crate::metrics::{limit_hit, Limit};

/// Refusals a stream may collect, in buckets, before it is cut off.
const REFUSAL_BUDGET_BURSTS: u32 = 10;

/// The rate and size limits of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests per second on average; 0: no rate limit.
    pub rate: u32,
    /// Requests at once above the rate.
    pub burst: u32,
    /// Largest message answered.
    pub max_message_bytes: usize,
}

/// tokio's clock, so the limits follow paused time in tests (`tokio::time::advance`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// One stream's limits, checked request by request.
#[derive(Debug)]
pub struct RequestGate {
    limits: RequestLimits,
    /// `None` when the rate is not limited.
    buckets: Option<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    requests: Bucket,
    /// Refusals refill at the request rate; empty: the stream is flooding.
    refusals: Bucket,
}

impl RequestGate {
    pub fn new(limits: RequestLimits) -> Self {
        let buckets = NonZeroU32::new(limits.rate).map(|rate| {
            let burst = NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN);
            let refusal_burst = burst
                .saturating_mul(NonZeroU32::new(REFUSAL_BUDGET_BURSTS).unwrap_or(NonZeroU32::MIN));
            let quota = |burst| Quota::per_second(rate).allow_burst(burst);
            Buckets {
                requests: RateLimiter::direct_with_clock(quota(burst), TokioClock),
                refusals: RateLimiter::direct_with_clock(quota(refusal_burst), TokioClock),
            }
        });
        Self { limits, buckets }
    }

    /// Admits one request of `len` bytes (its encoded size), or says why not; every refusal
    /// is counted in `remotemedia_limit_hits_total`.
    ///
    /// # Errors
    /// `MessageTooLarge` and `RateLimited` (answer them, the stream stays), or
    /// `RateLimitCutOff` (end the stream).
    pub fn admit(&self, len: usize) -> Result<(), SignalingError> {
        if let Some(buckets) = &self.buckets {
            if buckets.requests.check().is_err() {
                limit_hit(Limit::RequestsPerSecond, 1);
                if buckets.refusals.check().is_err() {
                    return Err(SignalingError::RateLimitCutOff(self.limits.rate));
                }
                return Err(SignalingError::RateLimited(self.limits.rate));
            }
        }
        if len > self.limits.max_message_bytes {
            limit_hit(Limit::SignalingMessageBytes, 1);
            return Err(SignalingError::MessageTooLarge {
                len,
                limit: self.limits.max_message_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gate(rate: u32, burst: u32) -> RequestGate {
        RequestGate::new(RequestLimits {
            rate,
            burst,
            max_message_bytes: 100,
        })
    }

    fn admitted(gate: &RequestGate, n: usize) -> usize {
        (0..n).filter(|_| gate.admit(10).is_ok()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_refills_it() {
        let gate = gate(10, 5);
        assert_eq!(admitted(&gate, 8), 5, "the bucket holds the burst");
        assert!(matches!(
            gate.admit(10),
            Err(SignalingError::RateLimited(10))
        ));
        // 10 per second: one more every 100 ms.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(admitted(&gate, 3), 1);
        // A quiet second refills the bucket, never above the burst.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(admitted(&gate, 8), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_refused_ten_bursts_at_once_is_cut_off() {
        let gate = gate(10, 5);
        assert_eq!(admitted(&gate, 5), 5);
        // 50 refusals fit the budget (10 bursts); the 51st is a flood.
        for _ in 0..50 {
            assert!(matches!(
                gate.admit(10),
                Err(SignalingError::RateLimited(_))
            ));
        }
        assert!(matches!(
            gate.admit(10),
            Err(SignalingError::RateLimitCutOff(10))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_slows_down_after_refusals_is_not_cut_off() {
        let gate = gate(10, 5);
        // Bursts of 8 every second: 3 refused each time, forever, and never cut off.
        for _ in 0..100 {
            assert_eq!(admitted(&gate, 8), 5);
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_checked_and_rate_zero_means_unlimited() {
        let gate = gate(0, 0);
        assert_eq!(admitted(&gate, 10_000), 10_000);
        assert!(gate.admit(100).is_ok());
        assert!(matches!(
            gate.admit(101),
            Err(SignalingError::MessageTooLarge {
                len: 101,
                limit: 100
            })
        ));
    }
}
