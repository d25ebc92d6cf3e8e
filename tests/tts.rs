//! A real client talks to `examples/tts.yaml`: it sends text on the data channel and gets the
//! server's speech back on its audio track (espeak-ng on the offload pool, `make deps`
//! installs it): speech-band energy, for about as long as the text takes to say, starting
//! soon after the text was sent.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::client::connect_with_data_channel;
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::media::{band_energy_ratio, rms};
use remotemedia_webrtc::pipeline::{Envelope, RuntimeData};

/// 20 ms windows louder than this count as speech (the codec's silence is far below).
const SPEECH_RMS: f32 = 0.01;

/// Milliseconds of speech in `samples` (20 ms windows above [`SPEECH_RMS`]).
fn speech_ms(samples: &[f32]) -> usize {
    samples
        .chunks(960)
        .filter(|window| rms(window) > SPEECH_RMS)
        .count()
        * 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_on_the_data_channel_comes_back_as_speech() {
    common::init_tracing();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tts.yaml");
    let server = TestServer::start_with(|c| c.manifest = Some(manifest)).await;
    let (_signaling, peer, channel) =
        connect_with_data_channel(&server.grpc_url(), "tts-client").await;

    let text = "Hello from the server. This sentence is spoken by espeak.";
    let message = Envelope::new(RuntimeData::Text {
        text: text.into(),
        language: "en".into(),
    })
    .into_data_buffer()
    .encode_to_vec();
    let received_before = peer.received.lock().samples.len();
    let sent = Instant::now();
    channel.send(&bytes::Bytes::from(message)).await.unwrap();

    // The first speech arrives soon: the first sentence is synthesized alone.
    let first_speech = loop {
        let heard = {
            let received = peer.received.lock();
            speech_ms(&received.samples[received_before..]) > 0
        };
        if heard {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "no speech came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Then all of it, in real time: until 600 ms pass without speech.
    let mut quiet_since = Instant::now();
    let mut heard = 0;
    while quiet_since.elapsed() < Duration::from_millis(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now_heard = speech_ms(&peer.received.lock().samples[received_before..]);
        if now_heard > heard {
            heard = now_heard;
            quiet_since = Instant::now();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "speech never ended"
        );
    }
    let samples = peer.received.lock().samples[received_before..].to_vec();
    let speech_band = band_energy_ratio(&samples, 48_000, 300.0, 3400.0);
    println!(
        "first speech {first_speech:?} after sending; {heard} ms of speech; \
         {:.0}% of the energy in 300-3400 Hz",
        speech_band * 100.0
    );
    // Ten words at 175 words per minute, with a pause between the sentences: about 3.5 s.
    assert!((2_000..6_000).contains(&heard), "{heard} ms of speech");
    assert!(speech_band > 0.5, "speech band energy {speech_band}");
    assert!(
        first_speech < Duration::from_millis(1_000),
        "first speech after {first_speech:?}"
    );
    peer.close().await;
}
