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

/// One HTTP/2 frame off a raw connection: its type and payload; `None` once it is closed.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], payload))
}

const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_stops_answering_pings_is_closed() {
    use tokio::io::AsyncWriteExt;
    common::init_tracing();
    let server = TestServer::start_with(|c| {
        c.limits.grpc_keepalive_interval = Duration::from_millis(500);
        c.limits.grpc_keepalive_timeout = Duration::from_millis(500);
    })
    .await;

    // A client that opens HTTP/2 (preface, empty SETTINGS) and then goes dead, as one behind
    // a NAT mapping that expired: it never answers anything again.
    let mut dead = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    dead.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let opened = Instant::now();
    let (mut pings, mut goaway) = (0, false);
    loop {
        let frame = tokio::time::timeout(common::WAIT, read_frame(&mut dead))
            .await
            .expect("the server closes the dead connection");
        match frame {
            Some((PING, _)) => pings += 1,
            Some((GOAWAY, _)) => goaway = true,
            Some(_) => {}
            None => break,
        }
    }
    let closed_after = opened.elapsed();
    println!("dead connection: {pings} ping(s), GOAWAY {goaway}, closed after {closed_after:?}");
    assert!(pings >= 1, "closed without a keepalive ping");
    assert!(closed_after < Duration::from_secs(4), "{closed_after:?}");

    // A live client answers the pings (every HTTP/2 stack does) and keeps its connection.
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!driver.is_finished(), "the live connection was closed");
    client
        .ready()
        .await
        .expect("the live connection still takes streams");
}

/// A `Signal` stream request on a raw HTTP/2 connection (it stays open: the server answers
/// the headers at once and waits for messages).
fn signal_request(server: SocketAddr) -> http::Request<()> {
    http::Request::post(format!(
        "http://{server}/remotemedia.v1.webrtc.WebRtcSignaling/Signal"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_holds_at_most_grpc_max_streams() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.grpc_max_streams = 2).await;
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();

    // Two streams open and are answered.
    let mut open = Vec::new();
    for _ in 0..2 {
        client = client.ready().await.unwrap();
        let (response, stream) = client
            .send_request(signal_request(server.grpc), false)
            .unwrap();
        let response = tokio::time::timeout(common::WAIT, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        open.push(stream);
    }
    // A third waits: the server holds no more on this connection.
    client = client.ready().await.unwrap();
    let (third, _third_stream) = client
        .send_request(signal_request(server.grpc), false)
        .unwrap();
    let mut third = std::pin::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), third.as_mut())
            .await
            .is_err(),
        "a third stream was served on a connection limited to two"
    );
    // It goes through once one ends.
    open[0].send_reset(h2::Reason::CANCEL);
    let response = tokio::time::timeout(common::WAIT, third)
        .await
        .expect("the third stream is served once one ends")
        .unwrap();
    assert_eq!(response.status(), 200);
}
