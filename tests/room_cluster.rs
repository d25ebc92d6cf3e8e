//! Rooms in the cluster (#15, #16): a room lives on one worker; when that worker refuses a
//! newcomer (full, or draining) the refusal reaches the client, or, with the frontends'
//! experimental `--room-span-workers`, the room spills onto another worker too. Real processes: a
//! private Redis, two frontends and two media workers; clients announce with `room=<name>` and
//! offer to `remotemedia-server` through either frontend.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::room_speaker::RoomSpeaker;
use common::signaling::{SignalingClient, SERVER};
use common::{metric_value, WAIT};
use remotemedia_webrtc::cluster::room_record::{self, Join};
use remotemedia_webrtc::cluster::Keys;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};

async fn sessions_on(worker: &Node) -> f64 {
    metric_value(
        &worker.metrics().await,
        "remotemedia_worker_sessions_active",
    )
    .unwrap_or(0.0)
}

/// Sessions on each worker, in order.
async fn sessions(workers: &[Node]) -> Vec<f64> {
    let mut counts = Vec::new();
    for worker in workers {
        counts.push(sessions_on(worker).await);
    }
    counts
}

/// A participant of `room` announced on `frontend`, connected to its server session.
async fn join(frontend: &Node, room: &str, id: &str) -> (SignalingClient, ClientPeer) {
    let metadata = HashMap::from([("room".to_owned(), room.to_owned())]);
    let (mut signaling, _) =
        SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    (signaling, peer)
}

/// Asserts every participant of `room` is still connected.
fn assert_connected(room: &[(SignalingClient, ClientPeer)], why: &str) {
    for (_, peer) in room {
        assert!(peer.is_connected(), "{why}");
    }
}

/// Each participant of `room` leaves as a client does (its server session ends).
async fn leave_all(room: &mut [(SignalingClient, ClientPeer)]) {
    for (signaling, _) in room {
        let disconnect = signaling
            .send(Req::Disconnect(pb::DisconnectRequest {
                peer_id: SERVER.into(),
            }))
            .await;
        signaling.expect_ack(&disconnect).await;
    }
}

/// The cluster: a private Redis, workers `worker-a` and `worker-b`, two frontends that both
/// see both workers.
async fn cluster() -> (RedisProcess, Vec<Node>, Vec<Node>) {
    cluster_with(&[], &[]).await
}

/// [`cluster`] with `worker_args` on both workers and `frontend_args` on both frontends.
async fn cluster_with(
    worker_args: &[&str],
    frontend_args: &[&str],
) -> (RedisProcess, Vec<Node>, Vec<Node>) {
    let redis = RedisProcess::start();
    let url = redis.url();
    let workers = vec![
        Node::worker("worker-a", &url, worker_args).await,
        Node::worker("worker-b", &url, worker_args).await,
    ];
    let frontends = vec![
        Node::start("frontend-1", "frontend", &url, frontend_args).await,
        Node::start("frontend-2", "frontend", &url, frontend_args).await,
    ];
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 2.0)
            .await;
    }
    (redis, workers, frontends)
}

/// The frontends' experimental flag that lets a room spill onto another worker.
const SPAN: &str = "--room-span-workers";

async fn redis_connection(redis: &RedisProcess) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `rm:room:<room>` as a map (empty: no record).
async fn room_record_of(
    conn: &mut redis::aio::MultiplexedConnection,
    room: &str,
) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(format!("rm:room:{room}"))
        .query_async(conn)
        .await
        .unwrap()
}

