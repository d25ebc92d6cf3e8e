//! Traffic counters move while a call lasts, not only when it ends: `rate()` of the RTP
//! packets and bytes is not flat during an hour-long call. (Its own test binary: the metrics
//! are process-wide.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::{http_get, metric_value, TestServer};
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};

/// Packets and bytes both ways, read from one scrape.
fn traffic(text: &str) -> [f64; 4] {
    let value = |name: &str, direction: &str| {
        metric_value(
            text,
            &format!(r#"remotemedia_media_rtp_{name}_total{{direction="{direction}"}}"#),
        )
        .unwrap_or(0.0)
    };
    [
        value("packets", "in"),
        value("packets", "out"),
        value("bytes", "in"),
        value("bytes", "out"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counters_rise_while_a_call_lasts() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "long-call").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let before = traffic(&http_get(server.http, "/metrics").await);

    // One second of audio each way (the echo sends it back), the call still up.
    peer.send_tone(440.0, 1.0, 20, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = traffic(&http_get(server.http, "/metrics").await);
    assert_eq!(
        metric_value(
            &http_get(server.http, "/metrics").await,
            "remotemedia_worker_sessions_active"
        ),
        Some(1.0),
        "the call is still up"
    );
    println!("during the call: {before:?} -> {during:?}");
    // 50 packets a second went each way; allow for start-up and pacing.
    assert!(
        during[0] - before[0] >= 30.0,
        "packets in: {before:?} -> {during:?}"
    );
    assert!(
        during[1] - before[1] >= 30.0,
        "packets out: {before:?} -> {during:?}"
    );
    // At least an RTP header and a few Opus bytes per packet.
    assert!(
        during[2] - before[2] >= 30.0 * 20.0,
        "bytes in: {before:?} -> {during:?}"
    );
    assert!(
        during[3] - before[3] >= 30.0 * 20.0,
        "bytes out: {before:?} -> {during:?}"
    );

    // Closing the call adds nothing counted twice: at most what flowed since.
    let disconnect = signaling
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: "remotemedia-server".into(),
        }))
        .await;
    signaling.expect_ack(&disconnect).await;
    let after = traffic(&http_get(server.http, "/metrics").await);
    assert!(
        after[0] - during[0] < 30.0,
        "packets in counted again at close: {during:?} -> {after:?}"
    );
    peer.close().await;
}
