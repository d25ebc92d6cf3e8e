//! Media limits against a real server and a real WebRTC client: data-channel messages over
//! `--max-datachannel-message-bytes`, a pipeline input that overflows
//! (`--pipeline-queue-frames`), more data channels than `--max-datachannels`, and node
//! buffers a client fills (`--max-text-buffer-bytes`, `--max-utterance-bytes`). Each checks what is counted and that media still flows after.
//! (Its own test binary: the metrics are process-wide; the tests move different series.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::client::{connect_to_server, connect_to_server_rewriting, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::{http_get, metric_value, TestServer};
use prost::Message;
use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer, TextBuffer};
use webrtc::data_channel::data_channel_state::RTCDataChannelState;
use webrtc::data_channel::RTCDataChannel;

async fn sample(http: SocketAddr, sample: &str) -> f64 {
    let text = http_get(http, "/metrics").await;
    metric_value(&text, sample).unwrap_or_else(|| panic!("{sample} is not exported"))
}

async fn hits(http: SocketAddr, limit: &str) -> f64 {
    sample(
        http,
        &format!(r#"remotemedia_limit_hits_total{{limit="{limit}"}}"#),
    )
    .await
}

async fn dropped(http: SocketAddr, reason: &str) -> f64 {
    sample(
        http,
        &format!(r#"remotemedia_media_datachannel_dropped_total{{reason="{reason}"}}"#),
    )
    .await
}

fn text_message(text: &str) -> Bytes {
    Bytes::from(
        DataBuffer {
            data_type: Some(DataType::Text(TextBuffer {
                text_data: text.as_bytes().to_vec(),
                encoding: "utf-8".into(),
                language: String::new(),
                ..Default::default()
            })),
            metadata: Default::default(),
        }
        .encode_to_vec(),
    )
}

async fn open_channel(peer: &ClientPeer) -> std::sync::Arc<RTCDataChannel> {
    let channel = peer.data.clone().unwrap();
    common::eventually("the data channel to open", || {
        let open = channel.ready_state() == RTCDataChannelState::Open;
        async move { open }
    })
    .await;
    channel
}

/// Sends `text` and waits for the loopback pipeline to send it back.
async fn echoes(peer: &mut ClientPeer, channel: &RTCDataChannel, text: &str) {
    channel.send(&text_message(text)).await.unwrap();
    let reply = tokio::time::timeout(common::WAIT, peer.messages.recv())
        .await
        .expect("an echo on the data channel")
        .unwrap();
    match DataBuffer::decode(reply).unwrap().data_type {
        Some(DataType::Text(echo)) => assert_eq!(echo.text_data, text.as_bytes()),
        other => panic!("expected the text back, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datachannel_message_over_the_limit_is_dropped_and_counted_and_the_channel_stays() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.max_datachannel_message_bytes = 4096).await;
    let hits_before = hits(server.http, "datachannel_message_bytes").await;
    let dropped_before = dropped(server.http, "too_large").await;
    let malformed_before = dropped(server.http, "malformed").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "big-dc").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    // A client that ignores the limit the answer advertises (a conforming one refuses to
    // send the large message itself).
    let report = connect_to_server_rewriting(&mut signaling, &mut peer, |answer| {
        answer.replace("a=max-message-size:4096", "a=max-message-size:1048576")
    })
    .await;
    assert!(
        report.answer_sdp.contains("a=max-message-size:4096\r\n"),
        "{}",
        report.answer_sdp
    );
    let channel = open_channel(&peer).await;
    channel
        .send(&text_message(&"x".repeat(5000)))
        .await
        .unwrap();
    // An empty message is no DataBuffer (dropped, counted), and no end of the channel.
    channel.send(&Bytes::new()).await.unwrap();
    // The channel is in order: once the next message echoes, the others were seen.
    echoes(&mut peer, &channel, "after the large one").await;
    assert_eq!(
        dropped(server.http, "malformed").await,
        malformed_before + 1.0
    );
    assert_eq!(
        hits(server.http, "datachannel_message_bytes").await,
        hits_before + 1.0
    );
    assert_eq!(
        dropped(server.http, "too_large").await,
        dropped_before + 1.0
    );
    assert!(
        peer.messages.try_recv().is_err(),
        "the large message came back"
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_64_kib_reach_the_pipeline_under_the_default_limit() {
    common::init_tracing();
    // webrtc-rs's own reader has a 64 KiB buffer and closed the channel on a larger message.
    let server = TestServer::start().await;
    let too_large_before = dropped(server.http, "too_large").await;
    let for_client_before = dropped(server.http, "too_large_for_client").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "dc-100k").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    assert!(report.answer_sdp.contains("a=max-message-size:262144\r\n"));
    let channel = open_channel(&peer).await;
    channel
        .send(&text_message(&"y".repeat(100_000)))
        .await
        .unwrap();
    // The loopback sends it back, but this client takes 64 KiB (no max-message-size in its
    // offer): that output is dropped, counted, and the channel goes on both ways.
    echoes(&mut peer, &channel, "after 100 KB").await;
    assert_eq!(
        dropped(server.http, "too_large_for_client").await,
        for_client_before + 1.0
    );
    assert_eq!(dropped(server.http, "too_large").await, too_large_before);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_input_that_overflows_drops_the_oldest_audio_and_audio_still_flows() {
    common::init_tracing();
    // Room for 2 frames; 60 ms packets play out as 3 frames at once, so every packet
    // overflows the queue, however fast the pipeline.
    let server = TestServer::start_with(|c| c.limits.pipeline_queue_frames = 2).await;
    let before = hits(server.http, "pipeline_queue").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "bursty").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    peer.send_tone(440.0, 0.6, 60, 0.5).await;
    // Ten packets, each three frames into a queue of two: at least one dropped each.
    common::eventually("ten dropped frames to be counted", || {
        let http = server.http;
        async move { hits(http, "pipeline_queue").await >= before + 10.0 }
    })
    .await;
    // The newest audio went on: with 20 ms packets (one frame each) the tone comes back.
    let frequency = peer.tone_round_trip(660.0).await;
    assert!(
        (frequency - 660.0).abs() < 20.0,
        "the tone came back at {frequency} Hz"
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channels_over_the_session_limit_are_closed_and_counted() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.max_datachannels = 2).await;
    let before = hits(server.http, "datachannels").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "many-dc").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let first = open_channel(&peer).await;
    let second = peer.pc.create_data_channel("second", None).await.unwrap();
    common::eventually("the second channel to open", || {
        let open = second.ready_state() == RTCDataChannelState::Open;
        async move { open }
    })
    .await;
    // The server reads it (its echo comes back on the first): both slots are taken.
    echoes(&mut peer, &second, "the second channel is read").await;
    // One more than the server reads: it opens (the client's stack opens it), then the
    // server closes it.
    let third = peer.pc.create_data_channel("third", None).await.unwrap();
    common::eventually("the server to close the third channel", || {
        let closed = third.ready_state() == RTCDataChannelState::Closed;
        async move { closed }
    })
    .await;
    assert_eq!(hits(server.http, "datachannels").await, before + 1.0);
    assert_eq!(second.ready_state(), RTCDataChannelState::Open);
    // The channels within the limit work on.
    echoes(&mut peer, &first, "the first channel still works").await;
    peer.close().await;
}

/// A server whose every session runs `manifest` (YAML), with `tweak` applied.
async fn server_with_manifest(
    manifest: &str,
    tweak: impl FnOnce(&mut remotemedia_webrtc::config::Config),
) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.yaml");
    std::fs::write(&path, manifest).unwrap();
    let server = TestServer::start_with(|c| {
        c.manifest = Some(path);
        tweak(c);
    })
    .await;
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_never_ends_a_sentence_is_sent_on_at_the_limit_and_counted() {
    common::init_tracing();
    let manifest = "version: v1\nmetadata: {name: sentences}\n\
                    nodes: [{id: text, node_type: TextCollectorNode}]\nconnections: []\n";
    let (server, _dir) =
        server_with_manifest(manifest, |c| c.limits.max_text_buffer_bytes = 1000).await;
    let before = hits(server.http, "text_buffer_bytes").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "chatty").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let channel = open_channel(&peer).await;
    // Three fragments of 400 bytes and no sentence end: the third takes the text past the
    // limit, and all of it comes back as one piece.
    for _ in 0..3 {
        channel.send(&text_message(&"a".repeat(400))).await.unwrap();
    }
    let reply = tokio::time::timeout(common::WAIT, peer.messages.recv())
        .await
        .expect("the text back at the limit")
        .unwrap();
    match DataBuffer::decode(reply).unwrap().data_type {
        Some(DataType::Text(text)) => assert_eq!(text.text_data.len(), 1200),
        other => panic!("expected text, got {other:?}"),
    }
    assert_eq!(hits(server.http, "text_buffer_bytes").await, before + 1.0);
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_utterance_is_bounded_by_bytes_whatever_rate_the_client_claims() {
    use remotemedia_webrtc::proto::common::{AudioBuffer, AudioFormat};
    common::init_tracing();
    let manifest = "version: v1\nmetadata: {name: utterances}\n\
                    nodes: [{id: acc, node_type: AudioBufferAccumulatorNode}]\nconnections: []\n";
    let (server, _dir) =
        server_with_manifest(manifest, |c| c.limits.max_utterance_bytes = 64 * 1024).await;
    let before = hits(server.http, "utterance_bytes").await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "fast-talker").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let channel = open_channel(&peer).await;
    // 768 kHz claimed: 30 s (the default maximum utterance) would be 23 million samples.
    // Ten buffers of 4,000 samples are 160 KB of samples: over 64 KiB twice.
    let samples: Vec<u8> = std::iter::repeat_n(0.1f32.to_le_bytes(), 4000)
        .flatten()
        .collect();
    let audio = Bytes::from(
        DataBuffer {
            data_type: Some(DataType::Audio(AudioBuffer {
                samples,
                sample_rate: 768_000,
                channels: 1,
                format: AudioFormat::F32.into(),
                num_samples: 4000,
                metadata_json: None,
            })),
            metadata: Default::default(),
        }
        .encode_to_vec(),
    );
    for _ in 0..10 {
        channel.send(&audio).await.unwrap();
    }
    common::eventually("two cut utterances to be counted", || {
        let http = server.http;
        async move { hits(http, "utterance_bytes").await >= before + 2.0 }
    })
    .await;
    peer.close().await;
}
