//! What the original's clients do before they announce, and what they parse: `ListPeers`
//! is answered and `Disconnect` acknowledged (and ignored) before the announce, on gRPC and
//! WebSocket alike; only offers, answers and candidates need the announce first. The virtual
//! peer's `capabilities.extensions` is valid JSON (`"{}"`), as the original sent.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::signaling::{drain_notifications, SignalingClient, SERVER};
use common::websocket::WsClient;
use common::TestServer;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, SignalingRequest,
};
use serde_json::{json, Value};
use tonic::Code;

/// Sends `ListPeers` and returns the list answered to it.
async fn list_peers(client: &mut SignalingClient) -> pb::PeerListResponse {
    let id = client.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let (list, _) = client
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.clone()),
            Some(Resp::Error(err)) if r.request_id == id => panic!("ListPeers failed: {err:?}"),
            _ => None,
        })
        .await;
    list
}

fn ids(list: &pb::PeerListResponse) -> Vec<&str> {
    list.peers.iter().map(|p| p.peer_id.as_str()).collect()
}

/// The virtual peer's `extensions`, checked to be the JSON object `{}`.
fn assert_server_extensions_are_json(peers: &[pb::PeerInfo]) {
    let server = peers.iter().find(|p| p.peer_id == SERVER).unwrap();
    let extensions = &server.capabilities.as_ref().unwrap().extensions;
    assert_eq!(extensions, "{}");
    let parsed: Value = serde_json::from_str(extensions).expect("extensions are JSON");
    assert_eq!(parsed, json!({}));
}

#[tokio::test]
async fn before_its_announce_a_grpc_stream_lists_peers_and_may_disconnect() {
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let (mut bob, _) = SignalingClient::announce(&url, "bob").await;
    let mut alice = SignalingClient::open(&url).await;

    let lobby = list_peers(&mut alice).await;
    assert_eq!(ids(&lobby), [SERVER, "bob"]);
    assert_eq!(lobby.count, 2);
    assert_server_extensions_are_json(&lobby.peers);

    // Acknowledged under its request id, and ignored: bob hears nothing of it.
    let disconnect = alice
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: "bob".into(),
        }))
        .await;
    assert_eq!(alice.expect_ack(&disconnect).await["peer_id"], "bob");
    let server_disconnect = alice
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: SERVER.into(),
        }))
        .await;
    alice.expect_ack(&server_disconnect).await;
    // A request with nothing in it is answered as after the announce; the stream stays.
    alice
        .send_raw(SignalingRequest {
            request_id: "empty".into(),
            request: None,
        })
        .await;
    assert_eq!(
        alice.expect_error("empty").await.code,
        Code::InvalidArgument as u32
    );
    let bob_saw = drain_notifications(&mut bob, Duration::from_millis(300)).await;
    assert!(
        !bob_saw
            .iter()
            .any(|n| matches!(n, Notification::PeerDisconnected(_))),
        "{bob_saw:?}"
    );

    // The same stream then announces and is served as any other.
    let (mut alice, ack) = alice
        .announce_as("alice", std::collections::HashMap::new())
        .await;
    assert_eq!(ack["peer_id"], "alice");
    let joined = bob
        .expect_notification(|n| match n {
            Notification::PeerJoined(j) => Some(j.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined, "alice");
    assert_eq!(ids(&list_peers(&mut alice).await), [SERVER, "alice", "bob"]);
}

#[tokio::test]
async fn offers_answers_and_candidates_before_the_announce_end_the_stream() {
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let requests = [
        Req::Offer(pb::OfferRequest {
            to_peer_id: SERVER.into(),
            sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".into(),
            r#type: "offer".into(),
        }),
        Req::Answer(pb::AnswerRequest {
            to_peer_id: "bob".into(),
            sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".into(),
            r#type: "answer".into(),
            offer_id: None,
        }),
        Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: SERVER.into(),
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            ..Default::default()
        }),
    ];
    for request in requests {
        let mut client = SignalingClient::open(&url).await;
        // Even after an answered list.
        list_peers(&mut client).await;
        client.send(request.clone()).await;
        assert_eq!(
            client.expect_status().await.code(),
            Code::FailedPrecondition,
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn the_server_peer_extensions_are_json_in_every_list() {
    let server = TestServer::start().await;
    let (mut alice, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    assert_server_extensions_are_json(&list_peers(&mut alice).await.peers);
    let unary = alice
        .grpc
        .get_peers(pb::GetPeersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_server_extensions_are_json(&unary.peers);

    let (mut ws, _) = WsClient::announce(server.http, "browser").await;
    let listed = ws.call("peer.list", json!({})).await.unwrap();
    let server_peer = listed["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == SERVER)
        .unwrap()
        .clone();
    assert_eq!(server_peer["capabilities"]["extensions"], "{}");
}

#[tokio::test]
async fn before_its_announce_a_websocket_lists_peers_and_may_disconnect() {
    let server = TestServer::start().await;
    let (mut bob, _) = WsClient::announce(server.http, "bob").await;
    let mut browser = WsClient::connect(server.http).await;

    let lobby = browser.call("peer.list", json!({})).await.unwrap();
    assert_eq!(lobby["count"], 2);
    let listed: Vec<&str> = lobby["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [SERVER, "bob"]);
    assert_eq!(lobby["peers"][0]["capabilities"]["extensions"], "{}");
    assert_eq!(
        browser
            .call("peer.disconnect", json!({"to": "bob"}))
            .await
            .unwrap(),
        json!({})
    );
    let info = browser.call("server.info", json!({})).await.unwrap();
    assert_eq!(info["connected_peers"], 1);
    for (method, params) in [
        ("peer.offer", json!({"to": SERVER, "sdp": "v=0"})),
        ("peer.answer", json!({"to": "bob", "sdp": "v=0"})),
        (
            "peer.ice_candidate",
            json!({"to": SERVER, "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}),
        ),
    ] {
        assert_eq!(browser.error_code(method, params).await, -32006, "{method}");
    }

    // The socket then announces; bob heard of nothing before that.
    browser
        .call("peer.announce", json!({"peer_id": "browser"}))
        .await
        .unwrap();
    let first = bob.recv().await;
    assert_eq!(first["method"], "peer.joined", "{first}");
    assert_eq!(first["params"]["peer_id"], "browser");
}
