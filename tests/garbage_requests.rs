//! 500 garbage gRPC requests of every kind and 250 garbage WebSocket frames, each answered
//! with its code; a bystander's stream is untouched, and the server then serves a normal
//! call with audio and stops cleanly.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::websocket::WsClient;
use common::{TestServer, WAIT};
use futures::SinkExt;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_request::Request as Req, signaling_response::Response as Resp,
    SignalingRequest,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

const GARBAGE_SDP: &str = "v=0\r\nm=audio 9 nonsense\r\na=ice-ufrag:\r\n";

fn announce(peer_id: &str) -> Req {
    Req::Announce(pb::AnnounceRequest {
        peer_id: peer_id.into(),
        ..Default::default()
    })
}

fn candidate(to: &str, candidate: String) -> Req {
    Req::IceCandidate(pb::IceCandidateRequest {
        to_peer_id: to.into(),
        candidate,
        sdp_mid: "0".into(),
        sdp_mline_index: 0,
    })
}

/// The 40 requests of each of ten kinds sent on one announced stream, with the code each
/// must get in its ErrorResponse.
fn stream_garbage(i: usize) -> (Option<Req>, Code) {
    let unknown = format!("nobody-{i}");
    match i % 10 {
        0 => (Some(announce("again")), Code::FailedPrecondition),
        1 => (None, Code::InvalidArgument),
        2 => (
            Some(Req::Offer(pb::OfferRequest {
                to_peer_id: unknown,
                sdp: GARBAGE_SDP.into(),
                r#type: "offer".into(),
            })),
            Code::NotFound,
        ),
        3 => (
            Some(Req::Answer(pb::AnswerRequest {
                to_peer_id: unknown,
                sdp: GARBAGE_SDP.into(),
                r#type: "answer".into(),
                offer_id: None,
            })),
            Code::NotFound,
        ),
        4 => (
            Some(candidate(
                &unknown,
                "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            )),
            Code::NotFound,
        ),
        5 => (
            Some(Req::Disconnect(pb::DisconnectRequest { peer_id: unknown })),
            Code::NotFound,
        ),
        6 => (
            Some(Req::Offer(pb::OfferRequest {
                to_peer_id: SERVER.into(),
                sdp: format!("not an SDP {i} \u{0}\u{fffd}"),
                r#type: "offer".into(),
            })),
            Code::InvalidArgument,
        ),
        7 => (
            Some(candidate(SERVER, format!("garbage {i} \u{1b}[31m"))),
            Code::InvalidArgument,
        ),
        8 => (
            Some(Req::Offer(pb::OfferRequest {
                to_peer_id: SERVER.into(),
                sdp: format!("v=0\r\nm=audio 9\r\n{}", "a=x\r\n".repeat(14_000)),
                r#type: "offer".into(),
            })),
            Code::InvalidArgument,
        ),
        _ => (
            Some(candidate(
                SERVER,
                format!("candidate:{}", "9".repeat(2_000)),
            )),
            Code::InvalidArgument,
        ),
    }
}

/// A `Signal` call through raw HTTP/2 whose body is `body` as is; the `grpc-status` and
/// `grpc-message` the server ends it with.
async fn raw_signal(grpc: SocketAddr, body: &'static [u8]) -> (i32, String) {
    let tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{grpc}/remotemedia.v1.webrtc.WebRtcSignaling/Signal"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream.send_data(Bytes::from_static(body), true).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    let status = |headers: &http::HeaderMap| {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Some((code, message))
    };
    if let Some(found) = status(response.headers()) {
        return found;
    }
    let mut body = response.into_body();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = tokio::time::timeout(WAIT, body.trailers())
        .await
        .unwrap()
        .unwrap()
        .expect("trailers");
    status(&trailers).expect("a grpc-status trailer")
}

/// The index in [`RAW_BODIES`] of the one whose length prefix is over the hard limit.
const OVER_THE_LIMIT: usize = 3;

/// Bodies that are not a gRPC-framed `SignalingRequest`.
const RAW_BODIES: [&[u8]; 5] = [
    // The prefix promises 10 bytes; 3 come, then the stream ends.
    &[0, 0, 0, 0, 10, 1, 2, 3],
    // Well framed, but not protobuf (a length-delimited field longer than the message).
    &[0, 0, 0, 0, 6, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    // The compressed flag without a grpc-encoding.
    &[1, 0, 0, 0, 3, 1, 2, 3],
    // A 2 GiB message.
    &[0, 0x7f, 0xff, 0xff, 0xff, 0],
    // Not even a prefix.
    b"GET / HTTP/1.1\r\n\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_of_every_kind_is_refused_and_the_server_serves_on() {
    common::init_tracing();
    // Every request here must reach the parser, so the signaling rate limit (tested on its
    // own in tests/limits.rs) is off.
    let server = TestServer::start_with(|config| config.limits.signaling_rate = 0).await;
    let url = server.grpc_url();
    let (mut bystander, _) = SignalingClient::announce(&url, "bystander").await;
    let mut sent = 0;

    // 400 on one announced stream, which stays open through all of them.
    let (mut garbage, _) = SignalingClient::announce(&url, "garbage").await;
    for i in 0..400 {
        let (request, code) = stream_garbage(i);
        let id = format!("g{i}");
        garbage
            .send_raw(SignalingRequest {
                request_id: id.clone(),
                request,
            })
            .await;
        let error = garbage.expect_error(&id).await;
        assert_eq!(error.code, code as u32, "request {i}: {error:?}");
        sent += 1;
    }

    // 100 that end their stream: not an announce first, bad peer ids, oversized messages,
    // and raw HTTP/2 bodies that are not protobuf.
    for i in 0..20 {
        let mut client = SignalingClient::open(&url).await;
        client.offer(SERVER, GARBAGE_SDP).await;
        assert_eq!(
            client.expect_status().await.code(),
            Code::FailedPrecondition
        );
        let mut client = SignalingClient::open(&url).await;
        client.send(announce(&format!("bad id {i}/\u{0}"))).await;
        assert_eq!(client.expect_status().await.code(), Code::InvalidArgument);
        sent += 2;
    }
    let mut oversized = SignalingClient::open(&url).await;
    oversized
        .send(Req::Offer(pb::OfferRequest {
            to_peer_id: SERVER.into(),
            sdp: "x".repeat(5 * 1024 * 1024),
            r#type: "offer".into(),
        }))
        .await;
    // Far above --max-message-bytes a request is not even read: the stream ends with
    // RESOURCE_EXHAUSTED, gRPC's code for a message over the receiver's limit.
    let status = oversized.expect_status().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    sent += 1;
    for i in 0..59 {
        let which = i % RAW_BODIES.len();
        let (code, message) = raw_signal(server.grpc, RAW_BODIES[which]).await;
        // The 2 GiB prefix is over the hard message limit: not read, RESOURCE_EXHAUSTED.
        let expected = if which == OVER_THE_LIMIT {
            Code::ResourceExhausted
        } else {
            Code::InvalidArgument
        };
        assert_eq!(code, expected as i32, "raw body {which}: {message}");
        sent += 1;
    }
    assert_eq!(sent, 500);

    // 250 WebSocket frames: before an announce, then on an announced socket.
    let mut fresh = WsClient::connect(server.http).await;
    for i in 0..50 {
        let code = fresh
            .error_code("peer.offer", json!({"to": SERVER, "sdp": GARBAGE_SDP}))
            .await;
        assert_eq!(code, -32006, "frame {i}");
    }
    let (mut ws, _) = WsClient::announce(server.http, "ws-garbage").await;
    for i in 0..200 {
        let (code, what) = match i % 8 {
            0 => {
                ws.send_text(format!("{{not json {i}")).await;
                (ws.response(json!(null)).await.unwrap_err().0, "invalid JSON")
            }
            1 => {
                ws.socket
                    .send(Message::Binary(vec![0xff, 0, i as u8].into()))
                    .await
                    .unwrap();
                (ws.response(json!(null)).await.unwrap_err().0, "binary")
            }
            2 => (ws.error_code("peer.fly", json!({})).await, "unknown method"),
            3 => (
                ws.error_code("peer.offer", json!({"to": 5, "sdp": ["v=0"]}))
                    .await,
                "wrong types",
            ),
            4 => (
                ws.error_code("peer.offer", json!({"to": "nobody", "sdp": GARBAGE_SDP}))
                    .await,
                "unknown peer",
            ),
            5 => (
                ws.error_code("peer.offer", json!({"to": SERVER, "sdp": "no sdp"}))
                    .await,
                "garbage SDP",
            ),
            6 => (
                ws.error_code(
                    "peer.ice_candidate",
                    json!({"to": SERVER, "candidate": "junk", "sdp_mid": "0", "sdp_mline_index": 0}),
                )
                .await,
                "garbage candidate",
            ),
            _ => {
                ws.send_text(json!([1, "two", {"three": 3}]).to_string()).await;
                (ws.response(json!(null)).await.unwrap_err().0, "not an object")
            }
        };
        let expected = match i % 8 {
            0 => -32700,
            1 | 7 => -32600,
            2 => -32601,
            3 => -32602,
            4 => -32000,
            5 => -32002,
            _ => -32004,
        };
        assert_eq!(code, expected, "frame {i}: {what}");
    }

    // The garbage streams still answer; the bystander saw no error and its stream lives.
    let id = garbage.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    garbage
        .recv_until(|r| (r.request_id == id).then_some(()))
        .await;
    assert!(ws.call("peer.list", json!({})).await.is_ok());
    let id = bystander
        .send(Req::ListPeers(pb::ListPeersRequest {}))
        .await;
    let (count, skipped) = bystander
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.count),
            _ => None,
        })
        .await;
    assert!(
        skipped
            .iter()
            .all(|r| matches!(r.response, Some(Resp::Notification(_)))),
        "the bystander got something else than notifications: {skipped:?}"
    );
    assert!(count >= 4, "peers listed: {count}");

    // A normal call with audio.
    let (mut signaling, _) = SignalingClient::announce(&url, "caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "after the garbage: {got} Hz");
    peer.close().await;
    server.stop().await;
}
