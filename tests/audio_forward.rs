//! `media.audio: forward`: the client's Opus RTP comes back without transcoding (its 40 ms
//! packets stay 40 ms packets), at the pitch it was sent.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::TestServer;
use remotemedia_webrtc::media::dominant_frequency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_audio_keeps_the_clients_packets() {
    common::init_tracing();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/forward.yaml");
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.into())).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "forwarded").await;
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    peer.send_tone(440.0, 1.2, 40, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let received = peer.received.lock();
    assert!(
        received.timestamps.len() >= 25,
        "{} packets back",
        received.timestamps.len()
    );
    for pair in received.timestamps.windows(2) {
        assert_eq!(
            pair[1].wrapping_sub(pair[0]),
            1920,
            "40 ms packets come back as 40 ms packets (a transcoder would send 20 ms)"
        );
    }
    let steady = &received.samples[9_600..9_600 + 38_400];
    let frequency = dominant_frequency(steady, 48_000);
    assert!((frequency - 440.0).abs() <= 5.0, "{frequency} Hz");
}
