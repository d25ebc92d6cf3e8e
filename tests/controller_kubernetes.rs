//! The controller's Kubernetes side against a scripted mock API server (tower-test), for what
//! a stateful fake cannot stage easily: exact request sequences, watches that fail with 403,
//! Lease calls that never answer. The stateful fake API server (tests/common/fake_kube) runs
//! the rest in tests/controller_fake_cluster.rs: Lease renewal and release, 410 Gone and the
//! re-list, the scale-down.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use remotemedia_webrtc::cluster::controller::placement_table;
use remotemedia_webrtc::cluster::kubernetes::{
    join, watch_pods, LeaseElection, PodState, PodStates,
};
use remotemedia_webrtc::cluster::workers::{now_ms, WorkerStatus};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower_test::mock;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "test"), handle)
}

fn pod(name: &str, ready: bool, deleting: bool, resource_version: &str) -> Value {
    let mut metadata = json!({
        "name": name,
        "namespace": "test",
        "resourceVersion": resource_version,
        "labels": {"app.kubernetes.io/component": "worker"},
    });
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-11-27T12:00:00Z");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    })
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

fn events(events: &[(&str, Value)]) -> Vec<u8> {
    events
        .iter()
        .map(|(kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
        .collect::<String>()
        .into_bytes()
}

/// Answers LISTs with `list` and each WATCH with the next body the test releases on
/// `watches` (the body ends: the watch closes, as an API server's watch timeout does).
fn serve_pods(
    mut handle: Handle,
    list: Value,
    mut watches: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let uri = request.uri().to_string();
            assert!(uri.starts_with("/api/v1/namespaces/test/pods?"), "{uri}");
            assert!(
                uri.contains("labelSelector=app.kubernetes.io%2Fcomponent%3Dworker"),
                "{uri}"
            );
            seen.push(uri.clone());
            if uri.contains("watch=true") {
                match watches.recv().await {
                    Some(body) => send.send_response(respond(StatusCode::OK, body)),
                    None => return seen,
                }
            } else {
                send.send_response(respond(StatusCode::OK, serde_json::to_vec(&list).unwrap()));
            }
        }
        seen
    })
}

async fn wait_for(
    states: &PodStates,
    what: &str,
    check: impl Fn(&std::collections::HashMap<String, PodState>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check(&states.read()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            states.read()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(id: &str, active: u32) -> WorkerStatus {
    WorkerStatus {
        id: id.into(),
        instance: String::new(),
        address: format!("{id}:50052"),
        udp_address: None,
        relay_address: None,
        capacity: 10,
        active_sessions: active,
        cpu_load: 0.1,
        draining: false,
        rooms: 0,
        room_participants: 0,
        ready: true,
        updated_at_ms: now_ms(),
    }
}

fn table_ids(states: &PodStates, heartbeats: &[WorkerStatus]) -> Vec<String> {
    let joined = join(heartbeats.to_vec(), &states.read());
    placement_table("me", 1, joined, now_ms())
        .workers
        .into_iter()
        .map(|w| w.id)
        .collect()
}

#[tokio::test]
async fn the_watcher_follows_readiness_deletion_and_watch_restarts_into_the_table() {
    let (client, handle) = mock_client();
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "10"},
        "items": [pod("w1", true, false, "8"), pod("w2", false, false, "9")],
    });
    let (release, watches) = tokio::sync::mpsc::channel(4);
    let server = serve_pods(handle, list, watches);
    let states = PodStates::default();
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_pods(
        kube::Api::namespaced(client, "test"),
        "app.kubernetes.io/component=worker".into(),
        states.clone(),
        stop.clone(),
    ));
    let heartbeats = [
        heartbeat("w1", 4),
        heartbeat("w2", 0),
        heartbeat("w3", 0),
        heartbeat("stray", 0),
    ];

    // After the first list: w1 Ready, w2 not yet; only w1 takes sessions, the stray
    // heartbeat without a pod never does.
    wait_for(&states, "the initial list", |s| s.len() == 2).await;
    assert_eq!(table_ids(&states, &heartbeats), ["w1"]);

    // w2 becomes Ready, then w1 is being deleted (it still has sessions); the watch ends.
    release
        .send(events(&[
            ("MODIFIED", pod("w2", true, false, "11")),
            ("MODIFIED", pod("w1", true, true, "12")),
        ]))
        .await
        .unwrap();
    wait_for(&states, "w2 ready and w1 deleting", |s| {
        s.get("w2").is_some_and(|p| p.ready) && s.get("w1").is_some_and(|p| p.deleting)
    })
    .await;
    assert_eq!(
        table_ids(&states, &heartbeats),
        ["w2"],
        "a deleting pod gets no new sessions"
    );

    // After the restart: w1 is gone, w3 arrives not Ready.
    release
        .send(events(&[
            ("DELETED", pod("w1", true, true, "13")),
            ("ADDED", pod("w3", false, false, "14")),
        ]))
        .await
        .unwrap();

    wait_for(&states, "the restarted watch", |s| {
        !s.contains_key("w1") && s.contains_key("w3")
    })
    .await;
    assert!(!states.read()["w3"].ready);
    assert_eq!(table_ids(&states, &heartbeats), ["w2"]);

    stop.cancel();
    watcher.await.unwrap();
    drop(release);
    let requests = server.await.unwrap();
    let watches: Vec<&String> = requests
        .iter()
        .filter(|u| u.contains("watch=true"))
        .collect();
    assert!(watches.len() >= 2, "the watch was restarted: {requests:?}");
    assert!(watches[0].contains("resourceVersion=10"), "{watches:?}");
    assert!(
        watches[1].contains("resourceVersion=12"),
        "restarted from the last seen version: {watches:?}"
    );
}

