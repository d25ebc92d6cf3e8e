//! The autoscaler's steps as plain state (DESIGN.md §6): no clients, no clocks; the controller
//! asks [`Autoscaling::next`] for one action, performs it and [`Autoscaling::report`]s how it
//! went.
//!
//! A scale-down is deterministic: drain the chosen worker (fewest sessions), wait until it has
//! none or the drain timeout passed, evict that exact pod (the Eviction API, so the
//! PodDisruptionBudget is honoured; refused evictions are retried with a backoff), and only
//! then lower the replicas. The ReplicaSet's replacement for the evicted pod, if it made one,
//! is then Pending, the pod it removes first, so no other worker goes. If the load rises
//! before the pod is evicted, the scale-down is abandoned and the worker undrained.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::autoscale::{AutoscalePolicy, ScaleStep};
use super::workers::WorkerStatus;

/// First wait after a refused eviction (a PodDisruptionBudget's 429); doubles up to
/// [`EVICTION_BACKOFF_MAX`].
pub const EVICTION_BACKOFF: Duration = Duration::from_secs(1);
pub const EVICTION_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the controller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the Deployment's replicas to `to` (more workers).
    ScaleUp { to: u32 },
    /// Ask the worker to take no new sessions.
    Drain { worker: String },
    /// The scale-down was abandoned: the worker takes sessions again.
    Undrain { worker: String },
    /// Evict the worker's pod through the Eviction API.
    Evict { worker: String },
    /// The chosen pod is gone: lower the replicas to `to`.
    ScaleDown { to: u32 },
}

/// How an [`Action`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The API server refused for now (429: the disruption budget forbids the eviction).
    Refused,
    /// The pod (or the worker) no longer exists.
    Gone,
    /// Anything else (unreachable, timed out, forbidden): tried again later.
    Failed,
}

/// Where a scale-down is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// `worker` was asked to drain at `since`; the replicas go to `to` once it is evicted.
    Draining {
        worker: String,
        to: u32,
        since: Instant,
    },
    /// Evicting `worker`: the next attempt at `retry_at`, then waiting `backoff` more.
    Evicting {
        worker: String,
        to: u32,
        retry_at: Instant,
        backoff: Duration,
    },
    /// The pod is gone: lower the replicas to `to`.
    Lowering {
        to: u32,
    },
}

/// The leader's autoscaling state.
#[derive(Debug)]
pub struct Autoscaling {
    policy: AutoscalePolicy,
    /// How long a drained worker's sessions may run before its pod is evicted anyway (its
    /// SIGTERM then gives them the worker's own drain timeout).
    drain_timeout: Duration,
    phase: Phase,
    /// When the replicas last changed (or a scale-down was abandoned): the cooldown's start.
    last_change: Option<Instant>,
}

