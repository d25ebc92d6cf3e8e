//! One worker id, one process: a second live worker with the same id refuses to start (two
//! workers on one host without `--worker-id` would both take the host name), while a worker
//! restarted after a crash takes its id over at once and its old sessions end.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{
    free_tcp_port, free_udp_port, one_at_a_time, try_http_get, Node, RedisProcess,
};
use common::signaling::{SignalingClient, SERVER};
use common::WAIT;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};

async fn heartbeat_address(url: &str, id: &str) -> Option<String> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let json: Option<String> = redis::cmd("GET")
        .arg(format!("rm:worker:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&json?).unwrap();
    record["address"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_worker_with_the_same_id_refuses_to_start() {
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let first = Node::worker("same-host", &url, &[]).await;
    let first_address = first.grpc.to_string();
    assert_eq!(
        heartbeat_address(&url, "same-host").await.as_deref(),
        Some(first_address.as_str())
    );

    let started = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["--mode", "worker", "--redis-url", &url])
        .args(["--worker-id", "same-host"])
        .args(["--grpc-address", &format!("127.0.0.1:{}", free_tcp_port())])
        .args(["--http-address", &format!("127.0.0.1:{}", free_tcp_port())])
        .args(["--udp-port", &free_udp_port().to_string()])
        .args(["--ice-ips", "127.0.0.1"])
        .env_remove("REMOTEMEDIA_REDIS_URL")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = second.kill();
            panic!("the second worker with the same id kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("\"same-host\" is in use by another live worker")
            && stderr.contains(&first_address)
            && stderr.contains("--worker-id"),
        "{stderr}"
    );
    println!("the duplicate refused after {:?}", started.elapsed());
    // The first keeps its id: its record is untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        heartbeat_address(&url, "same-host").await.as_deref(),
        Some(first_address.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_takes_its_id_over_and_its_old_calls_end() {
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut crashed = Node::worker("restarting", &url, &[]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    assert_eq!(crashed.sessions_active().await, 1.0);

    // Killed and restarted at once (its old heartbeat still fresh), on another address.
    crashed.kill9();
    let killed = Instant::now();
    let restarted = Node::worker("restarting", &url, &[]).await;
    println!(
        "the restarted worker serves {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        heartbeat_address(&url, "restarting").await.as_deref(),
        Some(restarted.grpc.to_string().as_str())
    );

    // The old call's client is told its server session ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = tokio::select! {
            r = signaling.next() => r.unwrap().unwrap(),
            _ = tokio::time::sleep_until(deadline) => panic!("the old call's client was not told"),
        };
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::PeerDisconnected(d)),
        })) = response.response
        {
            assert_eq!(d.peer_id, SERVER);
            break;
        }
    }
    println!("old call ended {:?} after the kill", killed.elapsed());
    peer.close().await;

    // A new call lands on the restarted process and carries media (once the frontend has
    // re-read the heartbeats: it refreshes every second).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut again = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut again).await;
    let got = again.tone_round_trip(523.0).await;
    assert!((got - 523.0).abs() <= 5.0, "got {got} Hz");
    assert_eq!(restarted.sessions_active().await, 1.0);
}

/// A worker process with a fixed API port (a container restarted in its pod keeps its IP and
/// port), its output in `log`.
fn spawn_worker(url: &str, api_port: u16, log: &std::path::Path) -> (std::process::Child, u16) {
    let http = free_tcp_port();
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["--mode", "worker", "--redis-url", url])
        .args(["--worker-id", "pod-0"])
        .args(["--grpc-address", &format!("127.0.0.1:{api_port}")])
        .args(["--http-address", &format!("127.0.0.1:{http}")])
        .args(["--udp-port", &free_udp_port().to_string()])
        .args(["--ice-ips", "127.0.0.1"])
        .env_remove("REMOTEMEDIA_REDIS_URL")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    (child, http)
}

async fn wait_healthy(http: u16, log: &std::path::Path) {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let deadline = Instant::now() + WAIT;
    while try_http_get(address, "/healthz").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the worker did not come up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_restarted_at_its_own_address_takes_its_id_over_at_once() {
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let api = free_tcp_port();
    let (mut first, http) = spawn_worker(&url, api, &dir.path().join("first.log"));
    wait_healthy(http, &dir.path().join("first.log")).await;
    let _ = first.kill();
    let _ = first.wait();

    // Same id, same address, the old heartbeat still fresh: no wait for it to go stale.
    let log = dir.path().join("second.log");
    let started = Instant::now();
    let (mut second, http) = spawn_worker(&url, api, &log);
    wait_healthy(http, &log).await;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = second.kill();
    let _ = second.wait();
    println!("restarted in place, serving after {took:?}");
    assert!(
        text.contains("restarted at the same address: taking the worker id over"),
        "{text}"
    );
    assert!(
        text.contains("took the worker id over from its previous process"),
        "{text}"
    );
}
