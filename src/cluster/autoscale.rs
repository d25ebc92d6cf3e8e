//! `controller --autoscale` (DESIGN.md §6): sets the worker Deployment's replicas from the total
//! sessions. Scaling up is immediate; scaling down goes one worker at a time, after a
//! cooldown, and never drops a call: the emptiest worker is drained, then its pod evicted,
//! then the replicas lowered (the steps are in [`super::scale_down`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, EvictParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

use super::keys::Keys;
use super::scale_down::{Action, Autoscaling, Outcome};
use super::worker_auth::AttachToken;
use super::worker_tls::WorkerTlsClient;
use super::workers::WorkerStatus;
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
    /// Drain `drain` (the emptiest worker), evict its pod, then lower the replicas to `to`.
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
        // A worker hosting rooms goes last: a drain refuses its rooms' newcomers until the
        // rooms empty, where any other worker's newcomers simply go elsewhere.
        let emptiest = workers.iter().filter(|w| w.ready).min_by(|a, b| {
            (a.rooms > 0, a.active_sessions, &a.id).cmp(&(b.rooms > 0, b.active_sessions, &b.id))
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

    /// Evicts `pod` through the Eviction API, which honours its PodDisruptionBudget.
    ///
    /// # Errors
    /// 429 when the budget forbids it now, 404 when the pod is gone, or any API failure.
    pub async fn evict(&self, pod: &str) -> Result<(), kube::Error> {
        self.pods.evict(pod, &EvictParams::default()).await?;
        Ok(())
    }
}

/// How the controller reaches the workers' internal API (to drain and undrain them): the
/// frontends' `--worker-token` and `--worker-ca`.
#[derive(Clone)]
pub struct WorkerApi {
    pub token: AttachToken,
    pub tls: Option<WorkerTlsClient>,
}

/// Bound on publishing one Kubernetes Event (best effort: the scaling goes on without it).
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The leader's autoscaler: [`Autoscaling`]'s steps, performed against the API server and the
/// workers, each announced as a Kubernetes Event (`events.k8s.io/v1`) on the pod or the
/// Deployment it concerns.
pub struct Autoscaler {
    pub(super) scaling: Autoscaling,
    pub(super) scaler: Scaler,
    pub(super) workers: WorkerApi,
    pub(super) recorder: Recorder,
    pub(super) namespace: String,
}

impl Autoscaler {
    pub fn new(
        scaling: Autoscaling,
        client: kube::Client,
        namespace: &str,
        deployment: &str,
        workers: WorkerApi,
        instance: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            scaling,
            scaler: Scaler::new(client.clone(), namespace, deployment),
            workers,
            recorder: Recorder::new(client, reporter),
            namespace: namespace.to_owned(),
        }
    }

    /// One round: the next step of the scaling, performed. A successful eviction is followed
    /// at once by lowering the replicas, so the ReplicaSet's replacement is still Pending
    /// (the pod it removes first) when the replicas drop.
    pub async fn round(
        &mut self,
        workers: &[WorkerStatus],
        deleting: &HashSet<String>,
        redis: &mut redis::aio::ConnectionManager,
        keys: &Keys,
    ) {
        let replicas = match self.scaler.replicas().await {
            Ok(replicas) => replicas,
            Err(err) => return tracing::warn!(%err, "reading the worker Deployment's scale failed"),
        };
        for _ in 0..2 {
            let Some(action) = self
                .scaling
                .next(Instant::now(), replicas, workers, deleting)
            else {
                return;
            };
            let outcome = self.perform(&action, replicas, workers, redis, keys).await;
            self.scaling.report(&action, outcome, Instant::now());
            if !matches!(
                (&action, outcome),
                (Action::Evict { .. }, Outcome::Done | Outcome::Gone)
            ) {
                return;
            }
        }
    }

    async fn perform(
        &self,
        action: &Action,
        replicas: u32,
        workers: &[WorkerStatus],
        redis: &mut redis::aio::ConnectionManager,
        keys: &Keys,
    ) -> Outcome {
        let address = |worker: &str| {
            workers
                .iter()
                .find(|w| w.id == worker)
                .map(|w| w.address.clone())
        };
        match action {
            Action::ScaleUp { to } | Action::ScaleDown { to } => {
                let result = self.scaler.set_replicas(*to).await;
                let outcome = outcome_of(&result);
                if outcome == Outcome::Done {
                    tracing::info!(from = replicas, to, "scaled the workers");
                    let reason = if *to > replicas {
                        "ScaledUp"
                    } else {
                        "ScaledDown"
                    };
                    let note = format!("worker replicas {replicas} -> {to}");
                    self.event(self.deployment(), EventType::Normal, reason, "Scale", note);
                } else if let Err(err) = result {
                    tracing::warn!(%err, ?action, "scaling the workers failed");
                }
                outcome
            }
            Action::Drain { worker } => {
                let Some(address) = address(worker) else {
                    return Outcome::Gone;
                };
                let api = &self.workers;
                match super::request_drain(&address, api.token.clone(), api.tls.as_ref()).await {
                    Ok(sessions) => {
                        tracing::info!(
                            worker_id = worker,
                            sessions,
                            from = replicas,
                            "draining a worker to scale down"
                        );
                        let note = format!("draining to scale down from {replicas} workers; {sessions} sessions left");
                        self.event(
                            self.pod(worker),
                            EventType::Normal,
                            "Draining",
                            "Drain",
                            note,
                        );
                        Outcome::Done
                    }
                    Err(err) => {
                        tracing::warn!(%err, worker_id = worker, "asking a worker to drain failed");
                        Outcome::Failed
                    }
                }
            }
            Action::Undrain { worker } => {
                // A drain request a controller of the previous version left in Redis would
                // drain the worker again.
                let _: redis::RedisResult<()> = redis::cmd("DEL")
                    .arg(keys.drain(worker))
                    .query_async(redis)
                    .await;
                let Some(address) = address(worker) else {
                    return Outcome::Gone;
                };
                let api = &self.workers;
                match super::request_undrain(&address, api.token.clone(), api.tls.as_ref()).await {
                    Ok(_) => {
                        tracing::info!(
                            worker_id = worker,
                            "the load rose: scale-down abandoned, worker undrained"
                        );
                        let note =
                            "the load rose: scale-down abandoned, taking sessions again".to_owned();
                        self.event(
                            self.pod(worker),
                            EventType::Normal,
                            "Undrained",
                            "Undrain",
                            note,
                        );
                        Outcome::Done
                    }
                    Err(err) => {
                        tracing::warn!(%err, worker_id = worker, "undraining a worker failed");
                        Outcome::Failed
                    }
                }
            }
            Action::Evict { worker } => {
                let result = self.scaler.evict(worker).await;
                let outcome = outcome_of(&result);
                match &result {
                    Ok(()) => {
                        tracing::info!(worker_id = worker, "evicted the drained worker's pod");
                        let note = "drained worker evicted to scale down".to_owned();
                        self.event(
                            self.pod(worker),
                            EventType::Normal,
                            "Evicted",
                            "Evict",
                            note,
                        );
                    }
                    Err(err) => {
                        tracing::warn!(%err, worker_id = worker, "evicting the drained worker's pod failed; retrying");
                        if outcome == Outcome::Refused {
                            let note = format!("eviction refused, retrying: {err}");
                            self.event(
                                self.pod(worker),
                                EventType::Warning,
                                "EvictionRefused",
                                "Evict",
                                note,
                            );
                        }
                    }
                }
                outcome
            }
        }
    }

    fn pod(&self, name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        }
    }

    fn deployment(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(self.scaler.deployment.clone()),
            namespace: Some(self.namespace.clone()),
            ..ObjectReference::default()
        }
    }

    /// Publishes an Event in the background (bounded; a failure is only logged).
    fn event(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let event = Event {
                type_,
                reason: reason.to_owned(),
                note: Some(note),
                action: action.to_owned(),
                secondary: None,
            };
            match tokio::time::timeout(EVENT_TIMEOUT, recorder.publish(&event, &regarding)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%err, reason, "publishing a Kubernetes Event failed")
                }
                Err(_) => tracing::debug!(reason, "publishing a Kubernetes Event timed out"),
            }
        });
    }
}

