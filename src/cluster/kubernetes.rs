//! Kubernetes discovery for the controller (DESIGN.md §6): a watcher on the worker Pods (label
//! selector, namespace) keeps which are Ready and which are being deleted, and a
//! `coordination.k8s.io` Lease elects the leader among controller replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
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

/// Whether the Pod watcher's view can be trusted: set once a list has completed, cleared as
/// soon as the watch fails (until a re-list completes). The leader publishes a placement
/// table only while it is set, and the controller's `/readyz` follows it.
#[derive(Debug, Default)]
pub struct WatchStatus {
    synced: AtomicBool,
}

impl WatchStatus {
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn set(&self, synced: bool) {
        if self.synced.swap(synced, Ordering::Relaxed) != synced {
            tracing::info!(synced, "worker pod watch");
        }
    }
}

/// First wait before a failed watch is listed again; it doubles up to [`RELIST_BACKOFF_MAX`].
const RELIST_BACKOFF: Duration = Duration::from_millis(500);
const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Keeps `states` equal to the worker Pods the API server has, until `stop`.
pub async fn watch_pods(
    api: Api<Pod>,
    selector: String,
    states: PodStates,
    stop: CancellationToken,
) {
    watch_pods_with_status(api, selector, states, Arc::default(), stop).await;
}

/// [`watch_pods`], reporting in `status` whether the view is synced. A watch that ends (the
/// API server's timeout) is resumed from its resourceVersion; a watch or list that fails
/// (RBAC, a webhook, the API server) clears `status` and starts over with a full list after
/// a backoff, and a re-list replaces the whole map, so a Pod deleted meanwhile does not
/// linger.
pub async fn watch_pods_with_status(
    api: Api<Pod>,
    selector: String,
    states: PodStates,
    status: Arc<WatchStatus>,
    stop: CancellationToken,
) {
    let mut backoff = RELIST_BACKOFF;
    loop {
        let config = watcher::Config::default().labels(&selector);
        let mut events = watcher::watcher(api.clone(), config).boxed();
        let mut relisted: Option<HashMap<String, PodState>> = None;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Err(err)) => {
                    tracing::warn!(%err, ?backoff, "watching worker pods failed; listing again");
                    status.set(false);
                    break;
                }
                Some(Ok(Event::Init)) => relisted = Some(HashMap::new()),
                Some(Ok(Event::InitApply(pod))) => {
                    if let (Some(list), Some((name, state))) = (relisted.as_mut(), pod_state(&pod))
                    {
                        list.insert(name, state);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    let list = relisted.take().unwrap_or_default();
                    tracing::info!(pods = list.len(), "worker pods listed");
                    *states.write() = list;
                    status.set(true);
                    backoff = RELIST_BACKOFF;
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
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
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

/// The Pods being deleted (terminating): their workers go away on their own.
pub fn deleting(pods: &HashMap<String, PodState>) -> std::collections::HashSet<String> {
    pods.iter()
        .filter(|(_, pod)| pod.deleting)
        .map(|(name, _)| name.clone())
        .collect()
}

/// client-go's defaults: a Lease not renewed for 15 s may be taken over; its holder gives up
/// leading when it could not renew for 10 s; replicas try every 2 s.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const LEASE_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const LEASE_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// How a [`LeaseElection`] paces itself.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// Written into the Lease: how long others wait after the last renewal.
    pub duration: Duration,
    /// The leader stops leading when its last successful renewal is this old (shorter than
    /// `duration`, so it stops before anyone may take over).
    pub renew_deadline: Duration,
    /// Between attempts ([`LeaseElection::tick`]); also the bound on one attempt's API calls.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            duration: LEASE_DURATION,
            renew_deadline: LEASE_RENEW_DEADLINE,
            retry_period: LEASE_RETRY_PERIOD,
        }
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease. Every write carries the
/// `resourceVersion` it read, so two replicas racing for an expired Lease cannot both win.
/// Every attempt is bounded in time: a hung API call never freezes the replica.
pub struct LeaseElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// The term (the Lease's `leaseTransitions`) this replica leads in, while it does.
    term: Option<u64>,
    /// When this replica last renewed (or took) the Lease.
    renewed: Option<Instant>,
    /// When the last attempt started ([`Self::tick`] paces on it).
    attempted: Option<Instant>,
}

impl LeaseElection {
    /// An election whose Lease says `duration`; the renew deadline is two thirds of it and
    /// the retry period a fifth (client-go's ratios). See [`Self::with_timings`].
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self::with_timings(
            api,
            name,
            identity,
            LeaseTimings {
                duration,
                renew_deadline: duration * 2 / 3,
                retry_period: duration / 5,
            },
        )
    }

    pub fn with_timings(
        api: Api<Lease>,
        name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            term: None,
            renewed: None,
            attempted: None,
        }
    }

    /// [`Self::lead`] at most once per retry period; in between, the term while the last
    /// renewal is within the renew deadline.
    pub async fn tick(&mut self) -> Option<u64> {
        let due = self
            .attempted
            .is_none_or(|at| at.elapsed() >= self.timings.retry_period);
        if due {
            return self.lead().await;
        }
        if self.term.is_some() && !self.within_deadline() {
            self.lose("the Lease was not renewed within the renew deadline");
        }
        self.term
    }

    fn within_deadline(&self) -> bool {
        self.renewed
            .is_some_and(|at| at.elapsed() < self.timings.renew_deadline)
    }

    fn lose(&mut self, why: &str) {
        if self.term.take().is_some() {
            tracing::warn!(identity = self.identity, why, "lost the Lease");
        }
    }

    /// One attempt to take or renew the Lease, bounded by the retry period; the term while
    /// this replica leads. A failed or timed-out renewal keeps the leadership until the
    /// renew deadline; an answer that someone else holds it ends it at once.
    pub async fn lead(&mut self) -> Option<u64> {
        self.attempted = Some(Instant::now());
        let attempt = tokio::time::timeout(self.timings.retry_period, self.try_lead()).await;
        match attempt {
            Ok(Ok(Some(term))) => {
                if self.term.is_none() {
                    tracing::info!(identity = self.identity, term, "became the leader (Lease)");
                }
                self.term = Some(term);
                self.renewed = Some(Instant::now());
            }
            Ok(Ok(None)) => self.lose("another replica holds the Lease"),
            Ok(Err(err)) => {
                tracing::warn!(%err, lease = self.name, "Lease election failed");
                if !self.within_deadline() {
                    self.lose("the Lease could not be renewed");
                }
            }
            Err(_) => {
                tracing::warn!(lease = self.name, timeout = ?self.timings.retry_period, "Lease call timed out");
                if !self.within_deadline() {
                    self.lose("the Lease could not be renewed");
                }
            }
        }
        self.term
    }

    async fn try_lead(&self) -> Result<Option<u64>, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.timings.duration.as_secs()).unwrap_or(i32::MAX);
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

    /// Gives the Lease up (renew time cleared) so a standby takes over at once; bounded by
    /// the retry period (a hung API server does not hold up the shutdown).
    pub async fn release(&mut self) {
        if self.term.take().is_none() {
            return;
        }
        let release = async {
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
        };
        if tokio::time::timeout(self.timings.retry_period, release)
            .await
            .is_err()
        {
            tracing::warn!(lease = self.name, "releasing the Lease timed out");
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