/// Waits until `room` has no record.
async fn wait_record_gone(conn: &mut redis::aio::MultiplexedConnection, room: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let record = room_record_of(conn, room).await;
        if record.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "room {room}'s record stays: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `room`'s record lists exactly `workers`.
async fn wait_record_workers(
    conn: &mut redis::aio::MultiplexedConnection,
    room: &str,
    workers: &[&str],
) {
    let want = serde_json::to_string(workers).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let record = room_record_of(conn, room).await;
        if record.get("workers") == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "room {room}'s record does not list {want}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `worker`'s heartbeat in Redis counts `sessions`.
async fn wait_heartbeat_sessions(
    conn: &mut redis::aio::MultiplexedConnection,
    worker: &str,
    sessions: u64,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let json: Option<String> = redis::cmd("GET")
            .arg(format!("rm:worker:{worker}"))
            .query_async(conn)
            .await
            .unwrap();
        let heartbeat: serde_json::Value =
            serde_json::from_str(json.as_deref().unwrap_or("{}")).unwrap();
        if heartbeat["active_sessions"] == sessions {
            assert_eq!(heartbeat["room_participants"], sessions, "{heartbeat}");
            assert_eq!(heartbeat["rooms"], 1, "{heartbeat}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeat of {worker}: {heartbeat}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `PeerDisconnected{remotemedia-server}` on `signaling`.
async fn expect_server_gone(signaling: &mut SignalingClient, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let response = tokio::select! {
            r = signaling.next() => r.unwrap().unwrap(),
            _ = tokio::time::sleep_until(deadline) => panic!("no PeerDisconnected within {within:?}"),
        };
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::PeerDisconnected(d)),
        })) = response.response
        {
            assert_eq!(d.peer_id, SERVER);
            return;
        }
    }
}

/// With `--room-span-workers` on the frontends: a room's sessions share one worker, and when
/// it drains the room's newcomers spill onto the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_sessions_share_one_worker_and_its_drain_sends_newcomers_to_the_other() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, workers, frontends) = cluster_with(&[], &[SPAN]).await;
    let mut conn = redis_connection(&redis).await;

    // Four participants of one room, through alternating frontends: one worker has them all.
    let mut alpha = Vec::new();
    for i in 0..4 {
        alpha.push(join(&frontends[i % 2], "alpha", &format!("alpha-{i}")).await);
        let counts = sessions(&workers).await;
        let n = (i + 1) as f64;
        assert!(
            counts == [n, 0.0] || counts == [0.0, n],
            "after {} participants of alpha: sessions per worker {counts:?}",
            i + 1
        );
    }
    let host = if sessions_on(&workers[0]).await == 4.0 {
        0
    } else {
        1
    };
    let other = 1 - host;
    let record = room_record_of(&mut conn, "alpha").await;
    assert_eq!(
        record.get("workers").map(String::as_str),
        Some(format!(r#"["{}"]"#, workers[host].name).as_str()),
        "{record:?}"
    );
    assert_eq!(
        record
            .get(&format!("tracks:{}", workers[host].name))
            .map(String::as_str),
        Some("[]"),
        "{record:?}"
    );
    let version = record.get("version").and_then(|v| v.parse::<u64>().ok());
    assert!(version.is_some(), "{record:?}");
    assert_eq!(
        record
            .get(&format!("at:{}", workers[host].name))
            .and_then(|v| v.parse::<u64>().ok()),
        version,
        "the last join went to the room's worker: {record:?}"
    );

    // A second room lands on the emptier worker (two workers: placement compares both, once
    // the frontends have read the heartbeat that counts alpha), and stays together there too.
    wait_heartbeat_sessions(&mut conn, &workers[host].name, 4).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let mut beta = Vec::new();
    for i in 0..2 {
        beta.push(join(&frontends[(i + 1) % 2], "beta", &format!("beta-{i}")).await);
    }
    assert_eq!(sessions_on(&workers[host]).await, 4.0);
    assert_eq!(sessions_on(&workers[other]).await, 2.0);

    // The room's worker drains (what the autoscaler asks before a scale-down).
    let _: () = redis::cmd("SET")
        .arg(format!("rm:drain:{}", workers[host].name))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    workers[host]
        .wait_metric("remotemedia_worker_draining", WAIT, |n| n == 1.0)
        .await;
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
            .await;
    }
    // A newcomer to its room goes to the other worker, through either frontend: the room
    // spills onto it, and its record lists both.
    let mut late = Vec::new();
    for (i, frontend) in frontends.iter().enumerate() {
        late.push(join(frontend, "alpha", &format!("late-{i}")).await);
        assert_eq!(sessions_on(&workers[other]).await, 3.0 + i as f64);
    }
    let record = room_record_of(&mut conn, "alpha").await;
    assert_eq!(
        record.get("workers").map(String::as_str),
        Some(format!(r#"["{}","{}"]"#, workers[host].name, workers[other].name).as_str()),
        "{record:?}"
    );
    // Its participants stay; a new room goes to the other worker.
    assert_connected(&alpha, "a participant of the draining worker was dropped");
    assert_eq!(sessions_on(&workers[host]).await, 4.0);
    let _gamma = join(&frontends[0], "gamma", "gamma-0").await;
    assert_eq!(sessions_on(&workers[other]).await, 5.0);

    // The participants on the draining worker leave: it leaves the record (the room stays on
    // the other worker), and the drain can end.
    leave_all(&mut alpha).await;
    workers[host]
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;
    wait_record_workers(&mut conn, "alpha", &[&workers[other].name]).await;
    // The last ones take the record with them.
    for (signaling, _) in &mut late {
        let disconnect = signaling
            .send(Req::Disconnect(pb::DisconnectRequest {
                peer_id: SERVER.into(),
            }))
            .await;
        signaling.expect_ack(&disconnect).await;
    }
    wait_record_gone(&mut conn, "alpha").await;
    assert!(!room_record_of(&mut conn, "beta").await.is_empty());
    println!("rooms on one worker, drained: {:?}", started.elapsed());
}

/// A worker's relay socket (`--relay-port`): its address is in the heartbeat, and a datagram
/// from a worker with no link there is dropped and counted. Without the worker API's TLS the
/// worker refuses to relay, unless `--insecure-relay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_relay_socket_is_advertised_and_drops_strangers() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let mut conn = redis_connection(&redis).await;
    let port = common::cluster::free_udp_port().to_string();
    let url = redis.url();
    let (status, output) = common::run_until_exit(&[
        "--mode",
        "worker",
        "--redis-url",
        &url,
        "--relay-port",
        &port,
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
    ]);
    assert!(!status.success(), "{output}");
    assert!(output.contains("--worker-tls-cert"), "{output}");

    let worker = Node::worker(
        "worker-r",
        &redis.url(),
        &["--relay-port", &port, "--insecure-relay"],
    )
    .await;
    let json: Option<String> = redis::cmd("GET")
        .arg("rm:worker:worker-r")
        .query_async(&mut conn)
        .await
        .unwrap();
    let heartbeat: serde_json::Value = serde_json::from_str(json.as_deref().unwrap()).unwrap();
    let relay = format!("127.0.0.1:{port}");
    assert_eq!(heartbeat["relay_address"], relay.as_str(), "{heartbeat}");

    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&[0; 40], &relay).await.unwrap();
    worker
        .wait_metric(
            "remotemedia_relay_packets_dropped_total{reason=\"unknown_link\"}",
            WAIT,
            |n| n == 1.0,
        )
        .await;
}

