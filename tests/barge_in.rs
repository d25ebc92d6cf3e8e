//! Barge-in over a real call to `examples/voice_echo.yaml` (its speech node given a keyword
//! list, as in tests/stt.rs): the client types a long text, the server speaks it; while it
//! speaks, the client says "front center" (Debian's recorded `Front_Center.wav`). The server's
//! speech stops within 300 ms of the client's speech onset, measured on the returned track
//! (onset: when the client sent its first loud packet), `{"type":"interrupted"}` comes on the
//! data channel, and the rest of the typed text is never spoken: after the cut the track is
//! silent until the turn's end, and then only the short reply ("front center") is heard.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client::connect_with_data_channel;
use common::data_channel::json_messages;
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::media::rms;
use remotemedia_webrtc::pipeline::{Envelope, RuntimeData};

const FRONT_CENTER: &str = "/usr/share/sounds/alsa/Front_Center.wav";
/// A 20 ms window louder than this is sound; quieter is silence (Opus' silence and comfort
/// noise are far below, speech far above).
const SILENCE_RMS: f32 = 0.01;
/// The contract: the server's speech stops this soon after the caller's onset.
const BARGE_IN_LIMIT: Duration = Duration::from_millis(300);
/// Silence the client sends before it speaks: the server is well into the long text by then.
const LEAD_MS: usize = 3_000;
/// About 20 s of speech at 175 words per minute.
const LONG_TEXT: &str = "This is a long answer that the server reads aloud. \
    It goes on for many sentences, so that there is plenty left to say. \
    Nobody should hear the end of it, because the caller will interrupt. \
    When the caller speaks, the server stops talking and drops this text. \
    If you can hear this sentence, barge in did not work. \
    Neither should anyone hear this one, nor the one after it. \
    The end of a long answer that was never meant to be heard.";

