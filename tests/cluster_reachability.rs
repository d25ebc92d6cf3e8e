//! Sessions on a worker that takes no new sessions (full, or draining) stay reachable while a
//! controller runs: the placement table leaves such workers out, but their clients' candidates
//! and closes must still reach them (the frontend finds them by their heartbeats).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::WAIT;
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};

async fn call(frontend: &Node, id: &str) -> (SignalingClient, ClientPeer) {
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), id).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    (signaling, peer)
}

/// The controller's fresh table, as the ids of the workers it lists.
async fn table_workers(redis: &mut redis::aio::MultiplexedConnection) -> Option<Vec<String>> {
    let json: Option<String> = redis::cmd("GET")
        .arg("rm:placement")
        .query_async(redis)
        .await
        .unwrap();
    let table: serde_json::Value = serde_json::from_str(&json?).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let age = now.saturating_sub(table["updated_at_ms"].as_u64().unwrap_or(0));
    (age < 2_000).then(|| {
        table["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

/// The client's candidates reach its session (a malformed one comes back refused by the
/// worker, not swallowed), and its disconnect ends the session on the worker.
async fn session_is_reachable(signaling: &mut SignalingClient, worker: &Node) {
    let bad = signaling
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: SERVER.into(),
            candidate: "candidate:not a candidate".into(),
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        }))
        .await;
    let error = signaling.expect_error(&bad).await;
    assert!(
        error.message.to_lowercase().contains("candidate"),
        "{error:?}"
    );
    assert_eq!(worker.sessions_active().await, 1.0);
    let disconnect = signaling
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: SERVER.into(),
        }))
        .await;
    signaling.expect_ack(&disconnect).await;
    worker
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_full_and_draining_workers_stay_reachable_under_a_controller() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let controller = Node::start("controller", "controller", &url, &[]).await;
    controller
        .wait_metric("remotemedia_controller_leader", WAIT, |n| n == 1.0)
        .await;
    let full = Node::worker("worker-full", &url, &["--capacity", "1"]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (mut on_full, _full_peer) = call(&frontend, "on-full").await;
    assert_eq!(full.sessions_active().await, 1.0);

    // The second worker comes after the first call, so the second call lands on it.
    let draining = Node::worker("worker-draining", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    common::eventually("the table to list only worker-draining", || {
        let mut conn = conn.clone();
        async move { table_workers(&mut conn).await == Some(vec!["worker-draining".into()]) }
    })
    .await;
    let (mut on_draining, _draining_peer) = call(&frontend, "on-draining").await;
    assert_eq!(draining.sessions_active().await, 1.0);
    let _: () = redis::cmd("SET")
        .arg("rm:drain:worker-draining")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    draining
        .wait_metric("remotemedia_worker_draining", WAIT, |n| n == 1.0)
        .await;

    // The controller's table now lists neither worker; the frontend has read it.
    common::eventually("an empty placement table", || {
        let mut conn = conn.clone();
        async move { table_workers(&mut conn).await == Some(Vec::new()) }
    })
    .await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 0.0)
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    session_is_reachable(&mut on_full, &full).await;
    session_is_reachable(&mut on_draining, &draining).await;
}
