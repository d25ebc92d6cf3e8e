//! `controller --autoscale` (DESIGN.md §6): sets the worker Deployment's replicas from the total
//! sessions. Scaling up is immediate; scaling down goes one worker at a time, after a
//! cooldown, and never drops a call: the emptiest worker is told to drain first and gets the
//! lowest `controller.kubernetes.io/pod-deletion-cost`, so the ReplicaSet removes exactly that
//! pod (whose SIGTERM then waits for its last session).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::workers::WorkerStatus;

/// The annotation the ReplicaSet controller reads to pick which pod to delete first.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The cost given to the pod chosen to go (lower goes first; the default is 0).
const CHOSEN_COST: &str = "-1000";
/// The field manager of the controller's writes: the worker Deployment's `spec.replicas` is
/// owned by it, not by Helm (the chart renders no `replicas` when the controller scales), so
/// `helm upgrade` neither resets the scale nor meets a field conflict.
pub const FIELD_MANAGER: &str = "remotemedia-controller";

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// How many workers the sessions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscalePolicy {
    /// Sessions one worker should carry.
    pub sessions_per_worker: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Least time between a change and a scale-down.
    pub cooldown: Duration,
}

/// What the autoscaler does this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleStep {
    Hold,
    Up {
        to: u32,
    },
    /// Drain `drain` (the emptiest worker), mark it to go, then lower the replicas.
    Down {
        to: u32,
        drain: String,
    },
}

impl AutoscalePolicy {
    /// Workers wanted for `sessions`: enough at the target load, within min and max.
    pub fn desired(&self, sessions: u64) -> u32 {
        let per = u64::from(self.sessions_per_worker.max(1));
        let needed = u32::try_from(sessions.div_ceil(per)).unwrap_or(u32::MAX);
        needed.clamp(self.min_workers, self.max_workers.max(self.min_workers))
    }

    /// The step from `replicas` now, the live `workers` (joined with their pods) and when the
    /// replicas last changed.
    pub fn decide(
        &self,
        replicas: u32,
        workers: &[WorkerStatus],
        last_change: Option<Instant>,
        now: Instant,
    ) -> ScaleStep {
        let sessions = workers.iter().map(|w| u64::from(w.active_sessions)).sum();
        let desired = self.desired(sessions);
        if desired > replicas {
            return ScaleStep::Up { to: desired };
        }
        if desired == replicas {
            return ScaleStep::Hold;
        }
        let cooled = last_change.is_none_or(|t| now.duration_since(t) >= self.cooldown);
        // One drain at a time: a worker already on its way out finishes first.
        if !cooled || workers.iter().any(|w| w.draining) {
            return ScaleStep::Hold;
        }
        let emptiest = workers.iter().filter(|w| w.ready).min_by(|a, b| {
            a.active_sessions
                .cmp(&b.active_sessions)
                .then(a.id.cmp(&b.id))
        });
        match emptiest {
            Some(worker) => ScaleStep::Down {
                to: replicas - 1,
                drain: worker.id.clone(),
            },
            None => ScaleStep::Hold,
        }
    }
}

/// The Kubernetes side of autoscaling: the worker Deployment's scale and its pods.
pub struct Scaler {
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    deployment: String,
}

impl Scaler {
    pub fn new(client: kube::Client, namespace: &str, deployment: &str) -> Self {
        Self {
            deployments: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            deployment: deployment.to_owned(),
        }
    }

    /// The Deployment's replicas now.
    ///
    /// # Errors
    /// When the API server refuses or is unreachable.
    pub async fn replicas(&self) -> Result<u32, kube::Error> {
        let scale = self.deployments.get_scale(&self.deployment).await?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    /// Sets the Deployment's replicas.
    ///
    /// # Errors
    /// When the API server refuses or is unreachable.
    pub async fn set_replicas(&self, replicas: u32) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        self.deployments
            .patch_scale(&self.deployment, &patch_params(), &patch)
            .await?;
        Ok(())
    }

    /// Marks `pod` as the one the ReplicaSet removes first.
    ///
    /// # Errors
    /// When the API server refuses or is unreachable.
    pub async fn mark_to_go(&self, pod: &str) -> Result<(), kube::Error> {
        let patch =
            Patch::Merge(json!({"metadata": {"annotations": {POD_DELETION_COST: CHOSEN_COST}}}));
        self.pods.patch(pod, &patch_params(), &patch).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workers::test_worker;

    const POLICY: AutoscalePolicy = AutoscalePolicy {
        sessions_per_worker: 10,
        min_workers: 2,
        max_workers: 5,
        cooldown: Duration::from_secs(60),
    };

    #[test]
    fn desired_workers_follow_sessions_within_bounds() {
        assert_eq!(POLICY.desired(0), 2);
        assert_eq!(POLICY.desired(21), 3);
        assert_eq!(POLICY.desired(30), 3);
        assert_eq!(POLICY.desired(1_000), 5);
    }

    #[test]
    fn scale_up_at_once_and_down_one_emptiest_worker_after_the_cooldown() {
        let now = Instant::now();
        let busy = vec![test_worker("a", 10, 20), test_worker("b", 15, 20)];
        assert_eq!(
            POLICY.decide(2, &busy, Some(now), now),
            ScaleStep::Up { to: 3 }
        );

        let quiet = vec![
            test_worker("a", 3, 20),
            test_worker("b", 1, 20),
            test_worker("c", 1, 20),
        ];
        // Within the cooldown: hold.
        assert_eq!(POLICY.decide(3, &quiet, Some(now), now), ScaleStep::Hold);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            POLICY.decide(3, &quiet, Some(now), later),
            ScaleStep::Down {
                to: 2,
                drain: "b".into()
            }
        );
        // While a worker drains, nothing else goes.
        let mut draining = quiet.clone();
        draining[1].draining = true;
        assert_eq!(
            POLICY.decide(3, &draining, Some(now), later),
            ScaleStep::Hold
        );
        // At the minimum: hold.
        assert_eq!(POLICY.decide(2, &quiet[..2], None, later), ScaleStep::Hold);
    }
}
