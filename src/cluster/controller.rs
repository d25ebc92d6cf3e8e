//! `--mode controller`: watches the workers and publishes the placement table (DESIGN.md §6).
//!
//! Replicas elect a leader: a lock in Redis (`SET NX PX`, renewed every second by its holder)
//! with `--discovery redis`, a `coordination.k8s.io` Lease with `--discovery kubernetes`. Each
//! leadership has a term that only grows; only the leader writes the table, and the write
//! (one Lua script) refuses a term lower than the table's, so a paused former leader cannot
//! overwrite its successor.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::autoscale::{AutoscalePolicy, Autoscaler, WorkerApi};
use super::keys::Keys;
use super::kubernetes::{self, LeaseElection, LeaseTimings, PodStates, WatchStatus};
use super::metrics::metrics;
use super::redis_error;
use super::scale_down::Autoscaling;
use super::worker_auth::AttachToken;
use super::worker_tls::WorkerTlsClient;
use super::workers::{self, PlacementTable, WorkerStatus};
use crate::config::{hostname, Config, Discovery};
use crate::error::Error;
use crate::http::{self, Readiness};
use crate::listener::bind;

/// How often the controller renews its lock and republishes the table.
pub const CONTROL_INTERVAL: Duration = Duration::from_secs(1);
/// A leader that stops renewing loses the lock after this long; another takes over.
pub const LEADER_LOCK_TTL: Duration = Duration::from_secs(5);
/// The table disappears this long after the last write (frontends treat it as stale earlier).
const TABLE_TTL: Duration = Duration::from_secs(30);

const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Writes the table unless the stored one has a higher term (fencing).
/// KEYS[1] table; ARGV: term, table JSON, TTL ms.
const FENCED_WRITE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local term = cjson.decode(current).term
  if term and term ~= cjson.null and term > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Name of the Lease controller replicas compete for, unless `--lease-name` says otherwise
/// (the chart names it after the release, so two releases in one namespace each elect one).
pub const LEASE_NAME: &str = "remotemedia-controller";
/// Bound on one autoscaler round's API calls (a hung API server must not freeze the loop).
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the workers come from.
enum Discovered {
    Redis,
    Kubernetes {
        client: kube::Client,
        namespace: String,
        selector: String,
    },
}

/// `--autoscale`'s settings.
struct AutoscaleConfig {
    policy: AutoscalePolicy,
    /// How long a drained worker's sessions may last before its pod is evicted anyway.
    drain_timeout: Duration,
    deployment: String,
    workers: WorkerApi,
}

/// A bound, not yet running, controller.
pub struct Controller {
    id: String,
    redis: ConnectionManager,
    keys: Keys,
    http_listener: TcpListener,
    discovered: Discovered,
    /// `--autoscale`: the policy, the worker Deployment and how to reach the workers' API.
    autoscale: Option<AutoscaleConfig>,
    /// The Lease's name and timings (Kubernetes discovery).
    lease: (String, LeaseTimings),
}

