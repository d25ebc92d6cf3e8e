//! A real client talks to `examples/voice_echo.yaml` (its speech node given a keyword list):
//! it says "front center" (Debian's recorded `Front_Center.wav`, alsa-utils) on its audio
//! track and gets the final transcript with those words on the data channel, then the turn's
//! end, then the server's speech repeating it on the audio track. pocketsphinx decodes on the
//! offload pool; `make deps` installs it, its en-us model, espeak-ng and alsa-utils.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client::connect_with_data_channel;
use common::data_channel::json_messages;
use common::TestServer;
use remotemedia_webrtc::media::rms;

const FRONT_CENTER: &str = "/usr/share/sounds/alsa/Front_Center.wav";

/// `examples/voice_echo.yaml` with a keyword list instead of the language model, written to a
/// file of this test.
fn keyword_manifest() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/voice_echo.yaml")).unwrap();
    let lm = "      languageModel: /usr/share/pocketsphinx/model/en-us/en-us.lm.bin\n";
    assert!(
        text.contains(lm),
        "voice_echo.yaml names its language model"
    );
    let text = text.replace(
        lm,
        "      keywords: [front center, rear left, side right]\n",
    );
    let path = std::env::temp_dir().join(format!("voice_echo_kws_{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A 16-bit mono WAV as 48 kHz samples (Front_Center.wav is 48 kHz).
fn wav_48k(path: &str) -> Vec<f32> {
    let reader = hound::WavReader::open(path).expect("alsa-utils' Front_Center.wav (make deps)");
    assert_eq!(reader.spec().sample_rate, 48_000);
    assert_eq!(reader.spec().channels, 1);
    reader
        .into_samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_phrase_comes_back_as_a_transcript_a_turn_and_speech() {
    common::init_tracing();
    let manifest = keyword_manifest();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let (_signaling, mut peer, _channel) =
        connect_with_data_channel(&server.grpc_url(), "stt-client").await;

    let mut speech = vec![0.0; 48 * 500];
    speech.extend(wav_48k(FRONT_CENTER));
    let spoken_until = Instant::now() + Duration::from_millis(500 + 1_430);
    speech.extend(vec![0.0; 48 * 2_000]);
    let received_before = peer.received.lock().samples.len();
    // Sent in real time while the messages are read.
    let (_, mut inbox) = tokio::sync::mpsc::channel(1);
    std::mem::swap(&mut inbox, &mut peer.messages);
    let ((), messages) = tokio::join!(
        peer.send_samples(&speech, 20),
        json_messages(
            &mut inbox,
            Instant::now() + Duration::from_secs(15),
            |got| got.iter().any(|(schema, _, _)| schema == "turn"),
        )
    );
    let _ = std::fs::remove_file(&manifest);

    let finals: Vec<_> = messages
        .iter()
        .filter(|(schema, v, _)| schema == "transcript" && v["final"] == true)
        .collect();
    assert!(!finals.is_empty(), "no final transcript: {messages:?}");
    let summary: Vec<String> = messages
        .iter()
        .map(|(schema, value, _)| format!("{schema}: {value}"))
        .collect();
    // The VAD may cut the phrase at the pause between its words (it did with minSilenceMs
    // 300): the finals of the turn together have the words.
    let text = finals
        .iter()
        .filter_map(|(_, v, _)| v["text"].as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("front center"),
        "final transcripts `{text}`; all: {summary:#?}"
    );
    let final_at = finals[finals.len() - 1].2;
    // The VAD's times: the phrase starts about 500 ms into the call and lasts about 1.4 s.
    let start = finals[0].1["start_ms"].as_u64().unwrap();
    let end = finals[finals.len() - 1].1["end_ms"].as_u64().unwrap();
    assert!((300..900).contains(&start), "start_ms {start}");
    assert!((1_500..2_600).contains(&end), "end_ms {end}");
    let (_, turn, _) = messages
        .iter()
        .find(|(schema, _, _)| schema == "turn")
        .expect("a turn_end");
    assert_eq!(turn["type"], "turn_end");
    assert!(turn["text"].as_str().unwrap().contains("front center"));
    let vad: Vec<_> = messages
        .iter()
        .filter(|(schema, _, _)| schema == "vad")
        .map(|(_, v, _)| v["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(vad.first().map(String::as_str), Some("speech_start"));

    // The server repeats it: speech on the audio track (the caller's own audio is not echoed).
    let heard = async {
        loop {
            let loud = {
                let received = peer.received.lock();
                received.samples[received_before..]
                    .chunks(960)
                    .filter(|w| rms(w) > 0.01)
                    .count()
            };
            if loud * 20 >= 400 {
                return loud * 20;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let speech_ms = tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .expect("the turn was not spoken back");
    println!(
        "final transcripts `{text}` ({start}..{end} ms, {} segments), the last {:?} after \
         the phrase ended; {speech_ms} ms of speech back",
        finals.len(),
        final_at.saturating_duration_since(spoken_until)
    );
    peer.close().await;
}
