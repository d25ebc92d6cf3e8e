//! A real client sends a 440 Hz tone to the loopback pipeline and gets it back.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::media::{dominant_frequency, rms_dbfs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_440_hz_tone_comes_back_at_440_hz_and_the_same_level() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "tone-client").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    println!(
        "offer->answer {:.1} ms, offer->connected {:.1} ms",
        report.offer_to_answer.as_secs_f64() * 1000.0,
        report.offer_to_connected.as_secs_f64() * 1000.0
    );

    let amplitude = 0.5;
    peer.send_tone(440.0, 2.0, 20, amplitude).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let received = peer.received.lock();
    // Two seconds were sent; allow for the connection's start-up and the last frames in flight.
    assert!(
        received.samples.len() >= 48_000,
        "only {} samples came back",
        received.samples.len()
    );
    // Skip the codec's start-up, analyse one second of steady tone.
    let steady = &received.samples[9_600..9_600 + 48_000];
    let frequency = dominant_frequency(steady, 48_000);
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "dominant frequency {frequency} Hz"
    );
    let sent_dbfs = 20.0 * (amplitude / std::f32::consts::SQRT_2).log10();
    let level = rms_dbfs(steady);
    assert!(
        (level - sent_dbfs).abs() <= 6.0,
        "level {level:.1} dBFS, sent {sent_dbfs:.1} dBFS"
    );
}
