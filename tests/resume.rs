//! Resume (DESIGN.md §2): a client whose signaling stream breaks keeps its registration, its
//! server session and its notifications for the grace, and takes them back with its resume
//! token; a clean close leaves at once; a grace that runs out ends everything.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{
    drain_notifications, expect_numbered_candidates, send_numbered_candidates, SignalingClient,
};
use common::tcp_proxy::TcpProxy;
use common::TestServer;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
};
use remotemedia_webrtc::signaling::SessionHost;
use tonic::Code;

fn with_token(token: &str) -> HashMap<String, String> {
    HashMap::from([("resume_token".to_owned(), token.to_owned())])
}

fn peer_left(notifications: &[Notification], peer_id: &str) -> bool {
    notifications
        .iter()
        .any(|n| matches!(n, Notification::PeerLeft(l) if l.peer_id == peer_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_resumes_with_its_token_and_misses_nothing() {
    common::init_tracing();
    // Without takeover, so that the id is taken during the grace (tests/id_takeover.rs has
    // the default, where a stream without the token takes it over).
    let server = TestServer::start_with(|c| c.limits.id_takeover = false).await;
    let proxy = TcpProxy::start(server.grpc).await;
    let (mut alice, ack) = SignalingClient::announce(&proxy.url(), "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32, "an unguessable token: {ack}");
    let (mut bob, _) = SignalingClient::announce(&server.grpc_url(), "bob").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice, &mut peer).await;
    drain_notifications(&mut bob, Duration::from_millis(200)).await;

    proxy.cut();
    // While alice is away: her call goes on, and what is sent to her is kept.
    peer.expect_tone_back(500.0).await;
    send_numbered_candidates(&mut bob, "alice", 100).await;

    // Without the token the id is taken.
    let mut impostor = SignalingClient::open(&server.grpc_url()).await;
    impostor
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "alice".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(impostor.expect_status().await.code(), Code::AlreadyExists);
    let mut wrong = SignalingClient::open(&server.grpc_url()).await;
    wrong
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "alice".into(),
            metadata: with_token("not-the-token"),
            ..Default::default()
        }))
        .await;
    assert_eq!(wrong.expect_status().await.code(), Code::AlreadyExists);

    let started = Instant::now();
    let (mut alice, resumed) =
        SignalingClient::announce_with(&server.grpc_url(), "alice", with_token(&token)).await;
    assert_eq!(resumed["resume_token"], token.as_str());
    expect_numbered_candidates(&mut alice, "bob", 100).await;
    println!(
        "resumed and received 100 kept notifications in {:?}",
        started.elapsed()
    );
    peer.expect_tone_back(700.0).await;
    assert_eq!(
        server.sessions.session_count(),
        1,
        "the server session survived"
    );

    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(300)).await;
    assert!(
        !peer_left(&bob_saw, "alice"),
        "no PeerLeft during a resume: {bob_saw:?}"
    );

    // A clean close still leaves at once, grace or not.
    alice.close();
    let left = bob
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) => Some(l.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "alice");
    common::eventually("the server session to close", || {
        let n = server.sessions.session_count();
        async move { n == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_grace_runs_out_the_session_closes_and_peer_left_goes_out() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.resume_grace = Duration::from_secs(1)).await;
    let proxy = TcpProxy::start(server.grpc).await;
    let (mut alice, ack) = SignalingClient::announce(&proxy.url(), "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    let (mut bob, _) = SignalingClient::announce(&server.grpc_url(), "bob").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice, &mut peer).await;

    let cut = Instant::now();
    proxy.cut();
    let left = bob
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) => Some(l.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(left, "alice");
    let after = cut.elapsed();
    println!("PeerLeft {after:?} after the stream broke (grace 1 s)");
    assert!(
        after >= Duration::from_millis(900),
        "PeerLeft before the grace ended: {after:?}"
    );
    common::eventually("the server session to close", || {
        let n = server.sessions.session_count();
        async move { n == 0 }
    })
    .await;

    // The old token now simply registers afresh.
    let (_again, fresh) =
        SignalingClient::announce_with(&server.grpc_url(), "alice", with_token(&token)).await;
    assert_ne!(fresh["resume_token"], token.as_str());
}
