//! A client that announces and then stops reading its stream holds up nobody: while 50
//! watchers read every notification, 1,500 peers join and leave and three clients make
//! calls, the stuck client's notifications are kept up to a bound, then its stream ends
//! with RESOURCE_EXHAUSTED (counted in `remotemedia_signaling_slow_consumers_total`), and it
//! can still resume with its token: it lost notifications, not its place. The same for a
//! WebSocket client that stops reading.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::{eventually, http_get, metric_value, TestServer, WAIT};
use futures::StreamExt;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_client::WebRtcSignalingClient,
    SignalingRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

const WATCHERS: usize = 50;
/// Each join and leave is two notifications to everyone: far more than the stuck client's
/// mailbox (1,024), its response queue (128) and its transport buffers hold.
const CHURN: usize = 1_500;
/// The kernel may buffer megabytes of a TCP connection (unlike HTTP/2 flow control): the
/// WebSocket test's joins carry this much metadata each, 12 MB in all.
const WS_PADDING: usize = 8 * 1024;

const SLOW: &str = "remotemedia_signaling_slow_consumers_total{transport=\"grpc\"}";
const SLOW_WS: &str = "remotemedia_signaling_slow_consumers_total{transport=\"websocket\"}";

fn announce(peer_id: &str) -> SignalingRequest {
    announce_with(peer_id, HashMap::new())
}

fn announce_with(peer_id: &str, metadata: HashMap<String, String>) -> SignalingRequest {
    SignalingRequest {
        request_id: "a".into(),
        request: Some(Req::Announce(pb::AnnounceRequest {
            peer_id: peer_id.into(),
            capabilities: None,
            metadata,
        })),
    }
}

/// Announces on a new stream of `channel` (with `padding` bytes of metadata, which every
/// `PeerJoined` carries), reads the ack, leaves cleanly.
async fn join_and_leave(channel: Channel, peer_id: String, padding: usize) {
    let (tx, rx) = mpsc::channel(1);
    let metadata = HashMap::from([("padding".to_owned(), "p".repeat(padding))]);
    tx.send(announce_with(&peer_id, metadata)).await.unwrap();
    let mut inbound = WebRtcSignalingClient::new(channel)
        .signal(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let ack = tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("the announce ack in time")
        .unwrap()
        .unwrap();
    assert!(matches!(ack.response, Some(Resp::Ack(_))), "{ack:?}");
    drop(tx);
    while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, inbound.message()).await {}
}

async fn slow_consumers(server: &TestServer) -> f64 {
    metric_value(&http_get(server.http, "/metrics").await, SLOW).unwrap()
}

