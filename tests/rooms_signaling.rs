//! Rooms in signaling (#15, contract items 1, 2 and the announce half of 11): who may join
//! which room, what a participant sees and reaches (its room only; the lobby is as before),
//! `--max-room-participants` and its counter, on one process and on two replicas sharing
//! Redis.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::signaling::{drain_notifications, SignalingClient, SERVER};
use common::tcp_proxy::TcpProxy;
use common::websocket::WsClient;
use common::{http_get, metric_value, TestServer};
use remotemedia_webrtc::cluster::{connect, Keys, RedisRegistry};
use remotemedia_webrtc::config::Secret;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_client::WebRtcSignalingClient,
};
use remotemedia_webrtc::signaling::{
    issue_token, jsonrpc, PeerRecord, PeerRegistry, RegistryError,
};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tonic::Code;

const SECRET: &str = "a-test-secret-of-reasonable-length";
const REDIS: &str = "redis://127.0.0.1:6379";
/// Long enough for a notification that is coming to come (a Redis reader blocks 100 ms).
const QUIET: Duration = Duration::from_millis(500);
/// An SDP that passes signaling's structural check (peers forward it unparsed).
const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

/// Tests that read `remotemedia_limit_hits_total{limit="room_participants"}` (one process-wide
/// counter) run one at a time, so each sees exactly its own hits.
static ROOM_LIMIT_COUNTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn in_room(room: &str) -> HashMap<String, String> {
    HashMap::from([("room".into(), room.into())])
}

/// Announces `peer_id` in `room` (`None`: the lobby).
async fn join(url: &str, peer_id: &str, room: Option<&str>) -> (SignalingClient, Value) {
    SignalingClient::announce_with(url, peer_id, room.map(in_room).unwrap_or_default()).await
}

fn announce(peer_id: &str, metadata: HashMap<String, String>) -> Req {
    Req::Announce(pb::AnnounceRequest {
        peer_id: peer_id.into(),
        metadata,
        ..Default::default()
    })
}

/// The status that ends a stream whose announce is refused.
async fn refused(
    url: &str,
    token: Option<&str>,
    peer_id: &str,
    metadata: HashMap<String, String>,
) -> tonic::Status {
    let mut client = SignalingClient::open_with_token(url, token).await.unwrap();
    client.send(announce(peer_id, metadata)).await;
    client.expect_status().await
}

/// The ack's `other_peers`, sorted.
fn others(ack: &Value) -> Vec<String> {
    let mut ids: Vec<String> = ack["other_peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids(peers: &[pb::PeerInfo]) -> Vec<String> {
    let mut ids: Vec<String> = peers.iter().map(|p| p.peer_id.clone()).collect();
    ids.sort();
    ids
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    ids.sort();
    ids
}

/// `ListPeers` on the stream.
async fn list(client: &mut SignalingClient) -> Vec<String> {
    let id = client.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let (peers, _) = client
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.peers.clone()),
            _ => None,
        })
        .await;
    ids(&peers)
}

/// Who joined and who left, among the notifications that reach `client` until it is quiet.
async fn joins_and_leaves(client: &mut SignalingClient) -> (Vec<String>, Vec<String>) {
    let (mut joined, mut left) = (Vec::new(), Vec::new());
    for notification in drain_notifications(client, QUIET).await {
        match notification {
            Notification::PeerJoined(j) => joined.push(j.peer_id),
            Notification::PeerLeft(l) => left.push(l.peer_id),
            _ => {}
        }
    }
    (joined, left)
}

async fn joined(client: &mut SignalingClient) -> pb::PeerJoinedNotification {
    client
        .expect_notification(|n| match n {
            Notification::PeerJoined(j) => Some(j.clone()),
            _ => None,
        })
        .await
}

async fn left(client: &mut SignalingClient) -> String {
    client
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) => Some(l.peer_id.clone()),
            _ => None,
        })
        .await
}

/// The error code of an offer from `client` to `to`; `None` when it was forwarded.
async fn offer_code(client: &mut SignalingClient, to: &str) -> Option<Code> {
    let id = client.offer(to, SDP).await;
    let (outcome, _) = client
        .recv_until(|r| match &r.response {
            Some(Resp::Ack(_)) if r.request_id == id => Some(None),
            Some(Resp::Error(e)) if r.request_id == id => Some(Some(Code::from(e.code as i32))),
            _ => None,
        })
        .await;
    outcome
}

