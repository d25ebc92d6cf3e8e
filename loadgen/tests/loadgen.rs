//! The load generator against an in-process server: three peers connect, their audio comes
//! back, and the report has every field the capacity sweep reads. Figures are not asserted
//! (they come from benchmarks); counts are.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use remotemedia_loadgen::{churn, run, run_rooms, Options, Target};
use remotemedia_webrtc::config::Config;
use remotemedia_webrtc::peer::SessionManager;
use remotemedia_webrtc::server::Server;
use remotemedia_webrtc::signaling::SessionHost;

/// The server under load, in this test's runtime (the server crate's tests/common has a
/// fuller one; this crate needs only the address, the sessions and a stop).
struct TestServer {
    grpc: SocketAddr,
    sessions: Arc<SessionManager>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), remotemedia_webrtc::Error>>,
}

impl TestServer {
    async fn start() -> Self {
        let server = Server::bind(&Config::local_test()).await.unwrap();
        let grpc = server.grpc_address().unwrap();
        let sessions = server.sessions().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            sessions,
            stop,
            task,
        }
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

fn options(server: &TestServer, extra: &[&str]) -> Options {
    let url = server.grpc_url();
    let pid = std::process::id().to_string();
    let mut args = vec![
        "webrtc_loadgen",
        "--server",
        &url,
        "--server-pid",
        &pid,
        "--ramp-per-s",
        "50",
    ];
    args.extend_from_slice(extra);
    Options::try_parse_from(args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_connect_get_their_audio_back_and_the_report_has_every_field() {
    init_tracing();
    let server = TestServer::start().await;
    let options = options(&server, &["--peers", "3", "--duration-s", "2", "--json"]);
    let target = Target::connect_to(&options).await.unwrap();
    let report = run(&options, &target).await.unwrap();
    let line = serde_json::to_string(&report).unwrap();
    println!("{line}");

    assert_eq!(report.peers_connected, 3, "{line}");
    assert!(report.failures.is_empty(), "{line}");
    assert_eq!(report.peers.len(), 3);
    for peer in &report.peers {
        assert!(peer.sent >= 50, "{line}");
        assert!(peer.received >= 50, "{line}");
    }
    // Loopback on an idle path loses nothing; a packet cut at a window edge is allowed.
    assert!(report.loss_pct < 5.0, "{line}");
    assert!(report.latency_ms.markers > 0, "no marker came back: {line}");

    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in [
        "peers_connected",
        "answer_ms",
        "connected_ms",
        "loss_pct",
        "latency_ms",
        "server_cpu_pct",
        "server_rss_mb",
        "loadgen_cpu_pct",
        "valid",
    ] {
        assert!(!json[field].is_null(), "{field} missing in {line}");
    }
    for field in ["answer_ms", "connected_ms"] {
        for p in ["p50", "p95", "p99"] {
            assert!(json[field][p].is_number(), "{field}.{p} missing in {line}");
        }
    }
    for p in ["p50", "p99"] {
        assert!(json["latency_ms"][p].is_number(), "latency_ms.{p} missing");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_each_get_audio_back_and_leave() {
    init_tracing();
    let server = TestServer::start().await;
    let options = options(&server, &["--churn", "3", "--json"]);
    let target = Target::connect_to(&options).await.unwrap();
    let report = churn(&options, &target, 3).await.unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.failed, 0);
    assert_eq!(report.with_audio, 3);
    assert!(report.rss_after_last_mb.is_some());
    // Every churn peer left (their sessions end as their streams close).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.sessions.session_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "churn peers left sessions behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_of_three_each_get_every_other_participants_stream() {
    init_tracing();
    let server = TestServer::start().await;
    let options = options(
        &server,
        &[
            "--peers",
            "6",
            "--rooms-of",
            "3",
            "--duration-s",
            "2",
            "--json",
        ],
    );
    let target = Target::connect_to(&options).await.unwrap();
    let report = run_rooms(&options, &target, 3).await.unwrap();
    let line = serde_json::to_string(&report).unwrap();
    println!("{line}");

    assert_eq!((report.rooms, report.peers_connected), (2, 6), "{line}");
    assert!(report.failures.is_empty(), "{line}");
    // R·P·(P−1) forwarded streams, each delivering stamped packets.
    assert_eq!((report.streams, report.streams_live), (12, 12), "{line}");
    // Two seconds of 50 packets per second on each of the 12 streams.
    assert!(report.packets_expected >= 12 * 90, "{line}");
    assert!(report.packets_received > 0, "{line}");
    assert!(report.latency_ms.p99 > 0.0, "{line}");
    server.stop().await;
}
