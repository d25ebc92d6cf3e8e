//! Outbound audio is paced in real time: 20 ms apart, timestamps +960, rtpmap opus/48000/2;
//! clients sending 40 or 60 ms packets get their audio back too.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::media::dominant_frequency;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_rtp_is_paced_every_20_ms_with_960_sample_timestamps() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "pacing").await;
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    let answer = peer.pc.remote_description().await.unwrap().sdp;
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("a=rtpmap:") && l.ends_with("opus/48000/2")),
        "answer has no opus/48000/2 rtpmap:\n{answer}"
    );

    peer.send_tone(440.0, 3.0, 20, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let received = peer.received.lock();
    assert!(
        received.arrivals.len() >= 120,
        "{} packets came back",
        received.arrivals.len()
    );
    let mut gaps: Vec<f64> = received
        .arrivals
        .windows(2)
        .skip(5)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let (low, high) = (percentile(&gaps, 0.025), percentile(&gaps, 0.975));
    println!(
        "inter-arrival 2.5%={low:.2} ms 50%={:.2} ms 97.5%={high:.2} ms",
        percentile(&gaps, 0.5)
    );
    assert!(
        low >= 15.0 && high <= 25.0,
        "95% of gaps must lie in 20±5 ms: {low:.2}..{high:.2}"
    );
    for pair in received.timestamps.windows(2) {
        assert_eq!(
            pair[1].wrapping_sub(pair[0]),
            960,
            "timestamps advance by 960"
        );
    }
}

async fn tone_comes_back_with_packets_of(packet_ms: u32) {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) =
        SignalingClient::announce(&server.grpc_url(), &format!("ptime-{packet_ms}")).await;
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    peer.send_tone(440.0, 1.5, packet_ms, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let received = peer.received.lock();
    assert!(
        received.samples.len() >= 48_000,
        "{} samples back",
        received.samples.len()
    );
    let steady = &received.samples[9_600..9_600 + 38_400];
    let frequency = dominant_frequency(steady, 48_000);
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "{packet_ms} ms packets: {frequency} Hz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_ms_packets_come_back() {
    tone_comes_back_with_packets_of(40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_ms_packets_come_back() {
    tone_comes_back_with_packets_of(60).await;
}