/// The error code of a request to `to` (answer or candidate); `None` when it was delivered.
async fn request_code(client: &mut SignalingClient, request: Req) -> Option<Code> {
    let id = client.send(request).await;
    let (outcome, _) = client
        .recv_until(|r| match &r.response {
            Some(Resp::Ack(_)) if r.request_id == id => Some(None),
            Some(Resp::Error(e)) if r.request_id == id => Some(Some(Code::from(e.code as i32))),
            _ => None,
        })
        .await;
    outcome
}

fn answer_to(to: &str) -> Req {
    Req::Answer(pb::AnswerRequest {
        to_peer_id: to.into(),
        sdp: SDP.into(),
        r#type: "answer".into(),
        offer_id: None,
    })
}

fn candidate_to(to: &str) -> Req {
    Req::IceCandidate(pb::IceCandidateRequest {
        to_peer_id: to.into(),
        candidate: "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host".into(),
        sdp_mid: "0".into(),
        sdp_mline_index: 0,
    })
}

/// Offers, answers, candidates and disconnects from `from` to `to` are NOT_FOUND.
async fn unreachable(from: &mut SignalingClient, to: &str) {
    assert_eq!(
        offer_code(from, to).await,
        Some(Code::NotFound),
        "offer to {to}"
    );
    assert_eq!(
        request_code(from, answer_to(to)).await,
        Some(Code::NotFound)
    );
    assert_eq!(
        request_code(from, candidate_to(to)).await,
        Some(Code::NotFound)
    );
    let disconnect = Req::Disconnect(pb::DisconnectRequest { peer_id: to.into() });
    assert_eq!(request_code(from, disconnect).await, Some(Code::NotFound));
}

/// No joins, no leaves.
fn nothing() -> (Vec<String>, Vec<String>) {
    (Vec::new(), Vec::new())
}

async fn room_limit_hits(server: &TestServer) -> f64 {
    let exposition = http_get(server.http, "/metrics").await;
    metric_value(
        &exposition,
        r#"remotemedia_limit_hits_total{limit="room_participants"}"#,
    )
    .unwrap()
}

async fn auth_refusals(server: &TestServer, reason: &str) -> f64 {
    let exposition = http_get(server.http, "/metrics").await;
    metric_value(
        &exposition,
        &format!(r#"remotemedia_auth_refusals_total{{reason="{reason}"}}"#),
    )
    .unwrap()
}

fn token(peer_id: &str, room: Option<&str>) -> String {
    issue_token(
        SECRET.as_bytes(),
        peer_id,
        Duration::from_secs(300),
        room.map(str::to_owned),
        None,
    )
    .unwrap()
}

async fn get_peers(url: &str, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut grpc = WebRtcSignalingClient::connect(url.to_owned())
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::GetPeersRequest {});
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let list = grpc.get_peers(request).await?.into_inner();
    assert_eq!(list.count as usize, list.peers.len());
    Ok(ids(&list.peers))
}

