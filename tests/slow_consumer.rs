//! A client that announces and then stops reading its stream holds up nobody: while 50
//! watchers read every notification, 1,500 peers join and leave and three clients make
//! calls, the stuck client's notifications are kept up to a bound, then its stream ends
//! with RESOURCE_EXHAUSTED (counted in `remotemedia_signaling_slow_consumers_total`), and it
//! can still resume with its token: it lost notifications, not its place.

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

const SLOW: &str = "remotemedia_signaling_slow_consumers_total{transport=\"grpc\"}";

fn announce(peer_id: &str) -> SignalingRequest {
    SignalingRequest {
        request_id: "a".into(),
        request: Some(Req::Announce(pb::AnnounceRequest {
            peer_id: peer_id.into(),
            capabilities: None,
            metadata: HashMap::new(),
        })),
    }
}

/// Announces on a new stream of `channel`, reads the ack, leaves cleanly.
async fn join_and_leave(channel: Channel, peer_id: String) {
    let (tx, rx) = mpsc::channel(1);
    tx.send(announce(&peer_id)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_nobody() {
    common::init_tracing();
    let server = TestServer::start().await;
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
        .map(|i| join_and_leave(channel.clone(), format!("churn-{i}")))
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
