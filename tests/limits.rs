//! Signaling limits: each one hit against a real server, over gRPC and the WebSocket, with
//! the error a client gets, the `remotemedia_limit_hits_total` count it moves, and the same
//! stream working afterwards. (Its own test binary: the metrics are process-wide; tests that
//! move the same `limit` label hold [`RATE_LABEL`] so they do not run side by side.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;

use common::client::{ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::websocket::WsClient;
use common::{http_get, metric_value, TestServer};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_request::Request as Req, signaling_response::Response as Resp,
};
use remotemedia_webrtc::signaling::jsonrpc;
use serde_json::json;
use tonic::Code;

/// Held by the two tests that move `limit="requests_per_second"`: each counts exact deltas.
static RATE_LABEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `remotemedia_limit_hits_total{limit}` of the server now.
async fn hits(http: SocketAddr, limit: &str) -> f64 {
    let text = http_get(http, "/metrics").await;
    let sample = format!(r#"remotemedia_limit_hits_total{{limit="{limit}"}}"#);
    metric_value(&text, &sample).unwrap_or_else(|| panic!("{sample} is not exported"))
}

/// A structurally valid SDP of about `len` bytes.
fn sdp_of(len: usize) -> String {
    let mut sdp = String::from("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
    while sdp.len() < len {
        sdp.push_str("a=x-padding:0123456789abcdef0123456789abcdef\r\n");
    }
    sdp
}

fn candidate_line(port: u16) -> String {
    format!("candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")
}

async fn candidate(signaling: &mut SignalingClient, line: String) -> String {
    signaling
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: SERVER.into(),
            candidate: line,
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        }))
        .await
}

/// `list_peers` answers: the stream still works.
async fn still_works(signaling: &mut SignalingClient) {
    let id = signaling
        .send(Req::ListPeers(pb::ListPeersRequest {}))
        .await;
    let (found, _) = signaling
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.count),
            Some(Resp::Error(err)) if r.request_id == id => panic!("list failed: {err:?}"),
            _ => None,
        })
        .await;
    assert!(found >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_exported_at_zero_before_its_first_hit() {
    let server = TestServer::start().await;
    let text = http_get(server.http, "/metrics").await;
    for limit in [
        "sdp_bytes",
        "signaling_message_bytes",
        "datachannel_message_bytes",
        "requests_per_second",
        "ice_candidates",
        "sessions",
        "peers",
        "pipeline_queue",
    ] {
        let sample = format!(r#"remotemedia_limit_hits_total{{limit="{limit}"}}"#);
        assert!(metric_value(&text, &sample).is_some(), "{sample} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdp_over_max_sdp_bytes_is_refused_and_counted_and_the_stream_goes_on() {
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.max_sdp_bytes = 2048;
        c.limits.max_message_bytes = 8192;
    })
    .await;
    let before = hits(server.http, "sdp_bytes").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "big-sdp").await;
    let offer = signaling.offer(SERVER, sdp_of(3000)).await;
    let error = signaling.expect_error(&offer).await;
    assert_eq!(error.code, Code::InvalidArgument as u32, "{error:?}");
    assert!(error.message.contains("limit is 2048"), "{}", error.message);
    still_works(&mut signaling).await;

    let (mut ws, _) = WsClient::announce(server.http, "big-sdp-ws").await;
    let code = ws
        .error_code("peer.offer", json!({"to": SERVER, "sdp": sdp_of(3000)}))
        .await;
    assert_eq!(code, i64::from(jsonrpc::BAD_OFFER));
    ws.call("server.info", json!({})).await.unwrap();
    assert_eq!(hits(server.http, "sdp_bytes").await, before + 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_is_refused_and_one_far_over_ends_the_stream() {
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.max_sdp_bytes = 2048;
        c.limits.max_message_bytes = 8192;
    })
    .await;
    let before = hits(server.http, "signaling_message_bytes").await;

    // gRPC: above the limit, an ErrorResponse and the stream goes on.
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "big-msg").await;
    let id = candidate(&mut signaling, "x".repeat(10_000)).await;
    let error = signaling.expect_error(&id).await;
    assert_eq!(error.code, Code::InvalidArgument as u32, "{error:?}");
    assert!(
        error.message.contains("the limit is 8192"),
        "{}",
        error.message
    );
    still_works(&mut signaling).await;
    // Above 4 times the limit: not read at all, the stream ends.
    candidate(&mut signaling, "x".repeat(40_000)).await;
    let status = signaling.expect_status().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("32768"), "{status:?}");
    // The peer left (a clean end, not a resume grace): its id is free again.
    common::eventually("the peer id to be free", || {
        let url = server.grpc_url();
        async move {
            let mut again = SignalingClient::open(&url).await;
            let id = again
                .send(Req::Announce(pb::AnnounceRequest {
                    peer_id: "big-msg".into(),
                    ..Default::default()
                }))
                .await;
            matches!(again.next().await, Ok(Some(r)) if r.request_id == id && matches!(r.response, Some(Resp::Ack(_))))
        }
    })
    .await;

    // WebSocket: the same two thresholds.
    let (mut ws, _) = WsClient::announce(server.http, "big-msg-ws").await;
    ws.send_text(
        json!({"jsonrpc": "2.0", "id": 7, "method": "server.info", "params": {"pad": "x".repeat(10_000)}})
            .to_string(),
    )
    .await;
    let frame = ws.recv().await;
    assert_eq!(frame["id"], serde_json::Value::Null, "{frame}");
    assert_eq!(frame["error"]["code"], jsonrpc::INVALID_REQUEST, "{frame}");
    ws.call("server.info", json!({})).await.unwrap();
    ws.send_text("x".repeat(40_000)).await;
    let close = ws_close_code(&mut ws).await;
    assert_eq!(close, Some(1009));

    assert_eq!(
        hits(server.http, "signaling_message_bytes").await,
        before + 4.0
    );
}