#[test]
fn the_initial_list_shows_only_ready_pods_as_placeable() {
    let states = PodStates::default();
    states.write().insert(
        "w1".into(),
        PodState {
            ready: true,
            deleting: false,
        },
    );
    states.write().insert(
        "w2".into(),
        PodState {
            ready: false,
            deleting: false,
        },
    );
    let heartbeats = [heartbeat("w1", 4), heartbeat("w2", 0)];
    assert_eq!(table_ids(&states, &heartbeats), ["w1"]);
}

fn micro_time(seconds_ago: i64) -> String {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds_ago);
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn lease(holder: &str, renewed_seconds_ago: i64, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "remotemedia-controller", "namespace": "test", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 5,
            "renewTime": micro_time(renewed_seconds_ago),
            "acquireTime": micro_time(100),
            "leaseTransitions": transitions,
        },
    })
}

/// Answers one request with `reply(method, uri, body)`.
async fn answer(
    handle: &mut Handle,
    reply: impl FnOnce(&str, &str, Value) -> (StatusCode, Value),
) -> (String, Value) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (status, response) = reply(&method, &uri, body.clone());
    send.send_response(respond(status, serde_json::to_vec(&response).unwrap()));
    (format!("{method} {uri}"), body)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": "leases.coordination.k8s.io \"remotemedia-controller\" not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": "the object has been modified"})
}

#[tokio::test]
async fn the_lease_elects_one_leader_with_growing_terms() {
    let (client, mut handle) = mock_client();
    let api = kube::Api::namespaced(client, "test");
    let mut me = LeaseElection::new(api, "remotemedia-controller", "me", Duration::from_secs(5));

    // No Lease yet: this replica creates it and leads in term 1.
    let lead = tokio::spawn(async move {
        let term = me.lead().await;
        (me, term)
    });
    let (get, _) = answer(&mut handle, |_, _, _| (StatusCode::NOT_FOUND, not_found())).await;
    assert!(
        get.starts_with(
            "GET /apis/coordination.k8s.io/v1/namespaces/test/leases/remotemedia-controller"
        ),
        "{get}"
    );
    let (create, body) = answer(&mut handle, |_, _, body| (StatusCode::CREATED, body)).await;
    assert!(create.starts_with("POST"), "{create}");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    let (mut me, term) = lead.await.unwrap();
    assert_eq!(term, Some(1));

    // Held by another replica that renews: this one follows and writes nothing.
    let lead = tokio::spawn(async move {
        let term = me.lead().await;
        (me, term)
    });
    answer(&mut handle, |_, _, _| {
        (StatusCode::OK, lease("other", 1, 3))
    })
    .await;
    let (mut me, term) = lead.await.unwrap();
    assert_eq!(term, None);

    // The other's Lease expired: this replica takes it over in the next term.
    let lead = tokio::spawn(async move {
        let term = me.lead().await;
        (me, term)
    });
    answer(&mut handle, |_, _, _| {
        (StatusCode::OK, lease("other", 30, 3))
    })
    .await;
    let (put, body) = answer(&mut handle, |_, _, body| (StatusCode::OK, body)).await;
    assert!(put.starts_with("PUT"), "{put}");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "the write is conditional on what was read"
    );
    let (mut me, term) = lead.await.unwrap();
    assert_eq!(term, Some(4));

    // A race for an expired Lease that another replica won (409): not the leader.
    let lead = tokio::spawn(async move {
        let term = me.lead().await;
        (me, term)
    });
    answer(&mut handle, |_, _, _| {
        (StatusCode::OK, lease("third", 30, 4))
    })
    .await;
    answer(&mut handle, |_, _, _| (StatusCode::CONFLICT, conflict())).await;
    let (_me, term) = lead.await.unwrap();
    assert_eq!(term, None);
}