#[tokio::test]
async fn room_names_and_participant_ids_are_checked_at_announce() {
    let server = TestServer::start().await;
    let url = server.grpc_url();
    for bad in ["a b", "a.b", "a:b", "", &"r".repeat(65)] {
        let status = refused(&url, None, "alice", in_room(bad)).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "room {bad:?}: {status:?}"
        );
    }
    // A lobby peer id may have ':' and 128 characters; a participant's is an msid id.
    for id in ["a:b", &"p".repeat(65)] {
        let status = refused(&url, None, id, in_room("r1")).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "id {id:?}: {status:?}"
        );
        assert!(status.message().contains("room"), "{status:?}");
        join(&url, id, None).await;
    }
    let (_room, ack) = join(&url, "a.b_c-9", Some(&"r".repeat(64))).await;
    assert_eq!(ack["peer_id"], "a.b_c-9");

    // WebSocket: param `room` or metadata `room`; both must agree.
    let mut ws = WsClient::connect(server.http).await;
    for params in [
        json!({"peer_id": "w1", "room": "a b"}),
        json!({"peer_id": "w1", "metadata": {"room": "a/b"}}),
        json!({"peer_id": "w1", "room": "r1", "metadata": {"room": "r2"}}),
        json!({"peer_id": "w:1", "room": "r1"}),
    ] {
        let code = ws.error_code("peer.announce", params.clone()).await;
        assert_eq!(code, i64::from(jsonrpc::INVALID_PARAMS), "{params}");
    }
    // The socket stays: a good announce joins.
    ws.call("peer.announce", json!({"peer_id": "w1", "room": "r1"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_s_room_claim_is_the_only_room_it_joins() {
    let server = TestServer::start_with(|c| c.auth.auth_secret = Some(Secret::new(SECRET))).await;
    let url = server.grpc_url();
    let claimed = token("alice", Some("r1"));
    let wrong_before = auth_refusals(&server, "wrong_room").await;
    let status = refused(&url, Some(&claimed), "alice", in_room("r2")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("r1"), "{status:?}");
    assert_eq!(
        auth_refusals(&server, "wrong_room").await,
        wrong_before + 1.0
    );

    // Without metadata the claim's room is joined; repeating it is fine.
    let mut alice = SignalingClient::open_with_token(&url, Some(&claimed))
        .await
        .unwrap();
    let id = alice.send(announce("alice", HashMap::new())).await;
    alice.expect_ack(&id).await;
    let bob_token = token("bob", Some("r1"));
    let mut bob = SignalingClient::open_with_token(&url, Some(&bob_token))
        .await
        .unwrap();
    let id = bob.send(announce("bob", in_room("r1"))).await;
    assert_eq!(
        others(&bob.expect_ack(&id).await),
        sorted(&[SERVER, "alice"])
    );
    let seen = joined(&mut alice).await;
    assert_eq!(seen.peer_id, "bob");
    assert_eq!(seen.metadata.get("room").map(String::as_str), Some("r1"));

    // A token without a room claim may join any room.
    let plain = token("carol", None);
    let mut carol = SignalingClient::open_with_token(&url, Some(&plain))
        .await
        .unwrap();
    let id = carol.send(announce("carol", in_room("r1"))).await;
    carol.expect_ack(&id).await;

    // GetPeers: the room of the caller's claim, else the lobby.
    assert_eq!(
        get_peers(&url, Some(&claimed)).await.unwrap(),
        sorted(&[SERVER, "alice", "bob", "carol"])
    );
    let lobby_token = token("dave", None);
    let (_dave, _) = {
        let mut dave = SignalingClient::open_with_token(&url, Some(&lobby_token))
            .await
            .unwrap();
        let id = dave.send(announce("dave", HashMap::new())).await;
        let ack = dave.expect_ack(&id).await;
        (dave, ack)
    };
    assert_eq!(
        get_peers(&url, Some(&lobby_token)).await.unwrap(),
        sorted(&[SERVER, "dave"])
    );
    let unauthenticated = get_peers(&url, None).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn require_room_claim_keeps_tokens_without_one_in_the_lobby() {
    let server = TestServer::start_with(|c| {
        c.auth.auth_secret = Some(Secret::new(SECRET));
        c.auth.require_room_claim = true;
    })
    .await;
    let url = server.grpc_url();
    let plain = token("alice", None);
    let before = auth_refusals(&server, "room_claim_required").await;
    let status = refused(&url, Some(&plain), "alice", in_room("r1")).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        auth_refusals(&server, "room_claim_required").await,
        before + 1.0
    );
    // The lobby needs no claim; a claim joins its room.
    let mut alice = SignalingClient::open_with_token(&url, Some(&plain))
        .await
        .unwrap();
    let id = alice.send(announce("alice", HashMap::new())).await;
    alice.expect_ack(&id).await;
    let claimed = token("bob", Some("r1"));
    let mut bob = SignalingClient::open_with_token(&url, Some(&claimed))
        .await
        .unwrap();
    let id = bob.send(announce("bob", in_room("r1"))).await;
    assert_eq!(others(&bob.expect_ack(&id).await), sorted(&[SERVER]));

    // WebSocket: the same refusal, -32008.
    let mut ws = WsClient::connect_to(
        &format!(
            "ws://{}/ws?access_token={}",
            server.http,
            token("carol", None)
        ),
        None,
        None,
    )
    .await
    .unwrap();
    let code = ws
        .error_code("peer.announce", json!({"peer_id": "carol", "room": "r1"}))
        .await;
    assert_eq!(code, i64::from(jsonrpc::PERMISSION_DENIED));
}

#[tokio::test]
async fn a_participant_sees_and_reaches_only_its_room_and_the_lobby_is_unchanged() {
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let (mut lobby1, ack) = join(&url, "lobby1", None).await;
    assert_eq!(others(&ack), sorted(&[SERVER]));
    let (mut alice, ack) = join(&url, "alice", Some("r1")).await;
    assert_eq!(others(&ack), sorted(&[SERVER]), "the lobby is not listed");
    let (mut bob, ack) = join(&url, "bob", Some("r1")).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "alice"]));
    let (mut carol, ack) = join(&url, "carol", Some("r2")).await;
    assert_eq!(others(&ack), sorted(&[SERVER]));
    let (mut lobby2, ack) = join(&url, "lobby2", None).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "lobby1"]));
    assert_eq!(ack["peers_count"], 3);

    // PeerJoined stays in its room (with `room` in its metadata) or in the lobby.
    let seen = joined(&mut alice).await;
    assert_eq!(seen.peer_id, "bob");
    assert_eq!(seen.metadata.get("room").map(String::as_str), Some("r1"));
    assert_eq!(joins_and_leaves(&mut alice).await.0, Vec::<String>::new());
    assert_eq!(joins_and_leaves(&mut lobby1).await.0, ["lobby2"]);
    assert_eq!(joins_and_leaves(&mut carol).await.0, Vec::<String>::new());
    drain_notifications(&mut bob, QUIET).await;

    // ListPeers, and the lobby's list for a stream that has not announced.
    assert_eq!(list(&mut alice).await, sorted(&[SERVER, "alice", "bob"]));
    assert_eq!(list(&mut carol).await, sorted(&[SERVER, "carol"]));
    assert_eq!(
        list(&mut lobby1).await,
        sorted(&[SERVER, "lobby1", "lobby2"])
    );
    let mut anonymous = SignalingClient::open(&url).await;
    assert_eq!(
        list(&mut anonymous).await,
        sorted(&[SERVER, "lobby1", "lobby2"])
    );
    assert_eq!(
        get_peers(&url, None).await.unwrap(),
        sorted(&[SERVER, "lobby1", "lobby2"])
    );

    // P2P: within the room as before; another room's or the lobby's peer does not exist.
    assert_eq!(offer_code(&mut alice, "bob").await, None);
    let offer = bob
        .expect_notification(|n| match n {
            Notification::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(offer.from_peer_id, "alice");
    assert_eq!(request_code(&mut bob, answer_to("alice")).await, None);
    assert_eq!(request_code(&mut bob, candidate_to("alice")).await, None);
    unreachable(&mut alice, "carol").await;
    unreachable(&mut alice, "lobby1").await;
    unreachable(&mut carol, "bob").await;
    unreachable(&mut lobby1, "alice").await;
    // The lobby reaches the lobby as before.
    assert_eq!(offer_code(&mut lobby1, "lobby2").await, None);
    for other in [&mut carol, &mut lobby1] {
        let offers = drain_notifications(other, QUIET).await;
        assert!(
            !offers.iter().any(|n| matches!(n, Notification::Offer(_))),
            "nothing crossed: {offers:?}"
        );
    }

    // A WebSocket participant of r1: scoped alike.
    let mut ws = WsClient::connect(server.http).await;
    let result = ws
        .call("peer.announce", json!({"peer_id": "wendy", "room": "r1"}))
        .await
        .unwrap();
    assert_eq!(others(&result), sorted(&[SERVER, "alice", "bob"]));
    let listed = ws.call("peer.list", json!({})).await.unwrap();
    let mut listed: Vec<&str> = listed["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, sorted(&[SERVER, "alice", "bob", "wendy"]));
    let code = ws
        .error_code("peer.offer", json!({"to": "carol", "sdp": SDP}))
        .await;
    assert_eq!(code, i64::from(jsonrpc::PEER_NOT_FOUND));
    assert_eq!(joined(&mut alice).await.peer_id, "wendy");

    // PeerLeft stays in its room.
    bob.leave().await;
    assert_eq!(left(&mut alice).await, "bob");
    let bob_left = ws.expect_notification("peer.left").await;
    assert_eq!(bob_left["peer_id"], "bob");
    for other in [&mut carol, &mut lobby1, &mut lobby2] {
        assert_eq!(joins_and_leaves(other).await, nothing());
    }
    lobby2.leave().await;
    assert_eq!(joins_and_leaves(&mut lobby1).await.1, ["lobby2"]);
    assert_eq!(joins_and_leaves(&mut alice).await.1, Vec::<String>::new());
}

#[tokio::test]
async fn a_full_room_refuses_the_next_participant_naming_the_room() {
    let _counter = ROOM_LIMIT_COUNTER.lock().await;
    let server = TestServer::start_with(|c| {
        c.limits.max_room_participants = 2;
        c.limits.resume_grace = Duration::from_secs(30);
    })
    .await;
    let url = server.grpc_url();
    let proxy = TcpProxy::start(server.grpc).await;
    let before = room_limit_hits(&server).await;
    let (mut alice, _) = join(&url, "alice", Some("standup")).await;
    let (_bob, ack) = join(&proxy.url(), "bob", Some("standup")).await;
    let resume_token = ack["resume_token"].as_str().unwrap().to_owned();

    let status = refused(&url, None, "carol", in_room("standup")).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("standup"), "{status:?}");
    assert_eq!(room_limit_hits(&server).await, before + 1.0);
    let mut ws = WsClient::connect(server.http).await;
    let failure = ws
        .call(
            "peer.announce",
            json!({"peer_id": "carol", "room": "standup"}),
        )
        .await
        .unwrap_err();
    assert_eq!(failure.0, i64::from(jsonrpc::SESSION_LIMIT));
    assert!(failure.1.contains("standup"), "{failure:?}");
    assert_eq!(room_limit_hits(&server).await, before + 2.0);
    // Other rooms and the lobby are not limited by it.
    join(&url, "carol", Some("retro")).await;
    join(&url, "dave", None).await;
    drain_notifications(&mut alice, QUIET).await;

    // Bob's stream breaks: he keeps his place, resumes into it, and is taken over in it,
    // never counted twice.
    proxy.cut();
    let metadata = HashMap::from([
        ("room".to_owned(), "standup".to_owned()),
        ("resume_token".to_owned(), resume_token.clone()),
    ]);
    let (_bob, ack) = announce_once_detached(&proxy.url(), "bob", metadata).await;
    assert_eq!(
        ack["resume_token"],
        resume_token.as_str(),
        "resumed, not new"
    );
    proxy.cut();
    let (mut bob, ack) = announce_once_detached(&url, "bob", in_room("standup")).await;
    assert_ne!(ack["resume_token"], resume_token.as_str(), "taken over");
    assert_eq!(others(&ack), sorted(&[SERVER, "alice"]));
    assert_eq!(room_limit_hits(&server).await, before + 2.0);
    let status = refused(&url, None, "erin", in_room("standup")).await;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "still two participants"
    );

    // A leave frees the place.
    alice.leave().await;
    assert_eq!(left(&mut bob).await, "alice");
    let (_erin, ack) = join(&url, "erin", Some("standup")).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "bob"]));
    assert_eq!(room_limit_hits(&server).await, before + 3.0);
}

