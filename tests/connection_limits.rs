//! Bounds on signaling connections a hostile or broken client can push: a stream or WebSocket
//! that says nothing, HTTP/2 connections that stop answering pings or open too many streams.
//! Each against a real server, with what the client sees and the count it moves. (Its own
//! test binary: the limit counters are process-wide.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::signaling::SignalingClient;
use common::websocket::WsClient;
use common::{http_get, metric_value, TestServer};
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};
use remotemedia_webrtc::signaling::jsonrpc;
use tonic::Code;

/// `remotemedia_limit_hits_total{limit}` of the server now.
async fn hits(http: SocketAddr, limit: &str) -> f64 {
    let text = http_get(http, "/metrics").await;
    let sample = format!(r#"remotemedia_limit_hits_total{{limit="{limit}"}}"#);
    metric_value(&text, &sample).unwrap_or_else(|| panic!("{sample} is not exported"))
}

const SILENCE: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_or_websocket_that_says_nothing_is_closed() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.first_message_timeout = SILENCE).await;
    let before = hits(server.http, "first_message").await;

    // gRPC: the stream opens and nothing is sent on it.
    let opened = Instant::now();
    let mut silent = SignalingClient::open(&server.grpc_url()).await;
    let status = silent.expect_status().await;
    let after = opened.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        after >= SILENCE && after < SILENCE * 4,
        "closed after {after:?}"
    );

    // A client that speaks at once keeps its stream past the deadline.
    let (mut talking, _) = SignalingClient::announce(&server.grpc_url(), "talker").await;
    tokio::time::sleep(SILENCE * 2).await;
    let list = talking.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let _ = talking
        .recv_until(|r| (r.request_id == list).then_some(()))
        .await;

    // WebSocket: the socket opens and nothing is sent; a last error, then close 1008.
    let mut ws = WsClient::connect(server.http).await;
    let frame = ws.recv().await;
    assert_eq!(frame["id"], serde_json::Value::Null, "{frame}");
    assert_eq!(frame["error"]["code"], jsonrpc::INVALID_REQUEST, "{frame}");
    assert_eq!(ws.close_code().await, Some(1008));

    assert_eq!(hits(server.http, "first_message").await, before + 2.0);
}