/// An API call's [`Outcome`]: 429 is a refusal to retry, 404 a gone object.
fn outcome_of(result: &Result<(), kube::Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(kube::Error::Api(status)) if status.code == 429 => Outcome::Refused,
        Err(kube::Error::Api(status)) if status.code == 404 => Outcome::Gone,
        Err(_) => Outcome::Failed,
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

    #[test]
    fn workers_hosting_rooms_are_drained_last() {
        let later = Instant::now() + Duration::from_secs(61);
        let hosting = |id, active, rooms| WorkerStatus {
            rooms,
            room_participants: active,
            ..test_worker(id, active, 20)
        };
        // The emptiest worker hosts a room: the emptiest of the others goes.
        let workers = vec![
            hosting("a", 2, 1),
            test_worker("b", 6, 20),
            test_worker("c", 4, 20),
        ];
        assert_eq!(
            POLICY.decide(3, &workers, None, later),
            ScaleStep::Down {
                to: 2,
                drain: "c".into()
            }
        );
        // Every worker hosts rooms: the emptiest still goes.
        let workers = vec![hosting("a", 5, 2), hosting("b", 3, 1), hosting("c", 4, 1)];
        assert_eq!(
            POLICY.decide(3, &workers, None, later),
            ScaleStep::Down {
                to: 2,
                drain: "b".into()
            }
        );
    }
}