/// Announces `peer_id` as soon as its broken stream has been noticed (until then the id is
/// live: ALREADY_EXISTS).
async fn announce_once_detached(
    url: &str,
    peer_id: &str,
    metadata: HashMap<String, String>,
) -> (SignalingClient, Value) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let mut client = SignalingClient::open(url).await;
        let id = client.send(announce(peer_id, metadata.clone())).await;
        match client.next().await {
            Ok(Some(pb::SignalingResponse {
                request_id,
                response: Some(Resp::Ack(ack)),
            })) if request_id == id => return (client, serde_json::from_str(&ack.data).unwrap()),
            Err(status) if status.code() == Code::AlreadyExists => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{peer_id} stayed live"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("announce of {peer_id}: {other:?}"),
        }
    }
}

/// A key prefix of this test alone on the shared Redis.
fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rm-rooms-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn replica(prefix: &str, max_room_participants: usize) -> TestServer {
    TestServer::start_with(|c| {
        c.redis_url = Some(REDIS.into());
        c.redis_prefix = prefix.into();
        c.limits.max_room_participants = max_room_participants;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_scope_and_fill_up_across_two_replicas_sharing_redis() {
    let _counter = ROOM_LIMIT_COUNTER.lock().await;
    let prefix = prefix();
    let one = replica(&prefix, 2).await;
    let two = replica(&prefix, 2).await;
    let (url1, url2) = (one.grpc_url(), two.grpc_url());
    let before = room_limit_hits(&one).await;

    let (mut lobby1, _) = join(&url1, "lobby1", None).await;
    let (mut alice, _) = join(&url1, "alice", Some("r1")).await;
    let (mut carol, _) = join(&url2, "carol", Some("r2")).await;
    let (mut bob, ack) = join(&url2, "bob", Some("r1")).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "alice"]));
    let (mut lobby2, ack) = join(&url2, "lobby2", None).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "lobby1"]));

    assert_eq!(joined(&mut alice).await.peer_id, "bob");
    assert_eq!(joined(&mut lobby1).await.peer_id, "lobby2");
    assert_eq!(joins_and_leaves(&mut alice).await, nothing());
    assert_eq!(joins_and_leaves(&mut lobby1).await, nothing());
    assert_eq!(joins_and_leaves(&mut carol).await, nothing());
    assert_eq!(list(&mut bob).await, sorted(&[SERVER, "alice", "bob"]));
    assert_eq!(
        list(&mut lobby2).await,
        sorted(&[SERVER, "lobby1", "lobby2"])
    );
    assert_eq!(
        get_peers(&url2, None).await.unwrap(),
        sorted(&[SERVER, "lobby1", "lobby2"])
    );

    // The cap counts both replicas' participants.
    let status = refused(&url1, None, "dave", in_room("r1")).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("r1"), "{status:?}");
    assert_eq!(room_limit_hits(&one).await, before + 1.0);

    // P2P across replicas within the room; nothing across rooms.
    assert_eq!(offer_code(&mut bob, "alice").await, None);
    let offer = alice
        .expect_notification(|n| match n {
            Notification::Offer(o) => Some(o.from_peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(offer, "bob");
    assert_eq!(offer_code(&mut carol, "alice").await, Some(Code::NotFound));
    assert_eq!(offer_code(&mut lobby2, "bob").await, Some(Code::NotFound));
    assert_eq!(offer_code(&mut bob, "lobby1").await, Some(Code::NotFound));

    bob.leave().await;
    assert_eq!(left(&mut alice).await, "bob");
    assert_eq!(joins_and_leaves(&mut lobby1).await, nothing());
    assert_eq!(joins_and_leaves(&mut carol).await, nothing());
    let (_dave, ack) = join(&url1, "dave", Some("r1")).await;
    assert_eq!(others(&ack), sorted(&[SERVER, "alice"]));
}

fn record(peer_id: &str, room: Option<&str>, connection: &str) -> PeerRecord {
    PeerRecord {
        peer_id: peer_id.into(),
        capabilities: pb::PeerCapabilities::default(),
        metadata: room.map(in_room).unwrap_or_default(),
        connected_at: 1,
        resume_token: format!("token-{peer_id}"),
        connection_id: connection.into(),
        cursor: None,
        detached_until_ms: None,
    }
}

fn record_ids(records: Vec<PeerRecord>) -> Vec<String> {
    records.into_iter().map(|r| r.peer_id).collect()
}

/// The Redis registry's room index: a place per participant, kept through its grace, its
/// resume and a takeover in the same room, needed anew for another room, freed when the
/// grace ends.
#[tokio::test]
async fn the_redis_registry_counts_each_participant_once() {
    let (_, redis) = connect(REDIS, None).await.unwrap();
    let stop = CancellationToken::new();
    let registry = RedisRegistry::new(redis, Keys::new(prefix()), stop.clone());
    const CAP: usize = 2;
    let grace = Duration::from_secs(30);
    registry
        .register(record("a", Some("r1"), "c1"), CAP)
        .await
        .unwrap();
    registry
        .register(record("b", Some("r1"), "c1"), CAP)
        .await
        .unwrap();
    registry
        .register(record("c", Some("r2"), "c1"), CAP)
        .await
        .unwrap();
    registry
        .register(record("d", Some("r2"), "c1"), CAP)
        .await
        .unwrap();
    registry
        .register(record("lobby", None, "c1"), CAP)
        .await
        .unwrap();
    let full = registry.register(record("e", Some("r1"), "c1"), CAP).await;
    assert!(
        matches!(&full, Err(RegistryError::RoomFull { room, max: CAP }) if room == "r1"),
        "{full:?}"
    );
    assert_eq!(record_ids(registry.list_room(Some("r1")).await), ["a", "b"]);
    assert_eq!(record_ids(registry.list_room(None).await), ["lobby"]);
    assert_eq!(registry.peer_count().await, 5);

    // Detached, resumed, detached again and taken over in its room: one place throughout.
    assert!(registry.detach("b", "c1", None, grace).await);
    assert!(registry
        .register(record("e", Some("r1"), "c1"), CAP)
        .await
        .is_err());
    assert!(registry
        .resume("b", "token-b", "c2")
        .await
        .unwrap()
        .is_some());
    assert!(registry.detach("b", "c2", None, grace).await);
    let old = registry
        .take_over(record("b", Some("r1"), "c3"), CAP)
        .await
        .unwrap();
    assert_eq!(old.unwrap().connection_id, "c2");
    assert!(registry
        .register(record("e", Some("r1"), "c1"), CAP)
        .await
        .is_err());
    assert_eq!(record_ids(registry.list_room(Some("r1")).await), ["a", "b"]);

    // Into another, full room: refused, the old registration left as it was.
    assert!(registry.detach("b", "c3", None, grace).await);
    let moved = registry.take_over(record("b", Some("r2"), "c4"), CAP).await;
    assert!(
        matches!(moved, Err(RegistryError::RoomFull { .. })),
        "{moved:?}"
    );
    assert_eq!(registry.get("b").await.unwrap().connection_id, "c3");
    // Into the lobby: its place in r1 is freed.
    registry
        .take_over(record("b", None, "c5"), CAP)
        .await
        .unwrap();
    assert_eq!(record_ids(registry.list_room(None).await), ["b", "lobby"]);
    registry
        .register(record("e", Some("r1"), "c1"), CAP)
        .await
        .unwrap();

    // A grace that ends frees the place too.
    assert!(registry.detach("e", "c1", None, Duration::ZERO).await);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(record_ids(registry.sweep(Duration::ZERO).await), ["e"]);
    registry
        .register(record("f", Some("r1"), "c1"), CAP)
        .await
        .unwrap();
    // A leave as well.
    registry.unregister("a").await;
    registry
        .register(record("g", Some("r1"), "c1"), CAP)
        .await
        .unwrap();
    assert_eq!(record_ids(registry.list_room(Some("r1")).await), ["f", "g"]);
    stop.cancel();
}

#[tokio::test]
async fn the_flags_default_to_16_and_require_room_claim_needs_an_auth_secret() {
    use clap::Parser;
    use remotemedia_webrtc::config::Config;
    let config = Config::parse_from(["webrtc_server", "--require-room-claim"]);
    assert!(config.auth.require_room_claim);
    assert_eq!(config.limits.max_room_participants, 16);
    let mut config = Config::local_test();
    config.auth.require_room_claim = true;
    let Err(err) = remotemedia_webrtc::server::Server::bind(&config).await else {
        panic!("--require-room-claim without --auth-secret must not start");
    };
    assert!(err.to_string().contains("--require-room-claim"), "{err}");
    config.limits.max_room_participants = 0;
    config.auth.require_room_claim = false;
    let Err(err) = remotemedia_webrtc::server::Server::bind(&config).await else {
        panic!("--max-room-participants 0 must not start");
    };
    assert!(err.to_string().contains("--max-room-participants"), "{err}");
}
