//! The answer carries the server's candidates and `a=end-of-candidates`: a client that never
//! adds a trickled candidate (the original's browser path only logs them) still connects and
//! gets its tone back, over gRPC, over `/ws`, through a `--mode websocket` server, on a shared
//! `--udp-port` and behind a `--public-port` mapping.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::client::{answer_candidates, connect_to_server, ClientOptions, ClientPeer};
use common::cluster::free_udp_port;
use common::relay::{Impairment, Relay};
use common::signaling::SignalingClient;
use common::websocket::WsClient;
use common::TestServer;
use remotemedia_webrtc::config::{Config, Mode};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use remotemedia_webrtc::signaling::SessionHost;
use remotemedia_webrtc::websocket_mode::WebSocketPeer;
use serde_json::json;

const SERVER: &str = "remotemedia-server";

/// The transport port of a candidate line (`candidate:f 1 udp p IP PORT typ ...`).
fn port_of(candidate: &str) -> u16 {
    candidate.split(' ').nth(5).unwrap().parse().unwrap()
}

/// The answer's candidates: at least one, all component 1 (rtcp-mux), all in the first media
/// section, followed there by `a=end-of-candidates`; no `a=ice-lite`. Returns them.
fn assert_answer_carries_candidates(sdp: &str) -> Vec<String> {
    let sections: Vec<&str> = sdp.split("\r\nm=").skip(1).collect();
    assert!(!sections.is_empty(), "no media section in {sdp}");
    let first = answer_candidates(&format!("m={}", sections[0]));
    assert!(!first.is_empty(), "no a=candidate in the answer: {sdp}");
    for candidate in &first {
        assert_eq!(
            candidate.split(' ').nth(1),
            Some("1"),
            "a component-2 candidate under rtcp-mux: {candidate}"
        );
    }
    assert!(
        sections[0]
            .lines()
            .any(|line| line == "a=end-of-candidates"),
        "no a=end-of-candidates in the first media section: {sdp}"
    );
    assert!(
        !sdp.contains("a=ice-lite"),
        "a=ice-lite makes clients nominate late: {sdp}"
    );
    assert_eq!(
        answer_candidates(sdp).len(),
        first.len(),
        "candidates outside the first media section: {sdp}"
    );
    first
}