impl Controller {
    /// Connects to Redis (and the Kubernetes API) and binds HTTP (probes and metrics).
    ///
    /// # Errors
    /// No `--redis-url`, an unreachable Redis, no Kubernetes configuration, a port in use.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        Self::bind_with(config, None).await
    }

    /// [`Self::bind`], with `client` as the Kubernetes client instead of the one the
    /// environment configures (tests drive a fake API server).
    ///
    /// # Errors
    /// As [`Self::bind`].
    pub async fn bind_with(config: &Config, client: Option<kube::Client>) -> Result<Self, Error> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or(Error::MissingRedisUrl("controller"))?;
        let discovered = match config.cluster.discovery {
            Discovery::Redis => Discovered::Redis,
            Discovery::Kubernetes => {
                let client = match client {
                    Some(client) => client,
                    None => kubernetes_client().await?,
                };
                let namespace = config
                    .cluster
                    .namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_owned());
                Discovered::Kubernetes {
                    client,
                    namespace,
                    selector: config.cluster.worker_selector.clone(),
                }
            }
        };
        let cluster = &config.cluster;
        let autoscale = match (cluster.autoscale, &discovered) {
            (false, _) => None,
            (true, Discovered::Redis) => {
                return Err(Error::Unsupported(
                    "--autoscale scales a Deployment: it needs --discovery kubernetes".into(),
                ))
            }
            (true, Discovered::Kubernetes { .. }) => {
                let token = cluster.worker_token().map_err(Error::AuthSecret)?;
                Some(AutoscaleConfig {
                    policy: AutoscalePolicy {
                        sessions_per_worker: cluster.sessions_per_worker,
                        min_workers: cluster.min_workers,
                        max_workers: cluster.max_workers,
                        cooldown: cluster.scale_down_cooldown,
                    },
                    drain_timeout: cluster.drain_timeout,
                    deployment: cluster.worker_deployment.clone(),
                    workers: WorkerApi {
                        token: AttachToken::new(token.as_ref()).map_err(Error::Unsupported)?,
                        tls: WorkerTlsClient::from_config(config)?,
                    },
                })
            }
        };
        let timings = LeaseTimings {
            duration: cluster.lease_duration,
            renew_deadline: cluster.lease_renew_deadline,
            retry_period: cluster.lease_retry_period,
        };
        if timings.retry_period >= timings.renew_deadline
            || timings.renew_deadline >= timings.duration
        {
            return Err(Error::Unsupported(
                "the Lease timings need --lease-retry-period < --lease-renew-deadline < --lease-duration".into(),
            ));
        }
        let http_listener = bind("HTTP", config.http_address).await?;
        let (_, redis) = super::connect(url, config.redis_ca_file.as_deref()).await?;
        let id = format!(
            "{}-{}",
            hostname().unwrap_or_else(|| "controller".into()),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Ok(Self {
            id,
            redis,
            keys: Keys::new(config.redis_prefix.clone()),
            http_listener,
            discovered,
            autoscale,
            lease: (cluster.lease_name.clone(), timings),
        })
    }

    /// Competes for the Lease `name` with `timings` instead (tests shorten them).
    pub fn with_lease(mut self, name: &str, timings: LeaseTimings) -> Self {
        self.lease = (name.to_owned(), timings);
        self
    }

    /// Discovers workers through `client` instead (tests drive a mock API server).
    pub fn with_kubernetes(
        mut self,
        client: kube::Client,
        namespace: &str,
        selector: &str,
    ) -> Self {
        self.discovered = Discovered::Kubernetes {
            client,
            namespace: namespace.to_owned(),
            selector: selector.to_owned(),
        };
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    /// Leads (or waits to) and publishes the table until `shutdown`; then hands leadership
    /// back.
    ///
    /// # Errors
    /// When the HTTP listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let stop = CancellationToken::new();
        let readiness = Readiness::default();
        let http = http::serve(
            self.http_listener,
            http::router(readiness.clone(), None),
            stop.clone(),
        );
        // With Kubernetes discovery, ready only while the Pod watch is synced.
        readiness.set(matches!(self.discovered, Discovered::Redis));

        let (mut election, pods) = match &self.discovered {
            Discovered::Redis => {
                tracing::info!(
                    controller_id = self.id,
                    "controller running (discovery redis)"
                );
                let lock = RedisLock {
                    id: self.id.clone(),
                    redis: self.redis.clone(),
                    keys: self.keys.clone(),
                    term: None,
                };
                (Election::Redis(lock), None)
            }
            Discovered::Kubernetes {
                client,
                namespace,
                selector,
            } => {
                tracing::info!(
                    controller_id = self.id,
                    namespace,
                    selector,
                    "controller running (discovery kubernetes)"
                );
                let pods = PodStates::default();
                let watch = Arc::new(WatchStatus::default());
                tokio::spawn(kubernetes::watch_pods_with_status(
                    kube::Api::namespaced(client.clone(), namespace),
                    selector.clone(),
                    Arc::clone(&pods),
                    Arc::clone(&watch),
                    stop.child_token(),
                ));
                let lease = LeaseElection::with_timings(
                    kube::Api::namespaced(client.clone(), namespace),
                    &self.lease.0,
                    &self.id,
                    self.lease.1,
                );
                (Election::Kubernetes(Box::new(lease)), Some((pods, watch)))
            }
        };
        let mut autoscaler = match (&self.discovered, self.autoscale) {
            (
                Discovered::Kubernetes {
                    client, namespace, ..
                },
                Some(settings),
            ) => Some(Autoscaler::new(
                Autoscaling::new(settings.policy, settings.drain_timeout),
                client.clone(),
                namespace,
                &settings.deployment,
                settings.workers,
                &self.id,
            )),
            _ => None,
        };
        let mut tick = tokio::time::interval(CONTROL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let synced = pods.as_ref().is_none_or(|(_, watch)| watch.is_synced());
            readiness.set(synced);
            let Some(term) = election.lead().await else {
                continue;
            };
            if !synced {
                // An empty or outdated view of the Pods would publish a fresh table that
                // places nothing (or on gone Pods): publish none, so the last one goes stale
                // and frontends place from the heartbeats.
                tracing::warn!(
                    term,
                    "worker pods not synced: not publishing the placement table"
                );
                continue;
            }
            let mut redis = self.redis.clone();
            match workers::read_heartbeats(&mut redis, &self.keys).await {
                Ok((live, _dead)) => {
                    let (live, deleting) = match &pods {
                        Some((pods, _)) => {
                            let pods = pods.read();
                            (kubernetes::join(live, &pods), kubernetes::deleting(&pods))
                        }
                        None => (live, HashSet::new()),
                    };
                    let fresh: Vec<WorkerStatus> = live
                        .iter()
                        .filter(|w| w.is_fresh(workers::now_ms()))
                        .cloned()
                        .collect();
                    let table = placement_table(&self.id, term, live, workers::now_ms());
                    if !publish(&mut redis, &self.keys, &table).await {
                        tracing::warn!(
                            term,
                            "a later leader's table is in Redis: not overwriting it"
                        );
                        continue;
                    }
                    if let Some(autoscaler) = autoscaler.as_mut() {
                        let round = autoscaler.round(&fresh, &deleting, &mut redis, &self.keys);
                        if tokio::time::timeout(API_TIMEOUT, round).await.is_err() {
                            tracing::warn!(timeout = ?API_TIMEOUT, "an autoscaler round timed out");
                        }
                    }
                }
                Err(err) => redis_error("read_heartbeats", &err),
            }
        }
        election.release().await;
        stop.cancel();
        if let Ok(Err(err)) = http.await {
            return Err(err);
        }
        Ok(())
    }
}

