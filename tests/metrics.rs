//! `/metrics` tells what happened: offers answered, sessions alive and closed, setup times.
//! (Its own test binary: the metrics are process-wide.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::{http_get, metric_value, TestServer};
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_call_from_offer_to_close() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "metered").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;

    let during = http_get(server.http, "/metrics").await;
    assert!(during.starts_with("HTTP/1.0 200"), "{during}");
    assert_eq!(
        metric_value(&during, "remotemedia_signaling_peers_active"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&during, "remotemedia_worker_sessions_active"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &during,
            r#"remotemedia_frontend_offers_total{result="answered"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&during, "remotemedia_signaling_offer_answer_seconds_count"),
        Some(1.0)
    );
    // ICE connect is observed when the server side reports connected, right after the client.
    common::eventually("the connect time to be recorded", || {
        let http = server.http;
        async move {
            let text = http_get(http, "/metrics").await;
            metric_value(&text, "remotemedia_media_ice_connect_seconds_count") == Some(1.0)
        }
    })
    .await;

    peer.send_tone(440.0, 0.4, 20, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;

    let bad = signaling
        .offer("nobody", "v=0\r\nm=audio 9 RTP/AVP 0\r\n")
        .await;
    signaling.expect_error(&bad).await;
    let disconnect = signaling
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: "remotemedia-server".into(),
        }))
        .await;
    signaling.expect_ack(&disconnect).await;

    let after = http_get(server.http, "/metrics").await;
    assert_eq!(
        metric_value(&after, "remotemedia_worker_sessions_active"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &after,
            r#"remotemedia_worker_sessions_closed_total{reason="client"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &after,
            r#"remotemedia_frontend_offers_total{result="unknown_peer"}"#
        ),
        Some(1.0)
    );
    // The call's media: packets both ways, Opus work timed, the jitter buffer's delay kept.
    let packets_in = metric_value(
        &after,
        r#"remotemedia_media_rtp_packets_total{direction="in"}"#,
    );
    let packets_out = metric_value(
        &after,
        r#"remotemedia_media_rtp_packets_total{direction="out"}"#,
    );
    assert!(
        packets_in.unwrap_or(0.0) >= 15.0,
        "packets in: {packets_in:?}"
    );
    assert!(
        packets_out.unwrap_or(0.0) >= 15.0,
        "packets out: {packets_out:?}"
    );
    // Bytes too: at least an RTP header (12) and a few Opus bytes per packet.
    for direction in ["in", "out"] {
        let sample = format!(r#"remotemedia_media_rtp_bytes_total{{direction="{direction}"}}"#);
        let bytes = metric_value(&after, &sample).unwrap_or(0.0);
        assert!(bytes >= 15.0 * 20.0, "{sample}: {bytes}");
    }
    let encodes = metric_value(
        &after,
        r#"remotemedia_media_opus_seconds_count{operation="encode"}"#,
    );
    assert!(encodes.unwrap_or(0.0) >= 15.0, "encodes: {encodes:?}");
    assert_eq!(
        metric_value(
            &after,
            "remotemedia_media_jitter_buffer_delay_seconds_count"
        ),
        Some(1.0)
    );
    peer.close().await;
}