async fn tone_comes_back(peer: &ClientPeer) {
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "sent 440 Hz, got {got} Hz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_client_ignoring_trickled_candidates_connects_and_trickle_still_follows() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "no-trickle").await;
    let mut peer = ClientPeer::new(ClientOptions::default())
        .await
        .ignoring_trickled_candidates();
    let report = connect_to_server(&mut signaling, &mut peer).await;
    let in_answer = assert_answer_carries_candidates(&report.answer_sdp);
    tone_comes_back(&peer).await;

    // The same candidates still trickle, for clients that expect them.
    let mut trickled = report.server_candidates.clone();
    while trickled.len() < in_answer.len() {
        let response = signaling.recv().await;
        if let Some(Resp::Notification(pb::SignalingNotification {
            notification: Some(Notification::IceCandidate(c)),
        })) = response.response
        {
            if !c.candidate.is_empty() {
                trickled.push(c.candidate);
            }
        }
    }
    trickled.sort();
    let mut in_answer = in_answer;
    in_answer.sort();
    assert_eq!(
        trickled, in_answer,
        "trickled and answered candidates differ"
    );
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_on_a_shared_udp_port_the_answer_names_that_port() {
    common::init_tracing();
    let bound = free_udp_port();
    let server = TestServer::start_with(|config| config.media.udp_port = bound).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "shared-port").await;
    let mut peer = ClientPeer::new(ClientOptions::default())
        .await
        .ignoring_trickled_candidates();
    let report = connect_to_server(&mut signaling, &mut peer).await;
    for candidate in assert_answer_carries_candidates(&report.answer_sdp) {
        assert_eq!(port_of(&candidate), bound, "{candidate}");
    }
    tone_comes_back(&peer).await;
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_behind_a_public_port_the_answer_names_the_public_port() {
    common::init_tracing();
    let (bound, public) = (free_udp_port(), free_udp_port());
    assert_ne!(bound, public);
    let server = TestServer::start_with(|config| {
        config.media.udp_port = bound;
        config.media.public_port = Some(public);
    })
    .await;
    let server_udp: SocketAddr = ([127, 0, 0, 1], bound).into();
    let no_impairment = Impairment {
        drop: 0.0,
        delay: 0.0,
        max_delay: Duration::ZERO,
        seed: 1,
    };
    let relay = Relay::start_on(([127, 0, 0, 1], public).into(), server_udp, no_impairment).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "nodeport").await;
    let mut peer = ClientPeer::new(ClientOptions::default())
        .await
        .ignoring_trickled_candidates();
    let report = connect_to_server(&mut signaling, &mut peer).await;
    for candidate in assert_answer_carries_candidates(&report.answer_sdp) {
        assert_eq!(port_of(&candidate), public, "{candidate}");
    }
    tone_comes_back(&peer).await;
    // Only the answer told the client where to send: through the relay on the public port.
    assert!(relay.stats.client_rtp.load(Ordering::Relaxed) > 0);
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_the_offer_result_carries_the_candidates() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut ws, _) = WsClient::announce(server.http, "ws-no-trickle").await;
    let mut peer = ClientPeer::new(ClientOptions::default())
        .await
        .ignoring_trickled_candidates();
    let offer = peer.offer().await;
    let result = ws
        .call("peer.offer", json!({"to": SERVER, "sdp": offer}))
        .await
        .unwrap();
    let sdp = result["sdp"].as_str().unwrap().to_owned();
    assert_answer_carries_candidates(&sdp);
    peer.accept_answer(sdp).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !peer.is_connected() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("did not connect from the answer's candidates"),
            Some(candidate) = peer.candidates.recv() => {
                let init = candidate.unwrap_or_default();
                ws.call("peer.ice_candidate", json!({
                    "to": SERVER, "candidate": init.candidate,
                    "sdp_mid": init.sdp_mid, "sdp_mline_index": init.sdp_mline_index,
                })).await.unwrap();
            }
            _ = peer.state.changed() => {}
        }
    }
    tone_comes_back(&peer).await;
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_the_relayed_answer_carries_the_candidates() {
    common::init_tracing();
    const B: &str = "remotemedia-b";
    let signaling = TestServer::start().await;
    let mut config = Config::local_test();
    config.mode = Mode::Websocket;
    config.signaling_url = Some(format!("ws://{}/ws", signaling.http));
    config.peer_id = Some(B.into());
    let b = WebSocketPeer::bind(&config).await.unwrap();
    let b_sessions = b.sessions();
    let (stop_b, stopped) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn(b.run(async move {
        let _ = stopped.await;
    }));
    let (mut client, _) = SignalingClient::announce(&signaling.grpc_url(), "caller").await;
    let grpc = client.grpc.clone();
    common::eventually("B announced", || {
        let mut grpc = grpc.clone();
        async move {
            let peers = grpc.get_peers(pb::GetPeersRequest {}).await.unwrap();
            peers.into_inner().peers.iter().any(|p| p.peer_id == B)
        }
    })
    .await;

    let mut peer = ClientPeer::new(ClientOptions::default())
        .await
        .ignoring_trickled_candidates();
    client.offer(B, peer.offer().await).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !peer.is_connected() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("connecting to {B} timed out"),
            _ = peer.state.changed() => {}
            Some(candidate) = peer.candidates.recv() => { client.candidate(B, candidate).await; }
            response = client.next() => match response.unwrap().unwrap().response {
                Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Answer(a)) })) => {
                    assert_answer_carries_candidates(&a.sdp);
                    peer.accept_answer(a.sdp).await;
                }
                Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) => {
                    peer.add_remote_candidate(&c).await;
                }
                Some(Resp::Error(err)) => panic!("signaling error {err:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(b_sessions.session_count(), 1);
    tone_comes_back(&peer).await;
    peer.close().await;
    let _ = stop_b.send(());
    b_task.await.unwrap().unwrap();
    signaling.stop().await;
}