/// The client the environment configures (in-cluster, or a kubeconfig).
async fn kubernetes_client() -> Result<kube::Client, Error> {
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|err| Error::Kubernetes(err.to_string()))?;
    // Reads keep kube's default (past the watches' server-side timeout); every other call is
    // bounded where it is made.
    kube_config.connect_timeout = Some(Duration::from_secs(5));
    kube_config.write_timeout = Some(Duration::from_secs(10));
    // No retries inside the client (kube retries 429/503/504 up to 15 times, for minutes):
    // the controller's loops retry on their own pace, and a 429 from the Eviction API is an
    // answer (the disruption budget forbids it now) the scale-down backs off on.
    kube_config.default_retry = false;
    kube::Client::try_from(kube_config).map_err(|err| Error::Kubernetes(err.to_string()))
}

/// Writes the table unless a leader of a later term already did.
async fn publish(redis: &mut ConnectionManager, keys: &Keys, table: &PlacementTable) -> bool {
    let json = serde_json::to_string(table).unwrap_or_default();
    let written: redis::RedisResult<i64> = redis::Script::new(FENCED_WRITE_SCRIPT)
        .key(keys.placement())
        .arg(table.term)
        .arg(json)
        .arg(TABLE_TTL.as_millis() as u64)
        .invoke_async(redis)
        .await;
    match written {
        Ok(1) => {
            metrics().controller_table_writes.inc();
            true
        }
        Ok(_) => false,
        Err(err) => {
            redis_error("publish_table", &err);
            false
        }
    }
}

/// How this replica competes for leadership.
enum Election {
    Redis(RedisLock),
    Kubernetes(Box<LeaseElection>),
}

impl Election {
    async fn lead(&mut self) -> Option<u64> {
        let term = match self {
            Self::Redis(lock) => lock.lead().await,
            Self::Kubernetes(lease) => lease.tick().await,
        };
        metrics().controller_leader.set(i64::from(term.is_some()));
        term
    }

    async fn release(&mut self) {
        match self {
            Self::Redis(lock) => lock.release().await,
            Self::Kubernetes(lease) => lease.release().await,
        }
        metrics().controller_leader.set(0);
    }
}

