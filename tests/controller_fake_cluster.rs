//! The controller against the stateful fake API server of tests/common/fake_kube (a fake with
//! the real one's semantics: no real API server can run here), real workers and the shared
//! Redis: Lease election, renewal and release, a watch that expires mid-run (410 Gone, then a
//! re-list), and the deterministic scale-down (drain, evict that pod, then lower the replicas;
//! undrain when the load comes back).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fake_kube::{FakeKube, Pdb, UnhealthyPodEvictionPolicy, NAMESPACE};
use remotemedia_webrtc::cluster::autoscale::Scaler;
use remotemedia_webrtc::cluster::kubernetes::{
    watch_pods_with_status, LeaseElection, LeaseTimings, PodStates, WatchStatus,
};
use remotemedia_webrtc::cluster::workers::{
    now_ms, read_heartbeats, read_table, write_heartbeat, PlacementTable, WorkerStatus,
};
use remotemedia_webrtc::cluster::{Controller, Keys, Worker};
use remotemedia_webrtc::config::{Config, Discovery};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";
const DEPLOYMENT: &str = "remotemedia-worker";

fn prefix() -> String {
    format!(
        "rm-fake-{}-{}:",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

async fn redis() -> redis::aio::ConnectionManager {
    remotemedia_webrtc::cluster::connect(REDIS, None)
        .await
        .unwrap()
        .1
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller's configuration with Kubernetes discovery under `prefix`.
fn controller_config(prefix: &str) -> Config {
    let mut config = Config::local_test();
    config.redis_url = Some(REDIS.into());
    config.redis_prefix = prefix.to_owned();
    config.http_address = "127.0.0.1:0".parse().unwrap();
    config.cluster.discovery = Discovery::Kubernetes;
    config.cluster.namespace = Some(NAMESPACE.into());
    config.cluster.lease_name = "rm-test-controller".into();
    config.cluster.lease_duration = Duration::from_secs(10);
    config.cluster.lease_renew_deadline = Duration::from_secs(6);
    config.cluster.lease_retry_period = Duration::from_millis(500);
    config
}

/// `--autoscale` on the fake's Deployment: every `per` sessions a worker, at least `min`.
fn autoscale(config: &mut Config, per: u32, min: u32) {
    config.cluster.autoscale = true;
    config.cluster.worker_deployment = DEPLOYMENT.into();
    config.cluster.sessions_per_worker = per;
    config.cluster.min_workers = min;
    config.cluster.max_workers = 10;
    config.cluster.scale_down_cooldown = Duration::ZERO;
    config.cluster.drain_timeout = Duration::from_secs(30);
}

struct Running {
    id: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), remotemedia_webrtc::Error>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn start_controller(fake: &FakeKube, config: &Config) -> Running {
    let controller = Controller::bind_with(config, Some(fake.client()))
        .await
        .unwrap();
    let id = controller.id().to_owned();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(controller.run(async move { stopped.cancelled().await }));
    Running { id, stop, task }
}

/// A real worker (its internal API on 127.0.0.1) whose id is its pod's name; the fake's
/// kubelet probes its readiness into the pod.
async fn start_worker(fake: &FakeKube, prefix: &str, id: &str) -> Running {
    let mut config = Config::local_test();
    config.redis_url = Some(REDIS.into());
    config.redis_prefix = prefix.to_owned();
    config.cluster.worker_id = Some(id.into());
    let worker = Worker::bind(&config).await.unwrap();
    fake.add_pod(id, false);
    fake.probe_readiness(id, worker.http_address().unwrap());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(worker.run(async move { stopped.cancelled().await }));
    Running {
        id: id.into(),
        stop,
        task,
    }
}

fn heartbeat(id: &str, active: u32) -> WorkerStatus {
    WorkerStatus {
        id: id.into(),
        instance: String::new(),
        address: "127.0.0.1:1".into(),
        udp_address: None,
        relay_address: None,
        capacity: 100,
        active_sessions: active,
        cpu_load: 0.0,
        draining: false,
        rooms: 0,
        room_participants: 0,
        ready: true,
        updated_at_ms: now_ms(),
    }
}

/// Writes a heartbeat of `id` with the sessions in `active` every 300 ms until `stop`.
fn fake_heartbeats(
    prefix: &str,
    id: &str,
    active: std::sync::Arc<std::sync::atomic::AtomicU32>,
    stop: CancellationToken,
) {
    let (keys, id) = (Keys::new(prefix.to_owned()), id.to_owned());
    tokio::spawn(async move {
        let mut redis = redis().await;
        while !stop.is_cancelled() {
            let sessions = active.load(std::sync::atomic::Ordering::SeqCst);
            write_heartbeat(&mut redis, &keys, &heartbeat(&id, sessions), None)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

async fn table(prefix: &str) -> Option<PlacementTable> {
    read_table(&mut redis().await, &Keys::new(prefix.to_owned()))
        .await
        .unwrap()
}

fn table_ids(table: &Option<PlacementTable>) -> Vec<String> {
    table
        .iter()
        .flat_map(|t| t.workers.iter().map(|w| w.id.clone()))
        .collect()
}

fn event_reasons(fake: &FakeKube) -> Vec<(String, String)> {
    fake.events()
        .iter()
        .map(|e: &Value| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["regarding"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

// ---- Lease ----

fn lease_election(fake: &FakeKube, identity: &str, timings: LeaseTimings) -> LeaseElection {
    LeaseElection::with_timings(
        kube::Api::namespaced(fake.client(), NAMESPACE),
        "rm-lease",
        identity,
        timings,
    )
}

#[tokio::test]
async fn two_replicas_compete_for_the_lease_one_leads_and_the_holder_renews_it() {
    let fake = FakeKube::start().await;
    let timings = LeaseTimings {
        duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1400),
        retry_period: Duration::from_millis(300),
    };
    let mut a = lease_election(&fake, "a", timings);
    let mut b = lease_election(&fake, "b", timings);

    // Both find no Lease and create it: the API server lets one create win.
    let (term_a, term_b) = tokio::join!(a.lead(), b.lead());
    assert_eq!(
        [term_a, term_b].iter().filter(|t| **t == Some(1)).count(),
        1,
        "{term_a:?} {term_b:?}"
    );
    let leader = if term_a.is_some() { "a" } else { "b" };
    let renewed = |fake: &FakeKube| fake.lease("rm-lease").unwrap()["spec"]["renewTime"].clone();
    let first_renewal = renewed(&fake);

    // For three Lease durations: the holder renews, so the other never takes over.
    let started = Instant::now();
    while started.elapsed() < timings.duration * 3 {
        let (term_a, term_b) = tokio::join!(a.tick(), b.tick());
        let leaders: Vec<&str> = [("a", term_a), ("b", term_b)]
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(leaders, [leader], "one leader, always the same");
        assert_eq!(term_a.or(term_b), Some(1), "no new term while it renews");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = fake.lease("rm-lease").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], leader);
    assert_ne!(renewed(&fake), first_renewal, "the holder renewed it");

    // A replica that stops renewing (paused, partitioned) loses it once it expires: the
    // other takes it over in a new term.
    let (holder, mut other) = if leader == "a" { (a, b) } else { (b, a) };
    drop(holder);
    let deadline = Instant::now() + timings.duration * 3;
    loop {
        if other.tick().await == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired Lease was not taken over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_releases_the_lease_on_shutdown_and_the_standby_takes_over_at_once() {
    let fake = FakeKube::start().await;
    fake.add_pod("w-0", true);
    let prefix = prefix();
    let stop_beats = CancellationToken::new();
    fake_heartbeats(&prefix, "w-0", Default::default(), stop_beats.clone());
    let config = controller_config(&prefix);

    let first = start_controller(&fake, &config).await;
    wait_until(
        "the first controller publishes",
        Duration::from_secs(10),
        || async {
            table(&prefix)
                .await
                .is_some_and(|t| t.leader == first.id && t.workers.len() == 1)
        },
    )
    .await;
    let second = start_controller(&fake, &config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let table_now = table(&prefix).await.unwrap();
    assert_eq!(table_now.leader, first.id, "the standby does not publish");

    let stopped = Instant::now();
    first.stop().await;
    wait_until("the standby publishes", Duration::from_secs(5), || async {
        table(&prefix).await.is_some_and(|t| t.leader == second.id)
    })
    .await;
    let takeover = stopped.elapsed();
    println!(
        "takeover after a release: {takeover:?} (Lease duration {:?})",
        config.cluster.lease_duration
    );
    assert!(takeover < config.cluster.lease_duration / 2, "{takeover:?}");
    let table_after = table(&prefix).await.unwrap();
    assert!(table_after.term > table_now.term, "a new term");
    assert_eq!(table_ids(&Some(table_after)), ["w-0"]);
    assert_eq!(
        fake.lease("rm-test-controller").unwrap()["spec"]["holderIdentity"],
        second.id.as_str()
    );
    second.stop().await;
    stop_beats.cancel();
}

// ---- The Pod watch ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_expires_mid_run_is_listed_again_and_the_table_follows() {
    let fake = FakeKube::start().await;
    fake.add_pod("w-0", true);
    fake.add_pod("w-1", true);
    let prefix = prefix();
    let stop_beats = CancellationToken::new();
    for id in ["w-0", "w-1"] {
        fake_heartbeats(&prefix, id, Default::default(), stop_beats.clone());
    }
    let controller = start_controller(&fake, &controller_config(&prefix)).await;
    wait_until("both workers placed", Duration::from_secs(10), || async {
        table_ids(&table(&prefix).await) == ["w-0", "w-1"]
    })
    .await;

    // The watch ends, w-1 turns NotReady meanwhile, and etcd compacts the history: the
    // watch's resourceVersion is too old (410 Gone), only a new LIST shows the change.
    let lists = fake.pod_lists();
    fake.hold_watches();
    fake.end_watches();
    fake.set_ready("w-1", false);
    fake.compact();
    let expired = Instant::now();
    fake.open_watches();

    // Sample the table until it follows: how long was it not refreshed?
    let mut last_write = table(&prefix).await.unwrap().updated_at_ms;
    let mut longest_gap = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = table(&prefix).await;
        if let Some(t) = &table {
            longest_gap = longest_gap.max(t.updated_at_ms.saturating_sub(last_write));
            last_write = t.updated_at_ms;
        }
        if table_ids(&table) == ["w-0"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the table kept the NotReady worker: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "410 Gone to a table without the NotReady worker: {:?}; longest time between table writes {longest_gap} ms",
        expired.elapsed()
    );
    assert!(
        fake.pod_lists() > lists,
        "the 410 made the watcher list again"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "the watcher asks for bookmarks"
    );

    // And it keeps following changes on the new watch.
    fake.set_ready("w-1", true);
    wait_until("w-1 placed again", Duration::from_secs(10), || async {
        table_ids(&table(&prefix).await) == ["w-0", "w-1"]
    })
    .await;
    controller.stop().await;
    stop_beats.cancel();
}

#[tokio::test]
async fn bookmarks_keep_a_resumed_watch_recent_enough_to_skip_the_list() {
    let fake = FakeKube::start().await;
    fake.add_pod("w-0", true);
    let states = PodStates::default();
    let status = std::sync::Arc::new(WatchStatus::default());
    let stop = CancellationToken::new();
    tokio::spawn(watch_pods_with_status(
        kube::Api::namespaced(fake.client(), NAMESPACE),
        "app.kubernetes.io/component=worker".into(),
        states.clone(),
        status.clone(),
        stop.clone(),
    ));
    wait_until("listed", Duration::from_secs(5), || async {
        status.is_synced()
    })
    .await;

    // Writes this watch does not see (another app's pod) move the resourceVersion on; a
    // bookmark tells the watcher, so after a compaction it resumes without a 410.
    fake.touch_other_pod("other");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lists = fake.pod_lists();
    fake.compact();
    fake.end_watches();
    fake.add_pod("w-1", true);
    wait_until("w-1 seen", Duration::from_secs(5), || async {
        states.read().contains_key("w-1")
    })
    .await;
    assert_eq!(
        fake.pod_lists(),
        lists,
        "resumed from the bookmark, no re-list"
    );
    assert!(status.is_synced());
    stop.cancel();
}

// ---- Scale-down ----

#[tokio::test]
async fn the_eviction_of_a_drained_not_ready_worker_needs_always_allow_when_the_budget_is_spent() {
    for (policy, allowed) in [
        (UnhealthyPodEvictionPolicy::IfHealthyBudget, false),
        (UnhealthyPodEvictionPolicy::AlwaysAllow, true),
    ] {
        let fake = FakeKube::start().await;
        fake.add_deployment(DEPLOYMENT, 3);
        fake.add_pod("w-0", true);
        fake.add_pod("w-1", false); // drained: its readiness fails
        fake.add_pod("w-2", false); // a node problem: not Ready either
        fake.set_pdb(Pdb {
            max_unavailable: 1,
            unhealthy: policy,
        });
        let scaler = Scaler::new(fake.client(), NAMESPACE, DEPLOYMENT);
        let result = scaler.evict("w-1").await;
        match result {
            Ok(()) => assert!(allowed, "{policy:?} evicted"),
            Err(kube::Error::Api(status)) => {
                assert!(!allowed && status.code == 429, "{policy:?}: {status:?}")
            }
            Err(err) => panic!("{err}"),
        }
        // A Ready worker cannot be evicted while the budget is spent, whatever the policy.
        let ready = scaler.evict("w-0").await;
        assert!(matches!(ready, Err(kube::Error::Api(s)) if s.code == 429));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_with_a_pending_pod_removes_the_drained_worker_and_no_other() {
    let fake = FakeKube::start().await;
    let prefix = prefix();
    // Four replicas: three running workers and one Pending pod (no node for it).
    fake.add_deployment(DEPLOYMENT, 4);
    let mut workers = Vec::new();
    for id in ["w-0", "w-1", "w-2"] {
        workers.push(start_worker(&fake, &prefix, id).await);
    }
    fake.add_pod_pending("w-pending");
    fake.set_pdb(Pdb {
        max_unavailable: 1,
        unhealthy: UnhealthyPodEvictionPolicy::AlwaysAllow,
    });
    let mut config = controller_config(&prefix);
    autoscale(&mut config, 50, 3);
    let started = Instant::now();
    let controller = start_controller(&fake, &config).await;

    wait_until("three replicas", Duration::from_secs(20), || async {
        fake.deployment().is_some_and(|(replicas, _)| replicas == 3)
    })
    .await;
    let lowered = started.elapsed();
    wait_until("the evicted pod gone", Duration::from_secs(5), || async {
        !fake.pods().contains_key("w-0")
    })
    .await;
    println!(
        "scale-down 4 -> 3 in the fake cluster: replicas lowered {lowered:?} after the controller started, the pod gone after {:?}",
        started.elapsed()
    );

    // The drained worker (the emptiest, first by name among equals) went; the ReplicaSet's
    // replacement was Pending and went with the lower replicas; the others stay.
    let pods = fake.pods();
    let live: BTreeMap<&String, _> = pods.iter().filter(|(_, p)| !p.deleting).collect();
    assert!(
        live.contains_key(&"w-1".to_owned()) && live.contains_key(&"w-2".to_owned()),
        "{pods:?}"
    );
    assert_eq!(live.len(), 3, "{pods:?}");
    assert_eq!(
        live.values().filter(|p| !p.assigned).count(),
        1,
        "one Pending pod left: {pods:?}"
    );
    let (_, managers) = fake.deployment().unwrap();
    assert!(
        managers.iter().all(|m| m == "remotemedia-controller"),
        "{managers:?}"
    );
    let reasons = event_reasons(&fake);
    for expected in [
        ("Draining", "w-0"),
        ("Evicted", "w-0"),
        ("ScaledDown", DEPLOYMENT),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(r, o)| (r.as_str(), o.as_str()) == expected),
            "no {expected:?} event in {reasons:?}"
        );
    }
    // Steady afterwards: no second scale-down at the minimum.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.deployment().unwrap().0, 3);

    controller.stop().await;
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_abandoned_because_the_load_rose_undrains_the_worker() {
    let fake = FakeKube::start().await;
    let prefix = prefix();
    fake.add_deployment(DEPLOYMENT, 2);
    fake.add_pod("w-1", true);
    let worker = start_worker(&fake, &prefix, "w-0").await;
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(5));
    let stop_beats = CancellationToken::new();
    fake_heartbeats(&prefix, "w-1", busy.clone(), stop_beats.clone());
    // No disruption allowed: the eviction is refused (429) and retried.
    fake.set_pdb(Pdb {
        max_unavailable: 0,
        unhealthy: UnhealthyPodEvictionPolicy::IfHealthyBudget,
    });
    let mut config = controller_config(&prefix);
    autoscale(&mut config, 10, 1);
    let controller = start_controller(&fake, &config).await;

    let keys = Keys::new(prefix.clone());
    let w0_draining = |keys: Keys| async move {
        let (live, _) = read_heartbeats(&mut redis().await, &keys).await.unwrap();
        live.iter().find(|w| w.id == "w-0").map(|w| w.draining)
    };
    wait_until(
        "w-0 drained and its eviction refused",
        Duration::from_secs(15),
        || {
            let keys = keys.clone();
            let fake = &fake;
            async move {
                w0_draining(keys).await == Some(true)
                    && event_reasons(fake)
                        .iter()
                        .any(|(r, _)| r == "EvictionRefused")
            }
        },
    )
    .await;

    // Calls arrive on w-1: two workers are needed again.
    busy.store(15, std::sync::atomic::Ordering::SeqCst);
    wait_until("w-0 takes sessions again", Duration::from_secs(10), || {
        let keys = keys.clone();
        async move { w0_draining(keys).await == Some(false) }
    })
    .await;
    assert!(event_reasons(&fake).contains(&("Undrained".into(), "w-0".into())));
    wait_until("w-0 placed again", Duration::from_secs(10), || async {
        table_ids(&table(&prefix).await).contains(&"w-0".to_owned())
    })
    .await;
    assert_eq!(fake.deployment().unwrap().0, 2, "the replicas stay");
    assert!(fake.pods().values().all(|p| !p.deleting));

    controller.stop().await;
    worker.stop().await;
    stop_beats.cancel();
}