async fn slow_websockets(server: &TestServer) -> f64 {
    metric_value(&http_get(server.http, "/metrics").await, SLOW_WS).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_nobody() {
    common::init_tracing();
    // Without takeover, so that the cut-off client's id is taken during its grace.
    let server = TestServer::start_with(|c| c.limits.id_takeover = false).await;
    let url = server.grpc_url();
    let slow_before = slow_consumers(&server).await;

    // The stuck client: a small HTTP/2 window, so little of what it ignores sits in
    // transport buffers. It reads its announce ack and then nothing.
    let stuck_channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .initial_stream_window_size(1024)
        .connect()
        .await
        .unwrap();
    let (stuck_tx, stuck_rx) = mpsc::channel(1);
    stuck_tx.send(announce("stuck")).await.unwrap();
    let mut stuck = WebRtcSignalingClient::new(stuck_channel)
        .signal(ReceiverStream::new(stuck_rx))
        .await
        .unwrap()
        .into_inner();
    let ack = stuck.message().await.unwrap().unwrap();
    let Some(Resp::Ack(ack)) = ack.response else {
        panic!("no announce ack: {ack:?}")
    };
    let token = serde_json::from_str::<serde_json::Value>(&ack.data).unwrap()["resume_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Watchers read everything until the marker peer joins.
    let mut watchers = Vec::new();
    for i in 0..WATCHERS {
        let (mut watcher, _) = SignalingClient::announce(&url, &format!("watcher-{i}")).await;
        watchers.push(tokio::spawn(async move {
            let (_, skipped) = watcher
                .recv_until(|r| match &r.response {
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::PeerJoined(j)),
                    })) if j.peer_id == "marker" => Some(()),
                    _ => None,
                })
                .await;
            (watcher, skipped.len())
        }));
    }

    // Churn and calls at once.
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let churn = futures::stream::iter(0..CHURN)
        .map(|i| join_and_leave(channel.clone(), format!("churn-{i}"), 0))
        .buffer_unordered(8)
        .collect::<Vec<()>>();
    let calls = async {
        for i in 0..3 {
            let (mut signaling, _) = SignalingClient::announce(&url, &format!("caller-{i}")).await;
            let mut peer = ClientPeer::new(ClientOptions::default()).await;
            connect_to_server(&mut signaling, &mut peer).await;
            let got = peer.tone_round_trip(440.0).await;
            assert!(
                (got - 440.0).abs() <= 5.0,
                "call {i} during the churn: {got} Hz"
            );
            peer.close().await;
            signaling.leave().await;
        }
    };
    tokio::join!(churn, calls);

    // The stuck client was cut off, once, and nobody else was.
    eventually("the stuck client to be cut off", || async {
        slow_consumers(&server).await >= slow_before + 1.0
    })
    .await;

    let (_marker, _) = SignalingClient::announce(&url, "marker").await;
    for watcher in watchers {
        let (watcher, seen) = tokio::time::timeout(WAIT, watcher)
            .await
            .expect("a watcher saw the marker in time")
            .unwrap();
        assert!(seen >= 2 * CHURN, "a watcher saw only {seen} notifications");
        watcher.leave().await;
    }
    assert_eq!(slow_consumers(&server).await, slow_before + 1.0);

    // What the stuck client finally reads: some queued responses, then the status.
    let status = loop {
        match tokio::time::timeout(WAIT, stuck.message())
            .await
            .expect("the stuck stream ends")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stuck stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // Its place is kept: without the token the id is taken, with it the client resumes.
    let mut thief = SignalingClient::open(&url).await;
    thief
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "stuck".into(),
            capabilities: None,
            metadata: HashMap::new(),
        }))
        .await;
    assert_eq!(
        thief.expect_status().await.code(),
        tonic::Code::AlreadyExists
    );
    let (mut resumed, ack) = SignalingClient::announce_with(
        &url,
        "stuck",
        HashMap::from([("resume_token".to_owned(), token.clone())]),
    )
    .await;
    assert_eq!(ack["resume_token"], token.as_str());
    // The resumed stream is served like any other.
    let id = resumed.send(Req::ListPeers(pb::ListPeersRequest {})).await;
    let (peers, _) = resumed
        .recv_until(|r| match &r.response {
            Some(Resp::PeerList(list)) if r.request_id == id => Some(list.clone()),
            _ => None,
        })
        .await;
    assert!(peers.peers.iter().any(|p| p.peer_id == SERVER));
    drop(stuck_tx);
    resumed.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_holds_up_nobody() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    common::init_tracing();
    let server = TestServer::start().await;
    let url = server.grpc_url();
    let before = slow_websockets(&server).await;

    // A small receive buffer, so little of what it ignores sits in the kernel.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(server.http).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", server.http), tcp)
        .await
        .unwrap();
    let announce = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "peer.announce",
        "params": {"peer_id": "stuck-ws"}});
    stuck
        .send(Message::Text(announce.to_string().into()))
        .await
        .unwrap();
    let ack = loop {
        match stuck.next().await.unwrap().unwrap() {
            Message::Text(text) => break serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            _ => continue,
        }
    };
    let token = ack["result"]["resume_token"].as_str().unwrap().to_owned();

    // Meanwhile a watcher reads everything, and 1,500 peers join and leave.
    let (mut watcher, _) = SignalingClient::announce(&url, "watcher").await;
    let watching = tokio::spawn(async move {
        let (_, skipped) = watcher
            .recv_until(|r| match &r.response {
                Some(Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::PeerJoined(j)),
                })) if j.peer_id == "marker" => Some(()),
                _ => None,
            })
            .await;
        (watcher, skipped.len())
    });
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    futures::stream::iter(0..CHURN)
        .map(|i| join_and_leave(channel.clone(), format!("churn-{i}"), WS_PADDING))
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let (_marker, _) = SignalingClient::announce(&url, "marker").await;
    eventually("the stuck WebSocket to be cut off", || async {
        slow_websockets(&server).await >= before + 1.0
    })
    .await;
    let (watcher, seen) = tokio::time::timeout(WAIT, watching)
        .await
        .expect("the watcher saw the marker in time")
        .unwrap();
    assert!(
        seen >= 2 * CHURN,
        "the watcher saw only {seen} notifications"
    );
    assert_eq!(slow_websockets(&server).await, before + 1.0);

    // The server let go of the stuck socket: reading it now ends.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = stuck.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stuck socket was never closed");

    // It resumes with its token.
    let mut resumed = common::websocket::WsClient::connect(server.http).await;
    let result = resumed
        .call(
            "peer.announce",
            serde_json::json!({"peer_id": "stuck-ws", "resume_token": token}),
        )
        .await
        .expect("the resume is accepted");
    assert_eq!(result["resume_token"], token.as_str());
    watcher.leave().await;
    server.stop().await;
}