// ---- The controller against a failing Pod watch (a real Redis on 127.0.0.1:6379) ----

use remotemedia_webrtc::cluster::kubernetes::LeaseTimings;
use remotemedia_webrtc::cluster::workers::{read_table, write_heartbeat, PlacementTable};
use remotemedia_webrtc::cluster::{Controller, Keys};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn forbidden() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
           "message": "pods is forbidden: User \"system:serviceaccount:test:controller\" cannot list resource \"pods\""})
}

/// What the mock API server does with Pod requests.
#[derive(Default)]
struct PodApi {
    /// Lists and watches answer 403 (RBAC removed, a webhook down).
    failing: AtomicBool,
    /// A held watch is answered with an error once this flips.
    fail_watches: tokio::sync::Notify,
    lists: AtomicUsize,
    lease_writes: AtomicUsize,
}

/// Serves the controller's requests: a Lease kept in memory (created, then replaced) and
/// the worker Pods (`w1`, Ready) unless `pods.failing`; watches stay open until
/// `pods.fail_watches` fires.
fn serve_controller(mut handle: Handle, pods: Arc<PodApi>) {
    tokio::spawn(async move {
        let mut lease: Option<Value> = None;
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            if uri.contains("/leases") {
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (status, reply) = match (method.as_str(), &lease) {
                    ("GET", None) => (StatusCode::NOT_FOUND, not_found()),
                    ("GET", Some(stored)) => (StatusCode::OK, stored.clone()),
                    _ => {
                        pods.lease_writes.fetch_add(1, Ordering::SeqCst);
                        let mut stored = body;
                        stored["metadata"]["resourceVersion"] = json!("1");
                        lease = Some(stored.clone());
                        (StatusCode::OK, stored)
                    }
                };
                send.send_response(respond(status, serde_json::to_vec(&reply).unwrap()));
            } else if uri.contains("watch=true") {
                let pods = Arc::clone(&pods);
                tokio::spawn(async move {
                    let failed = pods.fail_watches.notified();
                    tokio::pin!(failed);
                    failed.as_mut().enable();
                    if !pods.failing.load(Ordering::SeqCst) {
                        failed.await;
                    }
                    send.send_response(respond(
                        StatusCode::FORBIDDEN,
                        serde_json::to_vec(&forbidden()).unwrap(),
                    ));
                });
            } else {
                pods.lists.fetch_add(1, Ordering::SeqCst);
                if pods.failing.load(Ordering::SeqCst) {
                    send.send_response(respond(
                        StatusCode::FORBIDDEN,
                        serde_json::to_vec(&forbidden()).unwrap(),
                    ));
                } else {
                    let list = json!({
                        "apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": "10"},
                        "items": [pod("w1", true, false, "9")],
                    });
                    send.send_response(respond(StatusCode::OK, serde_json::to_vec(&list).unwrap()));
                }
            }
        }
    });
}

/// The controller's `/readyz` status code.
async fn readyz(address: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap()
}

struct RunningController {
    http: std::net::SocketAddr,
    redis: redis::aio::ConnectionManager,
    keys: Keys,
    stop: CancellationToken,
}

impl RunningController {
    async fn table(&self) -> Option<PlacementTable> {
        read_table(&mut self.redis.clone(), &self.keys)
            .await
            .unwrap()
    }
}