/// The table from live heartbeats: workers that take sessions, emptiest first. Updates the
/// controller's gauges on the way.
pub fn placement_table(
    leader: &str,
    term: u64,
    live: Vec<WorkerStatus>,
    now_ms: u64,
) -> PlacementTable {
    let fresh: Vec<WorkerStatus> = live.into_iter().filter(|w| w.is_fresh(now_ms)).collect();
    let m = metrics();
    m.controller_sessions
        .set(fresh.iter().map(|w| i64::from(w.active_sessions)).sum());
    let count = |f: &dyn Fn(&WorkerStatus) -> bool| fresh.iter().filter(|w| f(w)).count() as i64;
    m.controller_workers
        .with_label_values(&["draining"])
        .set(count(&|w| w.draining));
    m.controller_workers
        .with_label_values(&["full"])
        .set(count(&|w| !w.draining && w.active_sessions >= w.capacity));
    let mut ready: Vec<WorkerStatus> = fresh
        .into_iter()
        .filter(|w| w.takes_sessions(now_ms))
        .collect();
    m.controller_workers
        .with_label_values(&["ready"])
        .set(ready.len() as i64);
    ready.sort_by(|a, b| a.load().total_cmp(&b.load()).then_with(|| a.id.cmp(&b.id)));
    PlacementTable {
        leader: leader.to_owned(),
        term,
        updated_at_ms: now_ms,
        workers: ready,
    }
}

/// The leader lock in Redis.
struct RedisLock {
    id: String,
    redis: ConnectionManager,
    keys: Keys,
    /// The term this controller leads in, while it does.
    term: Option<u64>,
}

impl RedisLock {
    /// Renews or takes the lock; the term while this controller leads.
    async fn lead(&mut self) -> Option<u64> {
        let result = match self.term {
            Some(_) => self.renew().await,
            None => self.acquire().await,
        };
        let leading = match result {
            Ok(leading) => leading,
            Err(err) => {
                redis_error("leader_lock", &err);
                false
            }
        };
        if !leading && self.term.take().is_some() {
            tracing::warn!(controller_id = self.id, "lost leadership");
        }
        metrics()
            .controller_leader
            .set(i64::from(self.term.is_some()));
        self.term
    }

    async fn acquire(&mut self) -> redis::RedisResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.controller_lock())
            .arg(&self.id)
            .arg("NX")
            .arg("PX")
            .arg(LEADER_LOCK_TTL.as_millis() as u64)
            .query_async(&mut self.redis)
            .await?;
        if taken.is_none() {
            return Ok(false);
        }
        let term: u64 = redis::cmd("INCR")
            .arg(self.keys.controller_term())
            .query_async(&mut self.redis)
            .await?;
        tracing::info!(controller_id = self.id, term, "became the leader");
        self.term = Some(term);
        Ok(true)
    }

    async fn renew(&mut self) -> redis::RedisResult<bool> {
        let renewed: i64 = redis::Script::new(RENEW_SCRIPT)
            .key(self.keys.controller_lock())
            .arg(&self.id)
            .arg(LEADER_LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis)
            .await?;
        Ok(renewed == 1)
    }

    /// Hands the lock back so another replica takes over at once.
    async fn release(&mut self) {
        if self.term.take().is_none() {
            return;
        }
        let _ = redis::Script::new(RELEASE_SCRIPT)
            .key(self.keys.controller_lock())
            .arg(&self.id)
            .invoke_async::<i64>(&mut self.redis)
            .await;
        tracing::info!(controller_id = self.id, "released the leader lock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workers::test_worker;

    #[test]
    fn the_table_holds_workers_that_take_sessions_emptiest_first() {
        let now = 1_000_500;
        let live = vec![
            test_worker("busy", 8, 10),
            test_worker("idle", 0, 10),
            test_worker("full", 10, 10),
            WorkerStatus {
                draining: true,
                ..test_worker("leaving", 0, 10)
            },
            WorkerStatus {
                updated_at_ms: 0,
                ..test_worker("dead", 0, 10)
            },
            test_worker("half", 5, 10),
        ];
        let table = placement_table("me", 3, live, now);
        let ids: Vec<&str> = table.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["idle", "half", "busy"]);
        assert_eq!((table.term, table.leader.as_str()), (3, "me"));
    }
}
