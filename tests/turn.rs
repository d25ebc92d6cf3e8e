//! `--turn-secret`: a client that may only use relay candidates reaches the server through a
//! real coturn (started here on loopback) with the credentials from its announce ack.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::free_udp_port;
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::config::Secret;
use webrtc::ice_transport::ice_server::RTCIceServer;

const TURN_SECRET: &str = "turn-rest-secret";

/// coturn with the TURN REST API secret, on 127.0.0.1 only, relaying to loopback peers.
struct Coturn {
    child: Child,
    port: u16,
}

impl Coturn {
    fn start() -> Self {
        let port = free_udp_port();
        // A relay range of its own, away from the ephemeral ports the peers take.
        let min = 40_000 + (std::process::id() % 200) as u16 * 100;
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint"])
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .args(["--listening-port", &port.to_string()])
            .args([
                "--min-port",
                &min.to_string(),
                "--max-port",
                &(min + 99).to_string(),
            ])
            .args(["--use-auth-secret", "--static-auth-secret", TURN_SECRET])
            .args(["--realm", "remotemedia.test", "--allow-loopback-peers"])
            .args(["--log-file", "stdout", "--simple-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn) starts");
        Self { child, port }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_client_reaches_the_server_through_turn() {
    common::init_tracing();
    let coturn = Coturn::start();
    let url = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = TestServer::start_with(|config| {
        config.turn.turn_secret = Some(Secret::new(TURN_SECRET));
        config.turn.turn_uris = vec![url.clone()];
    })
    .await;
    // coturn binds in a moment; the client's allocation retries meanwhile anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (mut signaling, ack) = SignalingClient::announce(&server.grpc_url(), "behind-nat").await;
    let servers = ack["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{ack}");
    let username = servers[0]["username"].as_str().unwrap();
    let (expiry, peer) = username.split_once(':').unwrap();
    assert_eq!(peer, "behind-nat");
    assert!(expiry.parse::<u64>().unwrap() > 0);
    let ice = RTCIceServer {
        urls: vec![servers[0]["urls"][0].as_str().unwrap().to_owned()],
        username: username.to_owned(),
        credential: servers[0]["credential"].as_str().unwrap().to_owned(),
    };
    assert_eq!(ice.urls, [url]);

    let mut peer = ClientPeer::new_relay_only(ClientOptions::default(), vec![ice]).await;
    connect_to_server(&mut signaling, &mut peer).await;
    // Relay-only: every path the client has goes through coturn.
    let stats = peer.pc.get_stats().await;
    let relayed = stats.reports.values().any(|report| {
        matches!(report, webrtc::stats::StatsReportType::LocalCandidate(c)
            if c.candidate_type == webrtc::ice::candidate::CandidateType::Relay)
    });
    assert!(relayed, "the client has a relay candidate");
    let frequency = peer.tone_round_trip(440.0).await;
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "came back at {frequency} Hz"
    );
    peer.close().await;
}

#[tokio::test]
async fn without_a_turn_secret_the_ack_has_no_ice_servers_and_a_secret_needs_urls() {
    let server = TestServer::start().await;
    let (_signaling, ack) = SignalingClient::announce(&server.grpc_url(), "plain").await;
    assert_eq!(ack["ice_servers"], serde_json::json!([]));

    let mut config = remotemedia_webrtc::config::Config::local_test();
    config.turn.turn_secret = Some(Secret::new(TURN_SECRET));
    let err = remotemedia_webrtc::server::Server::bind(&config)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--turn-uris"), "{err}");
}
