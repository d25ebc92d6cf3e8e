//! A fixed-bucket latency histogram per node: lock-free to record from the node's task, cheap
//! to snapshot, and shaped like a Prometheus histogram so metrics can export it as is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in µs: 10 µs .. 100 ms in 1-2.5-5 steps. A 20 ms audio frame
/// must be handled well under 20 ms, so the interesting range is covered finely; the last,
/// implicit bucket (+Inf) catches anything slower.
pub const LATENCY_BUCKETS_US: [u64; 13] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

const BUCKETS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Live counters (one per bucket, plus +Inf).
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    counts: [AtomicU64; BUCKETS],
}

impl AtomicHistogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
        }
    }
}

/// Calls per bucket (not cumulative); `counts[i]` pairs with [`LATENCY_BUCKETS_US`]`[i]`, the
/// last entry is +Inf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LatencyHistogram {
    pub counts: [u64; BUCKETS],
}

impl LatencyHistogram {
    /// Cumulative counts as (upper bound in seconds, calls ≤ bound), +Inf last: the
    /// Prometheus `_bucket{le=...}` series.
    pub fn cumulative_seconds(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                total += c;
                let le = LATENCY_BUCKETS_US
                    .get(i)
                    .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
                (le, total)
            })
            .collect()
    }

    /// The smallest bucket bound below which at least `q` (0..1) of the calls fall; `None`
    /// when empty or when that bucket is +Inf.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        self.cumulative_seconds()
            .into_iter()
            .find(|&(_, c)| c >= wanted)
            .and_then(|(le, _)| le.is_finite().then(|| Duration::from_secs_f64(le)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_right_buckets() {
        let h = AtomicHistogram::default();
        h.record(Duration::from_micros(5));
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(11));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(1));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[8], 1);
        assert_eq!(s.counts[13], 1);
        let cum = s.cumulative_seconds();
        assert_eq!(cum.last(), Some(&(f64::INFINITY, 5)));
        assert_eq!(s.quantile_upper_bound(0.5), Some(Duration::from_micros(25)));
        assert_eq!(s.quantile_upper_bound(1.0), None);
        assert_eq!(LatencyHistogram::default().quantile_upper_bound(0.5), None);
    }
}