/// Without `--room-span-workers` (the default) a room never spans workers: its full worker
/// refuses a newcomer with RESOURCE_EXHAUSTED (at capacity), its draining worker refuses one
/// naming the room, whichever frontend it reaches, though the other worker has room; the
/// record keeps only the room's worker. Its participants stay, and a new room goes to the
/// other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spanning_a_full_or_draining_rooms_worker_refuses_newcomers() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, workers, frontends) = cluster_with(&["--capacity", "2"], &[]).await;
    let mut conn = redis_connection(&redis).await;

    let mut alpha = Vec::new();
    for i in 0..2 {
        alpha.push(join(&frontends[i % 2], "alpha", &format!("alpha-{i}")).await);
    }
    let host = if sessions_on(&workers[0]).await == 2.0 {
        0
    } else {
        1
    };
    let other = 1 - host;
    assert_eq!(sessions_on(&workers[other]).await, 0.0);

    // The room's worker is full: a newcomer is refused, through either frontend.
    for (i, frontend) in frontends.iter().enumerate() {
        let error = refused(frontend, "alpha", &format!("full-{i}")).await;
        assert_eq!(
            error.code,
            tonic::Code::ResourceExhausted as u32,
            "{error:?}"
        );
        assert!(
            error.message.contains("at its session capacity (2)"),
            "{}",
            error.message
        );
    }
    assert_eq!(sessions(&workers).await, {
        let mut expected = [0.0; 2];
        expected[host] = 2.0;
        expected
    });
    wait_record_workers(&mut conn, "alpha", &[&workers[host].name]).await;

    // The room's worker drains: a newcomer is refused, naming the room, through either
    // frontend.
    let _: () = redis::cmd("SET")
        .arg(format!("rm:drain:{}", workers[host].name))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    workers[host]
        .wait_metric("remotemedia_worker_draining", WAIT, |n| n == 1.0)
        .await;
    for (i, frontend) in frontends.iter().enumerate() {
        let error = refused(frontend, "alpha", &format!("late-{i}")).await;
        assert_eq!(
            error.code,
            tonic::Code::ResourceExhausted as u32,
            "{error:?}"
        );
        assert!(
            error.message.contains("room alpha is closing"),
            "{}",
            error.message
        );
    }
    wait_record_workers(&mut conn, "alpha", &[&workers[host].name]).await;
    assert_connected(&alpha, "a participant of the closing room was dropped");
    assert_eq!(sessions_on(&workers[other]).await, 0.0);
    let _gamma = join(&frontends[0], "gamma", "gamma-0").await;
    assert_eq!(sessions_on(&workers[other]).await, 1.0);

    // The participants leave: the last one takes the record with it, and the drain can end.
    leave_all(&mut alpha).await;
    wait_record_gone(&mut conn, "alpha").await;
    workers[host]
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;
    println!("rooms without spanning, refused: {:?}", started.elapsed());
}