/// Reads until the server closes the socket; its close code (`None`: no close frame).
async fn ws_close_code(ws: &mut WsClient) -> Option<u16> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(common::WAIT, ws.socket.next())
            .await
            .expect("the server closes the socket")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Sends `n` list requests at once; returns how many were refused for the rate, checking
/// each answer is a peer list or RESOURCE_EXHAUSTED.
async fn burst_of_lists(signaling: &mut SignalingClient, n: usize) -> usize {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            signaling
                .send(Req::ListPeers(pb::ListPeersRequest {}))
                .await,
        );
    }
    let mut refused = 0;
    for id in ids {
        let (refusal, _) = signaling
            .recv_until(|r| match &r.response {
                Some(Resp::PeerList(_)) if r.request_id == id => Some(false),
                Some(Resp::Error(err)) if r.request_id == id => {
                    assert_eq!(err.code, Code::ResourceExhausted as u32, "{err:?}");
                    assert!(err.message.contains("requests per second"), "{err:?}");
                    Some(true)
                }
                _ => None,
            })
            .await;
        refused += usize::from(refusal);
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_are_refused_then_served_again_once_the_bucket_refills() {
    let _serial = RATE_LABEL.lock().await;
    common::init_tracing();
    // One request a second, three at once: a burst of ten cannot all pass, however slow
    // the machine.
    let server = TestServer::start_with(|c| {
        c.limits.signaling_rate = 1;
        c.limits.signaling_burst = 3;
    })
    .await;
    let before = hits(server.http, "requests_per_second").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "hasty").await;
    let mut refused = burst_of_lists(&mut signaling, 10).await;
    assert!(
        refused >= 1,
        "ten requests at once all passed a bucket of 3"
    );
    // The stream stays; once a token is back, a request is served.
    let mut served = false;
    while !served {
        let now_refused = burst_of_lists(&mut signaling, 1).await;
        refused += now_refused;
        served = now_refused == 0;
        if !served {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    // Exactly the refusals the client saw were counted.
    assert_eq!(
        hits(server.http, "requests_per_second").await,
        before + refused as f64
    );

    // The WebSocket: -32010 under the request's id, and the socket stays.
    let before = hits(server.http, "requests_per_second").await;
    let (mut ws, _) = WsClient::announce(server.http, "hasty-ws").await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(ws.request("server.info", json!({})).await);
    }
    let mut ws_refused = 0;
    for id in sent {
        match ws.response(json!(id)).await {
            Ok(_) => {}
            Err((code, message)) => {
                assert_eq!(code, i64::from(jsonrpc::RATE_LIMITED), "{message}");
                ws_refused += 1;
            }
        }
    }
    assert!(ws_refused >= 1);
    loop {
        match ws.call("server.info", json!({})).await {
            Ok(_) => break,
            Err((code, _)) => {
                assert_eq!(code, i64::from(jsonrpc::RATE_LIMITED));
                ws_refused += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(
        hits(server.http, "requests_per_second").await,
        before + f64::from(ws_refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_far_beyond_the_rate_is_cut_off() {
    let _serial = RATE_LABEL.lock().await;
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.signaling_rate = 1;
        c.limits.signaling_burst = 1;
    })
    .await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "flood").await;
    // The announce took the one token; 10 refusals (ten bursts) are tolerated, then the
    // stream ends. 40 requests at once leave no doubt (the last ones may find the stream
    // already ended).
    for _ in 0..40 {
        let sent = signaling
            .try_send_raw(pb::SignalingRequest {
                request_id: "f".into(),
                request: Some(Req::ListPeers(pb::ListPeersRequest {})),
            })
            .await;
        if !sent {
            break;
        }
    }
    let mut refused = 0;
    let status = loop {
        match signaling.next().await {
            Ok(Some(r)) => {
                if let Some(Resp::Error(err)) = r.response {
                    assert_eq!(err.code, Code::ResourceExhausted as u32);
                    refused += 1;
                }
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("cut off"), "{status:?}");
    assert!(refused >= 10, "cut off after {refused} refusals");

    // The WebSocket is closed with 1008 after its last error.
    let (mut ws, _) = WsClient::announce(server.http, "flood-ws").await;
    for _ in 0..40 {
        ws.send_text(json!({"jsonrpc": "2.0", "method": "server.info"}).to_string())
            .await;
    }
    assert_eq!(ws_close_code(&mut ws).await, Some(1008));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_beyond_max_ice_candidates_are_refused_those_before_the_offer_included() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.max_ice_candidates = 3).await;
    let before = hits(server.http, "ice_candidates").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "chatty").await;
    // Two before the session exists (buffered), the offer, then one more: three.
    for port in [9001, 9002] {
        let id = candidate(&mut signaling, candidate_line(port)).await;
        signaling.expect_ack(&id).await;
    }
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    signaling.expect_ack(&offer).await;
    let id = candidate(&mut signaling, candidate_line(9003)).await;
    signaling.expect_ack(&id).await;
    let id = candidate(&mut signaling, candidate_line(9004)).await;
    let error = signaling.expect_error(&id).await;
    assert_eq!(error.code, Code::ResourceExhausted as u32, "{error:?}");
    assert!(error.message.contains("more than 3"), "{}", error.message);
    // End-of-candidates is not counted, and the stream goes on.
    let id = candidate(&mut signaling, String::new()).await;
    signaling.expect_ack(&id).await;
    still_works(&mut signaling).await;
    assert_eq!(hits(server.http, "ice_candidates").await, before + 1.0);

    // A new session counts afresh.
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    signaling.expect_ack(&offer).await;
    let id = candidate(&mut signaling, candidate_line(9005)).await;
    signaling.expect_ack(&id).await;

    // The WebSocket: -32004 beyond the limit, before any offer.
    let (mut ws, _) = WsClient::announce(server.http, "chatty-ws").await;
    for port in [9001, 9002, 9003] {
        ws.call(
            "peer.ice_candidate",
            json!({"to": SERVER, "candidate": candidate_line(port)}),
        )
        .await
        .unwrap();
    }
    let code = ws
        .error_code(
            "peer.ice_candidate",
            json!({"to": SERVER, "candidate": candidate_line(9004)}),
        )
        .await;
    assert_eq!(code, i64::from(jsonrpc::BAD_CANDIDATE));
    ws.call("peer.list", json!({})).await.unwrap();
    assert_eq!(hits(server.http, "ice_candidates").await, before + 2.0);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_beyond_max_peers_are_refused_and_counted() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.max_peers = 1).await;
    let before = hits(server.http, "peers").await;
    let (first, _) = SignalingClient::announce(&server.grpc_url(), "first").await;

    let mut second = SignalingClient::open(&server.grpc_url()).await;
    second
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "second".into(),
            ..Default::default()
        }))
        .await;
    let status = second.expect_status().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // The WebSocket refuses the announce with -32005 and keeps the socket for another try.
    let mut ws = WsClient::connect(server.http).await;
    let code = ws
        .error_code("peer.announce", json!({"peer_id": "third"}))
        .await;
    assert_eq!(code, i64::from(jsonrpc::SESSION_LIMIT));
    assert_eq!(hits(server.http, "peers").await, before + 2.0);

    // Once the first leaves, the same socket gets in.
    first.leave().await;
    let mut announced = false;
    for _ in 0..50 {
        if ws
            .call("peer.announce", json!({"peer_id": "third"}))
            .await
            .is_ok()
        {
            announced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(announced, "the slot of the peer that left was not freed");
}
