//! Takeover (docs/signaling.md, "Signaling behaviour"): a client that comes back with its
//! fixed peer id after its stream broke, without the resume token, takes the id over: the old
//! registration ends (its server session closes, what was kept for it is dropped, the others
//! get `PeerLeft` then `PeerJoined`). Without `--auth-secret` only with `--id-takeover` (the
//! default); with it, a token for that id. A live stream's id is never taken.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::{drain_notifications, send_numbered_candidates, SignalingClient};
use common::tcp_proxy::TcpProxy;
use common::websocket::WsClient;
use common::{TestServer, WAIT};
use remotemedia_webrtc::config::Secret;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use remotemedia_webrtc::signaling::{issue_token, SessionHost};
use serde_json::json;
use tonic::Code;

const SECRET: &str = "a-test-secret-of-reasonable-length";

fn token(peer_id: &str) -> String {
    issue_token(
        SECRET.as_bytes(),
        peer_id,
        Duration::from_secs(300),
        None,
        None,
    )
    .unwrap()
}

fn announce(peer_id: &str, metadata: HashMap<String, String>) -> Req {
    Req::Announce(pb::AnnounceRequest {
        peer_id: peer_id.into(),
        metadata,
        ..Default::default()
    })
}

/// One announce of `peer_id` on a new stream: the stream and its ack, or the status that
/// ended it.
async fn try_announce(
    url: &str,
    bearer: Option<&str>,
    peer_id: &str,
    metadata: HashMap<String, String>,
) -> Result<(SignalingClient, serde_json::Value), tonic::Status> {
    let mut client = SignalingClient::open_with_token(url, bearer).await?;
    let id = client.send(announce(peer_id, metadata)).await;
    match client.next().await {
        Ok(Some(response)) => match response.response {
            Some(Resp::Ack(ack)) if response.request_id == id => {
                Ok((client, serde_json::from_str(&ack.data).unwrap()))
            }
            other => panic!("unexpected reply to an announce: {other:?}"),
        },
        Ok(None) => panic!("the stream ended without a status"),
        Err(status) => Err(status),
    }
}

