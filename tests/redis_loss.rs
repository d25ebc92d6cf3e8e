//! A worker whose Redis goes away keeps its calls and recovers. The call's media is
//! client ↔ worker UDP: while Redis is down (longer than a worker lives without a heartbeat)
//! the tone keeps coming back; when Redis returns on the same port (empty), the worker's
//! heartbeat is back in it, a new call is placed on the worker, and the old one still echoes.
//! (tests/cluster.rs restarts Redis at once and checks placement only.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::{metric_value, WAIT};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};

const HEARTBEAT_ERRORS: &str = "remotemedia_cluster_redis_errors_total{operation=\"heartbeat\"}";

async fn sessions_on(worker: &Node) -> f64 {
    metric_value(
        &worker.metrics().await,
        "remotemedia_worker_sessions_active",
    )
    .unwrap_or(-1.0)
}

async fn tone_comes_back(peer: &ClientPeer, frequency: f32, when: &str) {
    let got = peer.tone_round_trip(frequency).await;
    assert!(
        (got - frequency).abs() <= 5.0,
        "{when}: sent {frequency} Hz, got {got} Hz"
    );
}

/// Announces `id` and offers to the server; whether an answer came (any refusal: false).
async fn answered(frontend: &Node, id: &str) -> bool {
    let mut signaling = SignalingClient::open(&frontend.grpc_url()).await;
    let announce = signaling
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: id.into(),
            ..Default::default()
        }))
        .await;
    let Ok(Some(first)) = signaling.next().await else {
        return false;
    };
    if first.request_id != announce || !matches!(first.response, Some(Resp::Ack(_))) {
        return false;
    }
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    loop {
        let Ok(Some(response)) = signaling.next().await else {
            return false;
        };
        match response.response {
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::Answer(_)),
            })) => return true,
            Some(Resp::Error(_)) if response.request_id == offer => return false,
            _ => {}
        }
    }
}

/// Whether `key` exists in the Redis at `url`.
async fn exists(url: &str, key: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut connection)
        .await
        .is_ok_and(|n| n == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_its_calls_through_a_redis_outage_and_is_placed_again() {
    common::init_tracing();
    let mut redis = RedisProcess::start();
    let url = redis.url();
    let worker = Node::worker("worker-a", &url, &[]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;

    let (_signaling, peer) = {
        let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "caller").await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        (signaling, peer)
    };
    tone_comes_back(&peer, 440.0, "before the outage").await;
    let errors_before = worker
        .wait_metric(HEARTBEAT_ERRORS, WAIT, |n| n >= 0.0)
        .await;

    redis.kill();
    let down = Instant::now();
    tone_comes_back(&peer, 440.0, "right after Redis went away").await;
    // Three failed heartbeats (2 s apart): longer than a worker lives without one (5 s).
    worker
        .wait_metric(HEARTBEAT_ERRORS, Duration::from_secs(30), |n| {
            n >= errors_before + 3.0
        })
        .await;
    println!("heartbeats failing for {:?}", down.elapsed());
    tone_comes_back(&peer, 550.0, "with Redis gone for several heartbeats").await;
    assert_eq!(
        sessions_on(&worker).await,
        1.0,
        "the worker closed the call"
    );

    // Redis comes back empty on the same port: the worker's next heartbeat is in it.
    redis.restart();
    let restarted = Instant::now();
    let heartbeat_key = format!("rm:worker:{}", worker.name);
    let deadline = Instant::now() + WAIT;
    while !exists(&url, &heartbeat_key).await {
        assert!(
            Instant::now() < deadline,
            "no heartbeat in the restarted Redis; worker log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("heartbeat back {:?} after the restart", restarted.elapsed());

    // The worker is placed again: a new call is answered by it and echoes.
    let mut attempt = 0;
    loop {
        attempt += 1;
        if answered(&frontend, &format!("probe-{attempt}")).await {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "no session placed after the restart; frontend log:\n{}",
            frontend.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "after").await;
    let mut fresh = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut fresh).await;
    tone_comes_back(&fresh, 660.0, "a new call after the restart").await;

    // And the call from before the outage is still carried.
    tone_comes_back(&peer, 440.0, "the old call after the restart").await;
    assert!(peer.is_connected());
    for node in [&worker, &frontend] {
        assert!(
            !node.log_text().contains("panicked"),
            "{} panicked:\n{}",
            node.name,
            node.log_text()
        );
    }
}
