//! Which worker gets a new session (DESIGN.md §6): drop workers that cannot take it, then the
//! lower load of two random choices, ties broken at random. Sessions this frontend placed in
//! the last seconds count as load, so a burst of offers spreads instead of herding onto the
//! worker whose heartbeat looked emptiest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use super::workers::WorkerStatus;

/// How long a placement counts as load before the worker's heartbeat includes it.
pub const RECENT_WINDOW: Duration = Duration::from_secs(3);

/// Placements this frontend made recently, per worker.
#[derive(Debug, Default)]
pub struct RecentPlacements {
    by_worker: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RecentPlacements {
    pub fn record(&self, worker_id: &str, now: Instant) {
        self.by_worker
            .lock()
            .entry(worker_id.to_owned())
            .or_default()
            .push_back(now);
    }

    /// Placements on each worker within [`RECENT_WINDOW`] of `now` (older ones are forgotten).
    pub fn counts(&self, now: Instant) -> HashMap<String, u32> {
        let mut by_worker = self.by_worker.lock();
        by_worker.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) > RECENT_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        by_worker
            .iter()
            .map(|(id, times)| (id.clone(), times.len() as u32))
            .collect()
    }
}

/// Why placement chose the worker it chose (for the placement span and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It was the only worker able to take the session.
    OnlyCandidate,
    /// Of two workers drawn at random, it had the lower load.
    LowerLoad,
    /// Two workers drawn at random had the same load; a coin picked it.
    Tie,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::OnlyCandidate => "only worker able to take it",
            Self::LowerLoad => "lower load of two random choices",
            Self::Tie => "equal load of two random choices, picked at random",
        }
    }
}

/// A placement decision.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'w> {
    pub worker: &'w WorkerStatus,
    /// Workers that could take the session (fresh, ready, not draining, not full, not
    /// excluded).
    pub candidates: usize,
    pub reason: Reason,
    /// Sessions over capacity of the chosen worker, recent placements included.
    pub load: f64,
    /// The other worker drawn and its load, when two were compared.
    pub other: Option<(&'w WorkerStatus, f64)>,
}

/// Picks a worker for one new session, or `None` when no worker can take it.
///
/// `recent` are placements not yet in the heartbeats; `excluded` are workers this offer
/// already failed on.
pub fn choose<'w>(
    workers: &'w [WorkerStatus],
    recent: &HashMap<String, u32>,
    excluded: &HashSet<String>,
    now_ms: u64,
    rng: &mut impl Rng,
) -> Option<Choice<'w>> {
    let load = |w: &WorkerStatus| {
        let sessions = w.active_sessions + recent.get(&w.id).copied().unwrap_or(0);
        (sessions, f64::from(sessions) / f64::from(w.capacity.max(1)))
    };
    let eligible: Vec<&WorkerStatus> = workers
        .iter()
        .filter(|w| w.takes_sessions(now_ms) && !excluded.contains(&w.id))
        .filter(|w| load(w).0 < w.capacity)
        .collect();
    let candidates = eligible.len();
    match candidates {
        0 => None,
        1 => Some(Choice {
            worker: eligible[0],
            candidates,
            reason: Reason::OnlyCandidate,
            load: load(eligible[0]).1,
            other: None,
        }),
        n => {
            let first = rng.random_range(0..n);
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            let (a, b) = (eligible[first], eligible[second]);
            let (load_a, load_b) = (load(a).1, load(b).1);
            let (reason, a_wins) = if load_a < load_b {
                (Reason::LowerLoad, true)
            } else if load_b < load_a {
                (Reason::LowerLoad, false)
            } else {
                (Reason::Tie, rng.random_bool(0.5))
            };
            let ((worker, load), other) = if a_wins {
                ((a, load_a), (b, load_b))
            } else {
                ((b, load_b), (a, load_a))
            };
            Some(Choice {
                worker,
                candidates,
                reason,
                load,
                other: Some(other),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cluster::workers::test_worker;
    use rand::SeedableRng;

    const NOW: u64 = 1_000_500;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn full_draining_stale_and_excluded_workers_are_never_chosen() {
        let workers = vec![
            test_worker("full", 10, 10),
            WorkerStatus {
                draining: true,
                ..test_worker("draining", 0, 10)
            },
            WorkerStatus {
                updated_at_ms: 0,
                ..test_worker("stale", 0, 10)
            },
            test_worker("excluded", 0, 10),
            test_worker("ok", 9, 10),
        ];
        let excluded = HashSet::from(["excluded".to_owned()]);
        let mut rng = rng();
        for _ in 0..50 {
            let chosen = choose(&workers, &HashMap::new(), &excluded, NOW, &mut rng).unwrap();
            assert_eq!(chosen.worker.id, "ok");
            assert_eq!(chosen.candidates, 1);
            assert_eq!(chosen.reason, Reason::OnlyCandidate);
        }
        // Recent placements fill "ok" up: nothing is left.
        let recent = HashMap::from([("ok".to_owned(), 1)]);
        assert!(choose(&workers, &recent, &excluded, NOW, &mut rng).is_none());
    }

    #[test]
    fn two_choices_never_pick_the_busiest_of_three() {
        let workers = vec![
            test_worker("a", 1, 10),
            test_worker("b", 5, 10),
            test_worker("c", 9, 10),
        ];
        let mut rng = rng();
        let mut picks: HashMap<String, u32> = HashMap::new();
        for _ in 0..300 {
            let chosen = choose(&workers, &HashMap::new(), &HashSet::new(), NOW, &mut rng).unwrap();
            assert_eq!(chosen.candidates, 3);
            assert_eq!(chosen.reason, Reason::LowerLoad);
            let (other, other_load) = chosen.other.unwrap();
            assert!(
                chosen.load < other_load,
                "{} vs {}",
                chosen.worker.id,
                other.id
            );
            *picks.entry(chosen.worker.id.clone()).or_default() += 1;
        }
        assert_eq!(
            picks.get("c"),
            None,
            "the busiest of three lost every pair: {picks:?}"
        );
        // "a" wins both of its pairs, "b" only the pair without "a": about 2:1.
        assert!(picks["a"] > picks["b"], "{picks:?}");
    }

    #[test]
    fn a_burst_spreads_when_recent_placements_count_as_load() {
        let workers: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| test_worker(id, 0, 100))
            .collect();
        let recent = RecentPlacements::default();
        let now = Instant::now();
        let mut rng = rng();
        for _ in 0..30 {
            let counts = recent.counts(now);
            let chosen = choose(&workers, &counts, &HashSet::new(), NOW, &mut rng).unwrap();
            recent.record(&chosen.worker.id, now);
        }
        let counts = recent.counts(now);
        for id in ["a", "b", "c"] {
            let n = counts.get(id).copied().unwrap_or(0);
            assert!((6..=14).contains(&n), "{id} got {n} of 30: {counts:?}");
        }
        // Once the window passes, the heartbeats carry the load again.
        assert!(recent.counts(now + RECENT_WINDOW * 2).is_empty());
    }
}