/// A controller on a mock API server and the real Redis under a prefix of its own, with a
/// live heartbeat of worker `w1`.
async fn start_controller(pods: Arc<PodApi>) -> RunningController {
    let prefix = format!(
        "rm-ctl-{}-{}:",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let mut config = remotemedia_webrtc::config::Config::local_test();
    config.redis_url = Some("redis://127.0.0.1:6379".into());
    config.redis_prefix = prefix.clone();
    config.http_address = "127.0.0.1:0".parse().unwrap();
    let (client, handle) = mock_client();
    serve_controller(handle, pods);
    let controller = Controller::bind(&config)
        .await
        .unwrap()
        .with_kubernetes(client, "test", "app.kubernetes.io/component=worker")
        .with_lease(
            "rm-test-controller",
            LeaseTimings {
                duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(500),
            },
        );
    let http = controller.http_address().unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(controller.run(async move { stopped.cancelled().await }));
    let (_, redis) = remotemedia_webrtc::cluster::connect("redis://127.0.0.1:6379", None)
        .await
        .unwrap();
    let keys = Keys::new(prefix);
    let (mut beat, beat_keys, beat_stop) = (redis.clone(), keys.clone(), stop.clone());
    tokio::spawn(async move {
        while !beat_stop.is_cancelled() {
            write_heartbeat(&mut beat, &beat_keys, &heartbeat("w1", 1), None)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    RunningController {
        http,
        redis,
        keys,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_never_lists_publishes_no_table_and_the_controller_is_not_ready() {
    let pods = Arc::new(PodApi::default());
    pods.failing.store(true, Ordering::SeqCst);
    let controller = start_controller(Arc::clone(&pods)).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pods.lease_writes.load(Ordering::SeqCst) >= 2,
        "the replica leads (took and renewed the Lease)"
    );
    assert!(
        pods.lists.load(Ordering::SeqCst) >= 2,
        "the list is retried"
    );
    assert_eq!(
        controller.table().await,
        None,
        "no placement table without a synced Pod view"
    );
    assert_eq!(readyz(controller.http).await, 503);
    controller.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_fails_after_syncing_lets_the_table_go_stale_until_it_lists_again() {
    let pods = Arc::new(PodApi::default());
    let controller = start_controller(Arc::clone(&pods)).await;

    // Synced: the leader publishes w1 and is ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let table = controller.table().await;
        if table.as_ref().is_some_and(|t| t.workers.len() == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no table: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readyz(controller.http).await, 200);

    // The watch fails and so do the lists (RBAC removed): the table is not refreshed any
    // more, the controller is not ready, and the table goes stale, which makes frontends
    // place from the heartbeats.
    pods.failing.store(true, Ordering::SeqCst);
    pods.fail_watches.notify_waiters();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let last = controller.table().await.unwrap().updated_at_ms;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        controller.table().await.map(|t| t.updated_at_ms),
        Some(last),
        "not refreshed while the watch fails"
    );
    assert_eq!(readyz(controller.http).await, 503);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while controller
        .table()
        .await
        .is_some_and(|t| t.is_fresh(now_ms()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the table stays fresh"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "table stale {} ms after its last write",
        now_ms().saturating_sub(last)
    );

    // The API answers again: the next list syncs, the table is fresh and the controller ready.
    pods.failing.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !controller
        .table()
        .await
        .is_some_and(|t| t.is_fresh(now_ms()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fresh table again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readyz(controller.http).await, 200);
    controller.stop.cancel();
}

#[tokio::test]
async fn a_hung_lease_call_times_out_and_the_leader_steps_down_at_its_renew_deadline() {
    let (client, mut handle) = mock_client();
    let timings = LeaseTimings {
        duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    };
    let mut me = LeaseElection::with_timings(
        kube::Api::namespaced(client, "test"),
        "rm-test-controller",
        "me",
        timings,
    );

    // Becomes the leader.
    let lead = tokio::spawn(async move {
        let term = me.lead().await;
        (me, term)
    });
    answer(&mut handle, |_, _, _| (StatusCode::NOT_FOUND, not_found())).await;
    answer(&mut handle, |_, _, body| (StatusCode::CREATED, body)).await;
    let (mut me, term) = lead.await.unwrap();
    assert_eq!(term, Some(1));

    // From now on the API server takes requests and never answers.
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some(request) = handle.next_request().await {
            unanswered.push(request);
        }
    });

    // A hung renewal returns within the retry period; still leading inside the deadline.
    let started = std::time::Instant::now();
    assert_eq!(me.lead().await, Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Past the renew deadline without a renewal: no longer the leader.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    assert_eq!(me.lead().await, None);
    assert!(started.elapsed() < Duration::from_secs(1));

    // The next paced attempt (a follower's) is bounded the same way.
    tokio::time::sleep(timings.retry_period).await;
    let started = std::time::Instant::now();
    assert_eq!(me.tick().await, None);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn the_lease_timings_default_to_client_go() {
    let timings = LeaseTimings::default();
    assert_eq!(
        (
            timings.duration,
            timings.renew_deadline,
            timings.retry_period
        ),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    let config = remotemedia_webrtc::config::Config::local_test();
    assert_eq!(config.cluster.lease_duration, Duration::from_secs(15));
    assert_eq!(config.cluster.lease_renew_deadline, Duration::from_secs(10));
    assert_eq!(config.cluster.lease_retry_period, Duration::from_secs(2));
    assert_eq!(config.cluster.lease_name, "remotemedia-controller");
}