/// Announces `peer_id` until it is no longer ALREADY_EXISTS: the server has seen the old
/// stream break (its detach is not instant).
async fn take_over(url: &str, bearer: Option<&str>, peer_id: &str) -> (SignalingClient, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        match try_announce(url, bearer, peer_id, HashMap::new()).await {
            Ok((client, ack)) => {
                return (client, ack["resume_token"].as_str().unwrap().to_owned());
            }
            Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "{peer_id} was never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `watcher` hears about `peer_id`, in order: "left" and "joined".
fn comings_and_goings(seen: &[Notification], peer_id: &str) -> Vec<&'static str> {
    seen.iter()
        .filter_map(|n| match n {
            Notification::PeerLeft(l) if l.peer_id == peer_id => Some("left"),
            Notification::PeerJoined(j) if j.peer_id == peer_id => Some("joined"),
            _ => None,
        })
        .collect()
}

/// A stream whose connection breaks: announced through a proxy the test cuts.
struct Breakable {
    proxy: TcpProxy,
    signaling: SignalingClient,
    resume_token: String,
}

impl Breakable {
    async fn announce(upstream: std::net::SocketAddr, bearer: Option<&str>, peer_id: &str) -> Self {
        let proxy = TcpProxy::start(upstream).await;
        let (signaling, ack) = try_announce(&proxy.url(), bearer, peer_id, HashMap::new())
            .await
            .unwrap();
        let resume_token = ack["resume_token"].as_str().unwrap().to_owned();
        Self {
            proxy,
            signaling,
            resume_token,
        }
    }
}

/// The whole takeover on one server: `alice` breaks mid-call, comes back without her token;
/// `bob` watches. With `bearer` the streams carry tokens for their ids.
async fn a_broken_peer_is_taken_over(server: &TestServer, bearer: impl Fn(&str) -> Option<String>) {
    let url = server.grpc_url();
    let mut alice = Breakable::announce(server.grpc, bearer("alice").as_deref(), "alice").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice.signaling, &mut peer).await;
    let (mut bob, _) = try_announce(&url, bearer("bob").as_deref(), "bob", HashMap::new())
        .await
        .unwrap();
    assert_eq!(server.sessions.session_count(), 1);

    alice.proxy.cut();
    // Kept for alice while her stream is broken: the new stream must not get them.
    send_numbered_candidates(&mut bob, "alice", 5).await;
    drain_notifications(&mut bob, Duration::from_millis(100)).await;

    let (mut again, token) = take_over(&url, bearer("alice").as_deref(), "alice").await;
    assert_ne!(
        token, alice.resume_token,
        "a new registration, not a resume"
    );
    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(500)).await;
    assert_eq!(
        comings_and_goings(&bob_saw, "alice"),
        ["left", "joined"],
        "as for a re-announce: {bob_saw:?}"
    );
    common::eventually("the old server session to close", || {
        let n = server.sessions.session_count();
        async move { n == 0 }
    })
    .await;
    let kept = drain_notifications(&mut again, Duration::from_millis(300)).await;
    assert!(
        !kept
            .iter()
            .any(|n| matches!(n, Notification::IceCandidate(c) if c.from_peer_id == "bob")),
        "what was kept for the old stream was dropped: {kept:?}"
    );

    // The old token is spent, and the new registration is live: its id is not taken again.
    let stale = try_announce(
        &url,
        bearer("alice").as_deref(),
        "alice",
        HashMap::from([("resume_token".to_owned(), alice.resume_token.clone())]),
    )
    .await;
    assert_eq!(stale.err().map(|s| s.code()), Some(Code::AlreadyExists));
    let twin = try_announce(&url, bearer("bob").as_deref(), "bob", HashMap::new()).await;
    assert_eq!(twin.err().map(|s| s.code()), Some(Code::AlreadyExists));

    // The taken-over id calls as any other.
    let mut fresh = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut again, &mut fresh).await;
    let got = fresh.tone_round_trip(600.0).await;
    assert!((got - 600.0).abs() <= 5.0, "sent 600 Hz, got {got} Hz");
    assert_eq!(server.sessions.session_count(), 1);
    peer.close().await;
    fresh.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_a_broken_peer_id_is_taken_over_by_default() {
    common::init_tracing();
    let server = TestServer::start().await;
    a_broken_peer_is_taken_over(&server, |_| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_token_for_the_id_takes_it_over_whatever_id_takeover_says() {
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.auth.auth_secret = Some(Secret::new(SECRET));
        c.limits.id_takeover = false;
    })
    .await;
    a_broken_peer_is_taken_over(&server, |id| Some(token(id))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_id_takeover_off_a_broken_peer_id_stays_taken_until_it_resumes() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.id_takeover = false).await;
    let url = server.grpc_url();
    let alice = Breakable::announce(server.grpc, None, "alice").await;
    let (mut bob, _) = SignalingClient::announce(&url, "bob").await;
    alice.proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let impostor = try_announce(&url, None, "alice", HashMap::new()).await;
        assert_eq!(impostor.err().map(|s| s.code()), Some(Code::AlreadyExists));
    }
    // It was detached all along: its token takes it back, and nobody saw it leave.
    let (_alice, resumed) = try_announce(
        &url,
        None,
        "alice",
        HashMap::from([("resume_token".to_owned(), alice.resume_token.clone())]),
    )
    .await
    .unwrap();
    assert_eq!(resumed["resume_token"], alice.resume_token.as_str());
    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(300)).await;
    assert!(
        comings_and_goings(&bob_saw, "alice").is_empty(),
        "{bob_saw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_breaks_is_taken_over_by_a_new_one() {
    let server = TestServer::start().await;
    let (ws, announced) = WsClient::announce(server.http, "browser").await;
    let old_token = announced["resume_token"].as_str().unwrap().to_owned();
    let (mut other, _) = WsClient::announce(server.http, "other").await;
    // The socket drops without a close frame (a tab's network goes away).
    drop(ws);
    let deadline = Instant::now() + WAIT;
    let (mut back, result) = loop {
        let mut back = WsClient::connect(server.http).await;
        match back
            .call("peer.announce", json!({"peer_id": "browser"}))
            .await
        {
            Ok(result) => break (back, result),
            Err((code, _)) => assert_eq!(code, -32001),
        }
        assert!(Instant::now() < deadline, "browser was never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(result["resume_token"], old_token.as_str());
    let left = other.expect_notification("peer.left").await;
    assert_eq!(left["peer_id"], "browser");
    let joined = other.expect_notification("peer.joined").await;
    assert_eq!(joined["peer_id"], "browser");
    // Live now: another socket cannot take it.
    let mut twin = WsClient::connect(server.http).await;
    assert_eq!(
        twin.error_code("peer.announce", json!({"peer_id": "browser"}))
            .await,
        -32001
    );
    back.call("peer.list", json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_id_is_never_taken_over() {
    common::init_tracing();
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let (mut alice, ack) = SignalingClient::announce(&url, "alice").await;
    let token = ack["resume_token"].as_str().unwrap().to_owned();
    for metadata in [
        HashMap::new(),
        HashMap::from([("resume_token".to_owned(), "not-the-token".to_owned())]),
        HashMap::from([("resume_token".to_owned(), token)]),
    ] {
        let twin = try_announce(&url, None, "alice", metadata).await;
        assert_eq!(twin.err().map(|s| s.code()), Some(Code::AlreadyExists));
    }
    // The first stream lives on.
    let id = alice.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let (count, _) = alice
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.count),
            _ => None,
        })
        .await;
    assert_eq!(count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_cluster_a_broken_peer_is_taken_over_on_another_frontend() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let worker = Node::worker("worker-a", &url, &[]).await;
    let frontends = [
        Node::start("frontend-1", "frontend", &url, &[]).await,
        Node::start("frontend-2", "frontend", &url, &[]).await,
    ];
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
            .await;
    }
    let mut alice = Breakable::announce(frontends[0].grpc, None, "alice").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut alice.signaling, &mut peer).await;
    let (mut bob, _) = SignalingClient::announce(&frontends[1].grpc_url(), "bob").await;
    worker
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 1.0)
        .await;

    alice.proxy.cut();
    send_numbered_candidates(&mut bob, "alice", 5).await;
    drain_notifications(&mut bob, Duration::from_millis(100)).await;
    // Back on the other frontend, without the token.
    let (mut again, token) = take_over(&frontends[1].grpc_url(), None, "alice").await;
    assert_ne!(token, alice.resume_token);
    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(500)).await;
    assert_eq!(
        comings_and_goings(&bob_saw, "alice"),
        ["left", "joined"],
        "{bob_saw:?}"
    );
    // The old session was closed on its worker.
    worker
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;
    let kept = drain_notifications(&mut again, Duration::from_millis(300)).await;
    assert!(
        !kept
            .iter()
            .any(|n| matches!(n, Notification::IceCandidate(c) if c.from_peer_id == "bob")),
        "what was kept for the old stream was dropped: {kept:?}"
    );
    // The old token is spent; a live id stays taken from either frontend.
    for frontend in &frontends {
        let stale = try_announce(
            &frontend.grpc_url(),
            None,
            "alice",
            HashMap::from([("resume_token".to_owned(), alice.resume_token.clone())]),
        )
        .await;
        assert_eq!(stale.err().map(|s| s.code()), Some(Code::AlreadyExists));
    }
    // The new registration calls as any other, through its new frontend.
    let mut fresh = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut again, &mut fresh).await;
    let got = fresh.tone_round_trip(600.0).await;
    assert!((got - 600.0).abs() <= 5.0, "sent 600 Hz, got {got} Hz");
    worker
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 1.0)
        .await;
}
