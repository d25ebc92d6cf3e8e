//! A real client sends a 440 Hz tone through `examples/resample_16k.yaml` (48 kHz → 16 kHz →
//! 48 kHz) and gets it back at 440 Hz: the FastResampleNode round trip keeps the pitch.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::media::dominant_frequency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_440_hz_tone_comes_back_at_440_hz_through_16_khz() {
    common::init_tracing();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resample_16k.yaml");
    let server = TestServer::start_with(|c| c.manifest = Some(manifest)).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "resample-client").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;

    peer.send_tone(440.0, 2.0, 20, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let samples = peer.received.lock().samples.clone();
    assert!(
        samples.len() >= 48_000,
        "only {} samples came back",
        samples.len()
    );
    let steady = &samples[9_600..9_600 + 38_400];
    let frequency = dominant_frequency(steady, 48_000);
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "dominant frequency {frequency} Hz"
    );
    peer.close().await;
    server.stop().await;
}
