//! `--public-port`: a worker behind a NodePort advertises the mapped port. Here a UDP relay
//! listening on the "public" port forwards to the port the server bound, as kube-proxy does;
//! the client only learns the public port from the server's candidates (in the answer and
//! trickled), so audio that comes
//! back has flowed through the advertised port.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::free_udp_port;
use common::relay::{Impairment, Relay};
use common::signaling::SignalingClient;
use common::TestServer;

const NO_IMPAIRMENT: Impairment = Impairment {
    drop: 0.0,
    delay: 0.0,
    max_delay: Duration::ZERO,
    seed: 1,
};

/// The transport port of a candidate line (`candidate:f 1 udp p IP PORT typ ...`).
fn port_of(candidate: &str) -> u16 {
    candidate.split(' ').nth(5).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_flows_through_the_advertised_public_port() {
    common::init_tracing();
    let bound = free_udp_port();
    let public = free_udp_port();
    assert_ne!(bound, public);
    let server = TestServer::start_with(|config| {
        config.media.udp_port = bound;
        config.media.public_port = Some(public);
    })
    .await;
    let server_udp: SocketAddr = ([127, 0, 0, 1], bound).into();
    let relay = Relay::start_on(([127, 0, 0, 1], public).into(), server_udp, NO_IMPAIRMENT).await;

    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "nodeport-client").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;

    // The answer's candidates and those that trickled before connected.
    assert!(
        !report.answer_candidates.is_empty(),
        "the answer carries no candidate"
    );
    for candidate in report
        .answer_candidates
        .iter()
        .chain(&report.server_candidates)
    {
        assert_eq!(
            port_of(candidate),
            public,
            "a server candidate names another port than --public-port: {candidate}"
        );
    }
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "sent 440 Hz, got {got} Hz");
    // Everything went through the relay: the client's RTP in, the server's media out.
    assert!(relay.stats.client_rtp.load(Ordering::Relaxed) > 0);
    assert!(!relay.stats.to_client_rtp.lock().is_empty());
    peer.close().await;
    server.stop().await;
}

#[tokio::test]
async fn public_port_without_a_shared_udp_port_is_refused_at_start() {
    let mut config = remotemedia_webrtc::config::Config::local_test();
    config.media.udp_port = 0;
    config.media.public_port = Some(31000);
    let err = match remotemedia_webrtc::server::Server::bind(&config).await {
        Ok(_) => panic!("--public-port without --udp-port must not start"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("--public-port needs --udp-port"), "{err}");
}