/// `examples/voice_echo.yaml` with a keyword list instead of the language model (fast and
/// exact for a known phrase), written to a file of this test.
fn keyword_manifest() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/voice_echo.yaml")).unwrap();
    let lm = "      languageModel: /usr/share/pocketsphinx/model/en-us/en-us.lm.bin\n";
    assert!(
        text.contains(lm),
        "voice_echo.yaml names its language model"
    );
    assert!(text.contains("bargeIn: true"), "voice_echo.yaml barges in");
    let text = text.replace(lm, "      keywords: [front center, rear left]\n");
    let path = std::env::temp_dir().join(format!("barge_in_{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Front_Center.wav (16-bit mono, 48 kHz) as samples.
fn front_center() -> Vec<f32> {
    let reader = hound::WavReader::open(FRONT_CENTER).expect("alsa-utils' Front_Center.wav");
    assert_eq!(reader.spec().sample_rate, 48_000);
    reader
        .into_samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_speech_stops_the_servers_within_300_ms() {
    common::init_tracing();
    let manifest = keyword_manifest();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let (_signaling, mut peer, channel) =
        connect_with_data_channel(&server.grpc_url(), "barge-in-client").await;
    let _ = std::fs::remove_file(&manifest);

    // The client's microphone: silence, the phrase, silence; its onset is the first loud
    // 20 ms packet of the phrase.
    let phrase = front_center();
    let first_loud = phrase
        .chunks(960)
        .position(|w| rms(w) > SILENCE_RMS)
        .unwrap();
    let mut mic = vec![0.0; 48 * LEAD_MS];
    mic.extend(&phrase);
    mic.extend(vec![0.0; 48 * 2_500]);
    let onset_packet = LEAD_MS / 20 + first_loud;

    let text = Envelope::new(RuntimeData::Text {
        text: LONG_TEXT.into(),
        language: "en".into(),
    })
    .into_data_buffer()
    .encode_to_vec();
    let received_before = peer.received.lock().arrivals.len();
    let (_, mut inbox) = tokio::sync::mpsc::channel(1);
    std::mem::swap(&mut inbox, &mut peer.messages);
    let sent = Instant::now();
    channel.send(&bytes::Bytes::from(text)).await.unwrap();
    let (onset, messages) = tokio::join!(
        peer.send_samples_noting(&mic, 20, onset_packet),
        json_messages(
            &mut inbox,
            Instant::now() + Duration::from_secs(20),
            |got| { got.iter().any(|(schema, _, _)| schema == "turn") }
        )
    );
    let onset = onset.unwrap();
    let summary: Vec<String> = messages
        .iter()
        .map(|(schema, value, at)| {
            let ms = at.saturating_duration_since(onset).as_millis();
            format!("{schema}: {value} (onset + {ms} ms)")
        })
        .collect();
    // Asserted after the track's energy, which is what the contract is about.
    let interrupted_at = messages
        .iter()
        .find(|(schema, value, _)| schema == "interrupted" && value["type"] == "interrupted")
        .map(|(_, _, at)| *at);
    let (_, turn, turn_at) = messages
        .iter()
        .find(|(schema, _, _)| schema == "turn")
        .unwrap_or_else(|| panic!("no turn end: {summary:#?}"));
    assert!(turn["text"].as_str().unwrap().contains("front center"));
    // The reply to the turn ("front center"), then a second of silence.
    let heard_after_turn = |received: &common::client::ReceivedAudio| {
        packets(received, received_before)
            .filter(|(at, loud)| *at > *turn_at && *loud)
            .count()
    };
    let mut last = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "speech never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = heard_after_turn(&peer.received.lock());
        if now > last {
            last = now;
            quiet_since = Instant::now();
        }
    }

    let packets: Vec<(Instant, bool)> = {
        let received = peer.received.lock();
        packets(&received, received_before).collect()
    };
    let loud_ms = |from: Instant, to: Instant| {
        packets
            .iter()
            .filter(|(at, loud)| *loud && *at >= from && *at < to)
            .count()
            * 20
    };
    let first_heard = packets.iter().find(|(_, loud)| *loud).unwrap().0;
    // The server was speaking when the client began: speech in the 300 ms before the onset.
    let before_onset = loud_ms(onset - Duration::from_millis(300), onset);
    // The cut: the last loud packet from the onset to the turn's end.
    let last_loud = packets
        .iter()
        .filter(|(at, loud)| *loud && *at >= onset && at < turn_at)
        .map(|(at, _)| *at)
        .max();
    let cut = last_loud.map_or(Duration::ZERO, |at| at - onset + Duration::from_millis(20));
    let after_cut = loud_ms(onset + BARGE_IN_LIMIT, *turn_at);
    let reply = loud_ms(*turn_at, Instant::now());
    println!(
        "server speech from {:?} after the text; client onset {:?} after it; server speech \
         stopped {cut:?} after the onset (interrupted message {:?} after it); {before_onset} ms \
         of speech in the 300 ms before the onset, {after_cut} ms from onset + 300 ms to the turn \
         end ({:?} after the onset), {reply} ms of reply",
        first_heard - sent,
        onset - sent,
        interrupted_at.map(|at| at.saturating_duration_since(onset)),
        turn_at.saturating_duration_since(onset),
    );
    assert!(
        before_onset >= 100,
        "the server was not speaking when the client began ({before_onset} ms): {summary:#?}"
    );
    assert!(
        cut <= BARGE_IN_LIMIT,
        "the server's speech went on for {cut:?} after the caller's onset: {summary:#?}"
    );
    assert_eq!(after_cut, 0, "speech after the cut");
    let interrupted_at =
        interrupted_at.unwrap_or_else(|| panic!("no interrupted message: {summary:#?}"));
    assert!(
        interrupted_at > onset && interrupted_at.duration_since(onset) < BARGE_IN_LIMIT,
        "interrupted {:?} after the onset",
        interrupted_at.saturating_duration_since(onset)
    );
    // The reply is "front center" alone (well under 2 s), never the rest of the long text.
    assert!(
        (200..2_000).contains(&reply),
        "{reply} ms of speech after the turn"
    );
    peer.close().await;
}

/// Every packet the client received since packet `from`: when it came and whether it was
/// loud. The server sends 20 ms packets, so packet `i` is samples `960 i..960 (i + 1)`.
fn packets(
    received: &common::client::ReceivedAudio,
    from: usize,
) -> impl Iterator<Item = (Instant, bool)> + '_ {
    assert_eq!(received.samples.len(), received.arrivals.len() * 960);
    received.arrivals[from..]
        .iter()
        .zip(received.samples[from * 960..].chunks(960))
        .map(|(at, window)| (*at, rms(window) > SILENCE_RMS))
}
