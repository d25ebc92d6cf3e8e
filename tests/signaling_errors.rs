//! Every error path answers with the status of DESIGN.md §2 and the server keeps serving.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::signaling::{SignalingClient, SERVER};
use common::TestServer;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_request::Request as Req, signaling_response::Response as Resp,
    SignalingRequest,
};
use tonic::Code;

async fn list_peers_works(client: &mut SignalingClient) -> usize {
    let id = client.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let (count, _) = client
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.count as usize),
            _ => None,
        })
        .await;
    count
}

fn announce(peer_id: &str) -> Req {
    Req::Announce(pb::AnnounceRequest {
        peer_id: peer_id.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_request_without_a_type_is_invalid_argument_and_the_stream_stays() {
    let server = TestServer::start().await;
    let (mut client, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    client
        .send_raw(SignalingRequest {
            request_id: "empty".into(),
            request: None,
        })
        .await;
    let error = client.expect_error("empty").await;
    assert_eq!(error.code, Code::InvalidArgument as u32);
    assert_eq!(list_peers_works(&mut client).await, 2);
}

#[tokio::test]
async fn a_duplicate_announce_is_already_exists_and_the_first_stream_lives_on() {
    let server = TestServer::start().await;
    let (mut first, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    let mut second = SignalingClient::open(&server.grpc_url()).await;
    second.send(announce("alice")).await;
    assert_eq!(second.expect_status().await.code(), Code::AlreadyExists);
    assert_eq!(list_peers_works(&mut first).await, 2);
}

#[tokio::test]
async fn the_server_peer_id_is_reserved_and_malformed_ids_are_invalid() {
    let server = TestServer::start().await;
    let mut reserved = SignalingClient::open(&server.grpc_url()).await;
    reserved.send(announce(SERVER)).await;
    assert_eq!(reserved.expect_status().await.code(), Code::AlreadyExists);
    for bad in ["", "has space", "slash/y", &"x".repeat(129)] {
        let mut client = SignalingClient::open(&server.grpc_url()).await;
        client.send(announce(bad)).await;
        assert_eq!(
            client.expect_status().await.code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn an_offer_before_the_announce_is_failed_precondition() {
    let server = TestServer::start().await;
    let mut client = SignalingClient::open(&server.grpc_url()).await;
    client.offer(SERVER, "v=0").await;
    assert_eq!(
        client.expect_status().await.code(),
        Code::FailedPrecondition
    );
    // The server still serves others.
    let (mut other, _) = SignalingClient::announce(&server.grpc_url(), "bob").await;
    assert_eq!(list_peers_works(&mut other).await, 2);
}

#[tokio::test]
async fn an_unknown_target_is_not_found() {
    let server = TestServer::start().await;
    let (mut client, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    let offer = client
        .offer("nobody", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
        .await;
    assert_eq!(
        client.expect_error(&offer).await.code,
        Code::NotFound as u32
    );
    let ice = client
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: "nobody".into(),
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(client.expect_error(&ice).await.code, Code::NotFound as u32);
    assert_eq!(list_peers_works(&mut client).await, 2);
}

#[tokio::test]
async fn garbage_sdp_is_invalid_argument_and_the_stream_stays_usable() {
    let server = TestServer::start().await;
    let (mut client, _) = SignalingClient::announce(&server.grpc_url(), "alice").await;
    for sdp in [
        "hello".to_owned(),
        "v=0\r\nm=garbage\r\n".to_owned(),
        format!("v=0\r\nm=audio 9 RTP/AVP 0\r\n{}", "a=x\r\n".repeat(20_000)),
    ] {
        let id = client.offer(SERVER, sdp).await;
        let error = client.expect_error(&id).await;
        assert_eq!(error.code, Code::InvalidArgument as u32, "{error:?}");
    }
    let bad_candidate = client
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: SERVER.into(),
            candidate: "not a candidate".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        client.expect_error(&bad_candidate).await.code,
        Code::InvalidArgument as u32
    );
    assert_eq!(list_peers_works(&mut client).await, 2);
    let health = client.health().await;
    assert_eq!(common::signaling::health_metrics(&health)["sessions"], 0);
}

#[tokio::test]
async fn more_peers_than_max_peers_is_resource_exhausted() {
    let server = TestServer::start_with(|c| c.limits.max_peers = 2).await;
    let (mut a, _) = SignalingClient::announce(&server.grpc_url(), "a").await;
    let (_b, _) = SignalingClient::announce(&server.grpc_url(), "b").await;
    let mut c = SignalingClient::open(&server.grpc_url()).await;
    c.send(announce("c")).await;
    assert_eq!(c.expect_status().await.code(), Code::ResourceExhausted);
    assert_eq!(list_peers_works(&mut a).await, 3);
    // A place frees up when a peer leaves.
    a.close();
    common::eventually("a's place to free up", || async {
        let mut d = SignalingClient::open(&server.grpc_url()).await;
        d.send(announce("d")).await;
        matches!(d.next().await, Ok(Some(r)) if matches!(r.response, Some(Resp::Ack(_))))
    })
    .await;
}