/// The error answering the offer of `id`, a newcomer to `room` through `frontend`.
async fn refused(frontend: &Node, room: &str, id: &str) -> pb::ErrorResponse {
    let metadata = HashMap::from([("room".to_owned(), room.to_owned())]);
    let (mut signaling, _) =
        SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    signaling.expect_error(&offer).await
}

/// With `--room-span-workers` on the frontends, a room outgrows its worker (`--capacity 2`):
/// newcomers spill onto the other worker, the record lists both, a room bigger than both is
/// refused, and each worker leaves the record with its last participant of the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_bigger_than_its_worker_spills_onto_the_other() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, workers, frontends) = cluster_with(&["--capacity", "2"], &[SPAN]).await;
    let mut conn = redis_connection(&redis).await;

    let mut first = Vec::new();
    for i in 0..2 {
        first.push(join(&frontends[i % 2], "big", &format!("big-{i}")).await);
    }
    let host = if sessions_on(&workers[0]).await == 2.0 {
        0
    } else {
        1
    };
    let other = 1 - host;
    assert_eq!(sessions(&workers).await[other], 0.0);
    let mut spilled = Vec::new();
    for i in 2..4 {
        spilled.push(join(&frontends[i % 2], "big", &format!("big-{i}")).await);
        assert_eq!(sessions_on(&workers[other]).await, (i - 1) as f64);
    }
    assert_eq!(sessions_on(&workers[host]).await, 2.0);
    let both = [workers[host].name.as_str(), workers[other].name.as_str()];
    wait_record_workers(&mut conn, "big", &both).await;
    let record = room_record_of(&mut conn, "big").await;
    for worker in both {
        assert_eq!(
            record.get(&format!("tracks:{worker}")).map(String::as_str),
            Some("[]"),
            "{record:?}"
        );
    }

    // Both workers full: the fifth participant is refused.
    let metadata = HashMap::from([("room".to_owned(), "big".to_owned())]);
    let (mut fifth, _) =
        SignalingClient::announce_with(&frontends[0].grpc_url(), "big-4", metadata).await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = fifth.offer(SERVER, peer.offer().await).await;
    let error = fifth.expect_error(&offer).await;
    assert_eq!(
        error.code,
        tonic::Code::ResourceExhausted as u32,
        "{error:?}"
    );
    wait_record_workers(&mut conn, "big", &both).await;

    // The spilled participants leave: their worker leaves the record, the room stays.
    for (signaling, _) in &mut spilled {
        let disconnect = signaling
            .send(Req::Disconnect(pb::DisconnectRequest {
                peer_id: SERVER.into(),
            }))
            .await;
        signaling.expect_ack(&disconnect).await;
    }
    wait_record_workers(&mut conn, "big", &[&workers[host].name]).await;
    for (_, peer) in &first {
        assert!(peer.is_connected());
    }
    for (signaling, _) in &mut first {
        let disconnect = signaling
            .send(Req::Disconnect(pb::DisconnectRequest {
                peer_id: SERVER.into(),
            }))
            .await;
        signaling.expect_ack(&disconnect).await;
    }
    wait_record_gone(&mut conn, "big").await;
    println!("a room spilled across two workers: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_worker_killed_its_participants_are_told_and_rejoin_on_the_survivor() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, mut workers, frontends) = cluster().await;
    let mut conn = redis_connection(&redis).await;

    let mut omega = vec![
        join(&frontends[0], "omega", "omega-0").await,
        join(&frontends[1], "omega", "omega-1").await,
    ];
    let host = if sessions_on(&workers[0]).await == 2.0 {
        0
    } else {
        1
    };
    let survivor = 1 - host;
    assert_eq!(sessions_on(&workers[survivor]).await, 0.0);

    let killed = Instant::now();
    workers[host].kill9();
    for (signaling, _) in &mut omega {
        expect_server_gone(signaling, Duration::from_secs(10)).await;
    }
    println!("participants told {:?} after the kill", killed.elapsed());
    // Cleared before the participants were told: their rejoin places the room again.
    assert!(room_record_of(&mut conn, "omega").await.is_empty());

    for (signaling, peer) in &mut omega {
        peer.close().await;
        *peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(signaling, peer).await;
    }
    assert_eq!(sessions_on(&workers[survivor]).await, 2.0);
    let record = room_record_of(&mut conn, "omega").await;
    assert_eq!(
        record.get("workers").map(String::as_str),
        Some(format!(r#"["{}"]"#, workers[survivor].name).as_str()),
        "{record:?}"
    );
    println!("worker killed, room placed again: {:?}", started.elapsed());
}

/// Rooms' media in the cluster: participants reaching the room's worker through different
/// frontends hear each other, because each one's answers to the worker's server offers reach
/// the worker through the frontend holding its stream (worker API `AnswerServerOffer`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_on_two_frontends_hear_each_other_through_the_rooms_worker() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (_redis, workers, frontends) = cluster().await;
    let alice = RoomSpeaker::join(&frontends[0], "duet", "alice", 440.0).await;
    let bob = RoomSpeaker::join(&frontends[1], "duet", "bob", 660.0).await;
    let counts = sessions(&workers).await;
    assert!(
        counts == [2.0, 0.0] || counts == [0.0, 2.0],
        "the room's sessions on one worker: {counts:?}"
    );
    let at_alice = alice.hears("bob").await;
    let at_bob = bob.hears("alice").await;
    assert!(
        (at_alice - 660.0).abs() <= 10.0,
        "alice hears bob at {at_alice} Hz"
    );
    assert!(
        (at_bob - 440.0).abs() <= 10.0,
        "bob hears alice at {at_bob} Hz"
    );
    assert!(*alice.answered.lock() >= 1 && *bob.answered.lock() >= 1);
    assert!(
        !alice.heard.lock().contains_key("alice") && !bob.heard.lock().contains_key("bob"),
        "nobody hears itself"
    );
    alice.stop.cancel();
    bob.stop.cancel();
    println!(
        "a room's media across two frontends: {:?}",
        started.elapsed()
    );
}

/// Frontends placing one room at once agree: one record, one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_placing_one_room_at_once_agree_and_deletes_compare_the_version() {
    let redis = RedisProcess::start();
    let (_, manager) = remotemedia_webrtc::cluster::connect(&redis.url(), None)
        .await
        .unwrap();
    let keys = Keys::new("rm:");

    let placements = (0..16).map(|i| {
        let (mut manager, keys) = (manager.clone(), keys.clone());
        tokio::spawn(async move {
            let candidate = format!("worker-{}", i % 4);
            room_record::join(&mut manager, &keys, "race", Join::Place(&candidate))
                .await
                .unwrap()
                .unwrap()
        })
    });
    let mut records = Vec::new();
    for placement in placements {
        records.push(placement.await.unwrap());
    }
    assert_eq!(
        records.iter().filter(|r| r.created).count(),
        1,
        "{records:?}"
    );
    let placed = records.iter().find(|r| r.created).unwrap().workers.clone();
    assert!(records.iter().all(|r| r.workers == placed), "{records:?}");
    let mut versions: Vec<u64> = records.iter().map(|r| r.version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 16, "every join a new version");

    // Joining without a candidate never creates one.
    let mut m = manager.clone();
    assert_eq!(
        room_record::join(&mut m, &keys, "nowhere", Join::Existing)
            .await
            .unwrap(),
        None
    );

    // A delete at an old version leaves the record (someone joined since); at the last one
    // it goes.
    let worker = placed[0].clone();
    let last = *versions.last().unwrap();
    assert!(
        !room_record::forget(&mut m, &keys, "race", &worker, versions[0])
            .await
            .unwrap()
    );
    assert!(room_record::forget(&mut m, &keys, "race", &worker, last)
        .await
        .unwrap());
    assert_eq!(
        room_record::join(&mut m, &keys, "race", Join::Existing)
            .await
            .unwrap(),
        None
    );

    // A dead worker's rooms are cleared; another worker's stay.
    room_record::join(&mut m, &keys, "on-dead", Join::Place("dead"))
        .await
        .unwrap();
    room_record::join(&mut m, &keys, "on-live", Join::Place("live"))
        .await
        .unwrap();
    assert_eq!(
        room_record::reap(&mut m, &keys, "dead").await.unwrap(),
        vec!["on-dead".to_owned()]
    );
    assert_eq!(
        room_record::join(&mut m, &keys, "on-dead", Join::Existing)
            .await
            .unwrap(),
        None
    );
    let live = room_record::join(&mut m, &keys, "on-live", Join::Existing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.workers, ["live"]);

    // A room spills: the candidate joins its workers once, and each worker leaves on the
    // version of the latest join sent to it (a join sent to another does not hold it).
    let placed = room_record::join(&mut m, &keys, "wide", Join::Place("a"))
        .await
        .unwrap()
        .unwrap();
    assert!(placed.created && placed.added);
    let to_b = room_record::join(&mut m, &keys, "wide", Join::Spill("b"))
        .await
        .unwrap()
        .unwrap();
    assert!(!to_b.created && to_b.added);
    assert_eq!(to_b.workers, ["a", "b"]);
    let again = room_record::join(&mut m, &keys, "wide", Join::Spill("b"))
        .await
        .unwrap()
        .unwrap();
    assert!(!again.added, "{again:?}");
    assert_eq!(again.workers, ["a", "b"]);
    let to_a = room_record::join(&mut m, &keys, "wide", Join::Existing)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !room_record::forget(&mut m, &keys, "wide", "b", to_b.version)
            .await
            .unwrap(),
        "a join was sent to b since"
    );
    assert!(
        !room_record::forget(&mut m, &keys, "wide", "c", to_a.version)
            .await
            .unwrap(),
        "c does not host it"
    );
    assert!(
        room_record::forget(&mut m, &keys, "wide", "b", again.version)
            .await
            .unwrap()
    );
    let left = room_record::join(&mut m, &keys, "wide", Join::Existing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.workers, ["a"]);
    // A dead worker leaves the rooms it shared; the others keep them.
    room_record::join(&mut m, &keys, "wide", Join::Spill("dead"))
        .await
        .unwrap();
    assert_eq!(
        room_record::reap(&mut m, &keys, "dead").await.unwrap(),
        vec!["wide".to_owned()]
    );
    let survived = room_record::join(&mut m, &keys, "wide", Join::Existing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(survived.workers, ["a"]);
    assert!(
        room_record::forget(&mut m, &keys, "wide", "a", survived.version)
            .await
            .unwrap()
    );
    assert_eq!(
        room_record::join(&mut m, &keys, "wide", Join::Existing)
            .await
            .unwrap(),
        None,
        "the record goes with its last worker"
    );
}