impl Autoscaling {
    pub fn new(policy: AutoscalePolicy, drain_timeout: Duration) -> Self {
        Self {
            policy,
            drain_timeout,
            phase: Phase::Idle,
            last_change: None,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The action for this round at `now`, given the Deployment's `replicas`, the live
    /// `workers` (joined with their pods) and the pods being deleted.
    pub fn next(
        &mut self,
        now: Instant,
        replicas: u32,
        workers: &[WorkerStatus],
        deleting: &HashSet<String>,
    ) -> Option<Action> {
        let sessions = workers.iter().map(|w| u64::from(w.active_sessions)).sum();
        let wanted = self.policy.desired(sessions);
        match self.phase.clone() {
            Phase::Idle => self.idle(now, replicas, workers, deleting, wanted),
            Phase::Draining { worker, to, since } => {
                if wanted >= replicas {
                    return Some(Action::Undrain { worker });
                }
                let Some(status) = workers.iter().find(|w| w.id == worker) else {
                    // Its heartbeat or pod is gone (it crashed or was deleted): nothing to
                    // evict; the policy decides again.
                    self.phase = Phase::Idle;
                    return None;
                };
                // Its count of sessions counts only once its heartbeat says it drains (no
                // session can start after that).
                let empty = status.draining && status.active_sessions == 0;
                if empty || now.duration_since(since) >= self.drain_timeout {
                    self.phase = Phase::Evicting {
                        worker: worker.clone(),
                        to,
                        retry_at: now,
                        backoff: EVICTION_BACKOFF,
                    };
                    return Some(Action::Evict { worker });
                }
                // Not draining yet by its heartbeat: the request was lost or the worker
                // restarted. Asking again is harmless.
                (!status.draining).then_some(Action::Drain { worker })
            }
            Phase::Evicting {
                worker, retry_at, ..
            } => {
                if wanted >= replicas {
                    return Some(Action::Undrain { worker });
                }
                (now >= retry_at).then_some(Action::Evict { worker })
            }
            Phase::Lowering { to } => {
                if wanted > to || replicas <= to {
                    // The load rose meanwhile (the ReplicaSet's replacement takes it), or the
                    // replicas were lowered already.
                    self.phase = Phase::Idle;
                    self.last_change = Some(now);
                    return None;
                }
                Some(Action::ScaleDown { to })
            }
        }
    }

    fn idle(
        &mut self,
        now: Instant,
        replicas: u32,
        workers: &[WorkerStatus],
        deleting: &HashSet<String>,
        wanted: u32,
    ) -> Option<Action> {
        match self.policy.decide(replicas, workers, self.last_change, now) {
            ScaleStep::Up { to } => Some(Action::ScaleUp { to }),
            ScaleStep::Down { to, drain } => {
                self.phase = Phase::Draining {
                    worker: drain.clone(),
                    to,
                    since: now,
                };
                Some(Action::Drain { worker: drain })
            }
            ScaleStep::Hold => {
                // A worker drained for a scale-down whose leader is gone (the Lease changed
                // hands): finish that scale-down rather than hold behind it for ever.
                let adopted = workers
                    .iter()
                    .find(|w| w.draining && !deleting.contains(&w.id))
                    .filter(|_| wanted < replicas)?;
                self.phase = Phase::Draining {
                    worker: adopted.id.clone(),
                    to: replicas - 1,
                    since: now,
                };
                None
            }
        }
    }

    /// Takes note of how `action` went at `now`.
    pub fn report(&mut self, action: &Action, outcome: Outcome, now: Instant) {
        match (action, outcome) {
            (Action::ScaleUp { .. } | Action::ScaleDown { .. }, Outcome::Done) => {
                self.phase = Phase::Idle;
                self.last_change = Some(now);
            }
            (Action::Undrain { .. }, Outcome::Done | Outcome::Gone) => {
                self.phase = Phase::Idle;
                self.last_change = Some(now);
            }
            (Action::Evict { .. }, Outcome::Done | Outcome::Gone) => {
                if let Phase::Evicting { to, .. } = self.phase {
                    self.phase = Phase::Lowering { to };
                }
            }
            (Action::Evict { .. }, Outcome::Refused | Outcome::Failed) => {
                if let Phase::Evicting {
                    retry_at, backoff, ..
                } = &mut self.phase
                {
                    *retry_at = now + *backoff;
                    *backoff = (*backoff * 2).min(EVICTION_BACKOFF_MAX);
                }
            }
            // A failed drain is asked again while the heartbeat says the worker is not
            // draining; other failures are retried by the next round.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workers::test_worker;

    const POLICY: AutoscalePolicy = AutoscalePolicy {
        sessions_per_worker: 10,
        min_workers: 1,
        max_workers: 5,
        cooldown: Duration::from_secs(60),
    };
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

    fn draining(mut worker: WorkerStatus) -> WorkerStatus {
        worker.draining = true;
        worker.ready = false;
        worker
    }

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn a_scale_down_drains_waits_for_the_sessions_evicts_then_lowers_the_replicas() {
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let t0 = Instant::now();
        let quiet = [test_worker("a", 3, 20), test_worker("b", 1, 20)];
        assert_eq!(
            scaling.next(t0, 2, &quiet, &none()),
            Some(Action::Drain { worker: "b".into() }),
            "the worker with the fewest sessions"
        );
        scaling.report(&Action::Drain { worker: "b".into() }, Outcome::Done, t0);

        // Drained but its call goes on: wait.
        let drained = [test_worker("a", 3, 20), draining(test_worker("b", 1, 20))];
        assert_eq!(scaling.next(t0, 2, &drained, &none()), None);
        // Its last session ended: evict that pod.
        let empty = [test_worker("a", 3, 20), draining(test_worker("b", 0, 20))];
        let evict = Action::Evict { worker: "b".into() };
        assert_eq!(scaling.next(t0, 2, &empty, &none()), Some(evict.clone()));
        scaling.report(&evict, Outcome::Done, t0);
        // Only then the replicas go down.
        let down = Action::ScaleDown { to: 1 };
        assert_eq!(scaling.next(t0, 2, &empty, &none()), Some(down.clone()));
        scaling.report(&down, Outcome::Done, t0);
        assert_eq!(scaling.phase(), &Phase::Idle);
        assert_eq!(scaling.next(t0, 1, &quiet[..1], &none()), None);
    }

    #[test]
    fn a_worker_whose_sessions_outlast_the_drain_timeout_is_evicted_anyway() {
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let t0 = Instant::now();
        let busy = [test_worker("a", 3, 20), draining(test_worker("b", 1, 20))];
        scaling.next(
            t0,
            2,
            &[test_worker("a", 3, 20), test_worker("b", 1, 20)],
            &none(),
        );
        assert_eq!(
            scaling.next(t0 + DRAIN_TIMEOUT / 2, 2, &busy, &none()),
            None
        );
        assert_eq!(
            scaling.next(t0 + DRAIN_TIMEOUT, 2, &busy, &none()),
            Some(Action::Evict { worker: "b".into() })
        );
    }

    #[test]
    fn a_refused_eviction_is_retried_with_a_growing_backoff() {
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let t0 = Instant::now();
        let quiet = [test_worker("a", 3, 20), test_worker("b", 0, 20)];
        scaling.next(t0, 2, &quiet, &none());
        let drained = [test_worker("a", 3, 20), draining(test_worker("b", 0, 20))];
        let evict = Action::Evict { worker: "b".into() };
        assert_eq!(scaling.next(t0, 2, &drained, &none()), Some(evict.clone()));
        scaling.report(&evict, Outcome::Refused, t0);
        assert_eq!(scaling.next(t0, 2, &drained, &none()), None, "backing off");
        let t1 = t0 + EVICTION_BACKOFF;
        assert_eq!(scaling.next(t1, 2, &drained, &none()), Some(evict.clone()));
        scaling.report(&evict, Outcome::Refused, t1);
        assert_eq!(
            scaling.next(t1 + EVICTION_BACKOFF, 2, &drained, &none()),
            None,
            "the backoff doubled"
        );
        let t2 = t1 + EVICTION_BACKOFF * 2;
        assert_eq!(scaling.next(t2, 2, &drained, &none()), Some(evict.clone()));
        scaling.report(&evict, Outcome::Done, t2);
        assert_eq!(
            scaling.next(t2, 2, &drained, &none()),
            Some(Action::ScaleDown { to: 1 })
        );
    }

    #[test]
    fn a_scale_down_abandoned_because_the_load_rose_undrains_the_worker() {
        for evicting in [false, true] {
            let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
            let t0 = Instant::now();
            scaling.next(
                t0,
                2,
                &[test_worker("a", 3, 20), test_worker("b", 1, 20)],
                &none(),
            );
            let drained = [test_worker("a", 3, 20), draining(test_worker("b", 0, 20))];
            if evicting {
                let evict = Action::Evict { worker: "b".into() };
                assert_eq!(scaling.next(t0, 2, &drained, &none()), Some(evict.clone()));
                scaling.report(&evict, Outcome::Refused, t0);
            }
            // Sessions arrive on `a`: two workers are needed again.
            let loaded = [test_worker("a", 15, 20), draining(test_worker("b", 0, 20))];
            let undrain = Action::Undrain { worker: "b".into() };
            assert_eq!(scaling.next(t0, 2, &loaded, &none()), Some(undrain.clone()));
            // Not reachable: asked again next round.
            scaling.report(&undrain, Outcome::Failed, t0);
            assert_eq!(scaling.next(t0, 2, &loaded, &none()), Some(undrain.clone()));
            scaling.report(&undrain, Outcome::Done, t0);
            assert_eq!(scaling.phase(), &Phase::Idle, "evicting: {evicting}");
        }
    }

    #[test]
    fn a_load_that_rises_after_the_eviction_keeps_the_replicas() {
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let t0 = Instant::now();
        scaling.next(
            t0,
            2,
            &[test_worker("a", 3, 20), test_worker("b", 0, 20)],
            &none(),
        );
        let drained = [test_worker("a", 3, 20), draining(test_worker("b", 0, 20))];
        let evict = Action::Evict { worker: "b".into() };
        scaling.next(t0, 2, &drained, &none());
        scaling.report(&evict, Outcome::Gone, t0);
        assert_eq!(
            scaling.next(t0, 2, &[test_worker("a", 15, 20)], &none()),
            None,
            "the replacement pod takes the load"
        );
        assert_eq!(scaling.phase(), &Phase::Idle);
    }

    #[test]
    fn a_worker_drained_under_a_former_leader_is_adopted_but_not_a_terminating_one() {
        let t0 = Instant::now();
        let workers = [test_worker("a", 3, 20), draining(test_worker("b", 0, 20))];
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let terminating = HashSet::from(["b".to_owned()]);
        assert_eq!(scaling.next(t0, 2, &workers, &terminating), None);
        assert_eq!(
            scaling.phase(),
            &Phase::Idle,
            "a pod being deleted goes anyway"
        );

        assert_eq!(scaling.next(t0, 2, &workers, &none()), None);
        assert!(matches!(scaling.phase(), Phase::Draining { worker, to: 1, .. } if worker == "b"));
        assert_eq!(
            scaling.next(t0, 2, &workers, &none()),
            Some(Action::Evict { worker: "b".into() })
        );
    }

    #[test]
    fn a_drain_the_worker_did_not_take_is_asked_again() {
        let mut scaling = Autoscaling::new(POLICY, DRAIN_TIMEOUT);
        let t0 = Instant::now();
        let quiet = [test_worker("a", 3, 20), test_worker("b", 1, 20)];
        scaling.next(t0, 2, &quiet, &none());
        scaling.report(&Action::Drain { worker: "b".into() }, Outcome::Failed, t0);
        assert_eq!(
            scaling.next(t0, 2, &quiet, &none()),
            Some(Action::Drain { worker: "b".into() })
        );
    }
}
