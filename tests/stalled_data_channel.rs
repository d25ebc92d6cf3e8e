//! A client that stops reading its data channel keeps getting its audio (issue #21).
//!
//! The client is the webrtc crate's own peer whose `on_message` handler stops returning once
//! its 64-message queue is full (the test never reads it): its data-channel reader stalls, its
//! SCTP receive window fills and goes to zero, and the server's SCTP stack then holds every
//! further send in its pending queue. Data-channel output used to be sent by the task that
//! paces the session's audio, so that task blocked and the call went silent. Its own bounded
//! queue now drops what does not fit, counts it, and the audio goes on.
//! (Its own test binary: the metrics are process-wide.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::{http_get, metric_value, TestServer};
use prost::Message;
use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer, TextBuffer};
use webrtc::data_channel::data_channel_state::RTCDataChannelState;

/// Large enough that a few dozen fill the client's 1 MiB receive window, below the 64 KiB a
/// client without `a=max-message-size` accepts.
const MESSAGE_BYTES: usize = 30_000;
/// About 6 MB: the 64 the client's handler takes, its receive window and the server's
/// pending queue several times over.
const FLOOD_MESSAGES: usize = 200;

/// A text `DataBuffer`, which the loopback pipeline sends back.
fn text_message(text: &str) -> Bytes {
    Bytes::from(
        DataBuffer {
            data_type: Some(DataType::Text(TextBuffer {
                text_data: text.as_bytes().to_vec(),
                encoding: "utf-8".into(),
                ..Default::default()
            })),
            metadata: Default::default(),
        }
        .encode_to_vec(),
    )
}

async fn limit_hits(http: SocketAddr, limit: &str) -> f64 {
    let text = http_get(http, "/metrics").await;
    let sample = format!(r#"remotemedia_limit_hits_total{{limit="{limit}"}}"#);
    metric_value(&text, &sample).unwrap_or_else(|| panic!("{sample} is not exported"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_data_channel_keeps_getting_audio() {
    common::init_tracing();
    // Loopback: every message the client sends comes back on its data channel.
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "stalled-dc").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let channel = peer.data.clone().unwrap();
    common::eventually("the data channel to open", || {
        let open = channel.ready_state() == RTCDataChannelState::Open;
        async move { open }
    })
    .await;
    let frequency = peer.tone_round_trip(440.0).await;
    assert!((frequency - 440.0).abs() < 20.0, "{frequency} Hz before");

    // The client floods the pipeline with messages whose echoes it never reads, then keeps
    // sending one every 20 ms, so the pipeline keeps producing data output.
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let channel = Arc::clone(&channel);
        let sent = Arc::clone(&sent);
        async move {
            let message = text_message(&"x".repeat(MESSAGE_BYTES));
            for _ in 0..FLOOD_MESSAGES {
                if channel.send(&message).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let small = text_message("still here");
            loop {
                if channel.send(&small).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Until the flood has gone out (the server reads it all) or has stalled for good.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while sent.load(Ordering::Relaxed) < FLOOD_MESSAGES && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The data channel is stuck (the client reads nothing); the audio is not.
    let frequency = peer.tone_round_trip(660.0).await;
    assert!(
        (frequency - 660.0).abs() < 20.0,
        "the tone came back at {frequency} Hz while the data channel was stuck"
    );
    assert_eq!(
        sent.load(Ordering::Relaxed),
        FLOOD_MESSAGES,
        "the server stopped reading the client's messages"
    );
    // What did not fit the data channel's send queue was dropped and counted.
    assert!(limit_hits(server.http, "datachannel_send_queue_bytes").await > 0.0);
    flood.abort();
    peer.close().await;
}
