//! A real client talks to `examples/vad.yaml`: 1 s of silence, a spoken phrase, 1 s of silence.
//! It gets its audio back and exactly one `speech_start` (within 100 ms of the truth) and one
//! `speech_end` (within minSilenceMs + 100 ms of the truth) as `DataBuffer{json}` on the data
//! channel, and nothing during the silences.
//!
//! `tests/data/speech_48k.wav` was made once with
//! `espeak-ng -s 175 -w raw.wav "hello there how are you doing"` and
//! `sox raw.wav -r 48000 -c 1 -b 16 speech_48k.wav silence 1 0.01 0.5% reverse silence 1 0.01
//! 0.5% reverse` (leading and trailing silence trimmed, so speech runs from its first to its last
//! sample; its longest inner pause is 20 ms, far below minSilenceMs), and committed so CI needs no
//! espeak-ng.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer};

/// The manifest's `minSilenceMs`.
const MIN_SILENCE_MS: u64 = 300;

fn speech() -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech_48k.wav");
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (48_000, 1, 16)
    );
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_speech_start_and_one_speech_end_at_the_right_times() {
    common::init_tracing();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vad.yaml");
    let server = TestServer::start_with(|c| c.manifest = Some(manifest)).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "vad-client").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;

    let speech = speech();
    let speech_ms = speech.len() as u64 * 1000 / 48_000;
    let mut audio = vec![0.0; 48_000];
    audio.extend_from_slice(&speech);
    audio.extend(vec![0.0; 48_000]);
    peer.send_samples(&audio, 20).await;

    // The last event can only come minSilenceMs after the speech; collect until quiet.
    let mut events = Vec::new();
    while let Ok(Some(bytes)) =
        tokio::time::timeout(Duration::from_millis(800), peer.messages.recv()).await
    {
        let buffer = DataBuffer::decode(bytes).unwrap();
        let Some(DataType::Json(json)) = buffer.data_type else {
            panic!("unexpected data channel message {buffer:?}")
        };
        assert_eq!(json.schema_type, "vad");
        let v: serde_json::Value = serde_json::from_str(&json.json_payload).unwrap();
        events.push((
            v["event"].as_str().unwrap().to_owned(),
            v["timestamp_ms"].as_u64().unwrap(),
        ));
    }
    println!("speech {speech_ms} ms; events {events:?}");

    let [(start_kind, start), (end_kind, end)] = &events[..] else {
        panic!("expected exactly one speech_start and one speech_end, got {events:?}")
    };
    assert_eq!(
        (start_kind.as_str(), end_kind.as_str()),
        ("speech_start", "speech_end")
    );
    let (true_start, true_end) = (1000, 1000 + speech_ms);
    assert!(
        start.abs_diff(true_start) <= 100,
        "speech_start at {start} ms, truth {true_start}"
    );
    assert!(
        end.abs_diff(true_end) <= MIN_SILENCE_MS + 100,
        "speech_end at {end} ms, truth {true_end}"
    );

    let returned = peer.received.lock().samples.len();
    assert!(
        returned >= 2 * 48_000,
        "only {returned} samples of audio came back"
    );
    peer.close().await;
    server.stop().await;
}
