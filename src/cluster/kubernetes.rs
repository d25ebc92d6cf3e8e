//! Kubernetes discovery for the controller (DESIGN.md §6): a watcher on the worker Pods (label
//! selector, namespace) keeps which are Ready and which are being deleted, and a
//! `coordination.k8s.io` Lease elects the leader among controller replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use super::workers::WorkerStatus;

/// What the controller needs to know of a worker Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodState {
    /// The Pod's `Ready` condition is `True`.
    pub ready: bool,
    /// The Pod has a deletion timestamp: it is going away.
    pub deleting: bool,
}

/// Worker Pods by name, as the watcher last saw them.
pub type PodStates = Arc<RwLock<HashMap<String, PodState>>>;

/// The name and state of a Pod.
pub fn pod_state(pod: &Pod) -> Option<(String, PodState)> {
    let name = pod.metadata.name.clone()?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let deleting = pod.metadata.deletion_timestamp.is_some();
    Some((name, PodState { ready, deleting }))
}

/// Keeps `states` equal to the worker Pods the API server has, until `stop`. The watcher
/// re-lists after a broken watch (with backoff), and a re-list replaces the whole map, so a
/// Pod deleted while the watch was down does not linger.
pub async fn watch_pods(
    api: Api<Pod>,
    selector: String,
    states: PodStates,
    stop: CancellationToken,
) {
    let config = watcher::Config::default().labels(&selector);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut relisted: Option<HashMap<String, PodState>> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(err)) => tracing::warn!(%err, "watching worker pods failed; retrying"),
            Some(Ok(Event::Init)) => relisted = Some(HashMap::new()),
            Some(Ok(Event::InitApply(pod))) => {
                if let (Some(list), Some((name, state))) = (relisted.as_mut(), pod_state(&pod)) {
                    list.insert(name, state);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let list = relisted.take().unwrap_or_default();
                tracing::info!(pods = list.len(), "worker pods listed");
                *states.write() = list;
            }
            Some(Ok(Event::Apply(pod))) => {
                if let Some((name, state)) = pod_state(&pod) {
                    states.write().insert(name, state);
                }
            }
            Some(Ok(Event::Delete(pod))) => {
                if let Some(name) = &pod.metadata.name {
                    states.write().remove(name);
                }
            }
        }
    }
}

/// Heartbeats joined with the Pods: a worker without a Pod is not part of the deployment and
/// is left out; a Pod that is not Ready is not ready; a Pod being deleted is draining.
pub fn join(heartbeats: Vec<WorkerStatus>, pods: &HashMap<String, PodState>) -> Vec<WorkerStatus> {
    heartbeats
        .into_iter()
        .filter_map(|mut worker| {
            let pod = pods.get(&worker.id)?;
            worker.ready = pod.ready;
            worker.draining |= pod.deleting;
            Some(worker)
        })
        .collect()
}

/// Leader election on a `coordination.k8s.io/v1` Lease. Every write carries the
/// `resourceVersion` it read, so two replicas racing for an expired Lease cannot both win.
pub struct LeaseElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The term (the Lease's `leaseTransitions`) this replica leads in, while it does.
    term: Option<u64>,
}

impl LeaseElection {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            term: None,
        }
    }

    /// Takes or renews the Lease; the term while this replica leads.
    pub async fn lead(&mut self) -> Option<u64> {
        let result = self.try_lead().await;
        let leading = match result {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(%err, lease = self.name, "Lease election failed");
                None
            }
        };
        if leading.is_none() && self.term.is_some() {
            tracing::warn!(identity = self.identity, "lost the Lease");
        }
        if leading.is_some() && self.term.is_none() {
            tracing::info!(identity = self.identity, term = ?leading, "became the leader (Lease)");
        }
        self.term = leading;
        self.term
    }

    async fn try_lead(&self) -> Result<Option<u64>, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(1),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(1)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let transitions = spec.lease_transitions.unwrap_or(0).max(0) as u64;
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !held_by_me {
            let duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let expired = renewed.is_none_or(|renewed| {
                let age = now.0.duration_since(renewed);
                age.as_secs_f64() > duration.as_secs_f64()
            });
            if !expired {
                return Ok(None);
            }
        }
        let term = if held_by_me {
            transitions
        } else {
            transitions + 1
        };
        if !held_by_me {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(i32::try_from(term).unwrap_or(i32::MAX));
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Some(term)),
            // Someone else wrote the Lease since we read it: they won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Gives the Lease up (renew time cleared) so a standby takes over at once.
    pub async fn release(&mut self) {
        if self.term.take().is_none() {
            return;
        }
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            if let Some(spec) = lease.spec.as_mut() {
                if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                    spec.holder_identity = None;
                    spec.renew_time = None;
                    let _ = self
                        .api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workers::test_worker;

    #[test]
    fn only_workers_with_a_pod_count_and_the_pod_decides_ready_and_draining() {
        let pods = HashMap::from([
            (
                "ready".to_owned(),
                PodState {
                    ready: true,
                    deleting: false,
                },
            ),
            (
                "starting".to_owned(),
                PodState {
                    ready: false,
                    deleting: false,
                },
            ),
            (
                "going".to_owned(),
                PodState {
                    ready: true,
                    deleting: true,
                },
            ),
        ]);
        let heartbeats = ["ready", "starting", "going", "stray"]
            .iter()
            .map(|id| test_worker(id, 0, 10))
            .collect();
        let joined = join(heartbeats, &pods);
        let by_id: HashMap<&str, &WorkerStatus> =
            joined.iter().map(|w| (w.id.as_str(), w)).collect();
        assert_eq!(by_id.len(), 3, "a heartbeat without a pod is left out");
        assert!(by_id["ready"].ready && !by_id["ready"].draining);
        assert!(!by_id["starting"].ready);
        assert!(by_id["going"].draining);
    }
}
