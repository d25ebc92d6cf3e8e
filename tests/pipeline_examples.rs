//! Every example manifest in `examples/` loads, builds and does what its comment says when
//! audio, text or JSON is pushed through `Pipeline::start` (no WebRTC here).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;

use remotemedia_webrtc::media::{dominant_frequency, sine};
use remotemedia_webrtc::pipeline::{Envelope, Manifest, Pipeline, RuntimeData};
use remotemedia_webrtc::proto::common as pb;

mod common;
use common::pipeline::{frames, run};

fn load(name: &str) -> Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    Pipeline::new(Manifest::load(&path).unwrap()).unwrap()
}

fn audio_of(out: &[Envelope]) -> (Vec<f32>, Vec<u32>) {
    let mut samples = Vec::new();
    let mut rates = Vec::new();
    for e in out {
        if let RuntimeData::Audio(f) = &e.data {
            samples.extend_from_slice(&f.samples);
            rates.push(f.sample_rate);
        }
    }
    (samples, rates)
}

fn json_of(out: &[Envelope]) -> Vec<(String, serde_json::Value)> {
    out.iter()
        .filter_map(|e| match &e.data {
            RuntimeData::Json {
                payload,
                schema_type,
            } => Some((schema_type.clone(), serde_json::from_str(payload).unwrap())),
            _ => None,
        })
        .collect()
}

/// A buzzy voice-like signal (harmonics of 150 Hz, syllable envelope) the GMM VAD calls speech.
fn voice(ms: usize) -> Vec<f32> {
    let n = 48 * ms;
    (0..n)
        .map(|i| {
            let t = i as f32 / 48_000.0;
            let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let v: f32 = (1..=12)
                .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                .sum();
            0.25 * env * v
        })
        .collect()
}

fn silence_voice_silence(voice_ms: usize) -> Vec<f32> {
    let mut a = vec![0.0; 48_000];
    a.extend(voice(voice_ms));
    a.extend(vec![0.0; 48_000]);
    a
}

#[tokio::test]
async fn loopback_and_passthrough_return_the_input() {
    for name in ["loopback.yaml", "passthrough.yaml"] {
        let input = frames(&sine(440.0, 48_000, 9600, 0.5));
        let out = run(&load(name), input.clone()).await;
        assert_eq!(out, input, "{name}");
    }
}

#[tokio::test]
async fn vad_returns_the_audio_and_one_speech_segment() {
    let input = silence_voice_silence(1000);
    let out = run(&load("vad.yaml"), frames(&input)).await;
    let (audio, _) = audio_of(&out);
    assert_eq!(audio, input);
    let events = json_of(&out);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(schema, _)| schema == "vad"));
    assert_eq!(events[0].1["event"], "speech_start");
    assert_eq!(events[1].1["event"], "speech_end");
    let start = events[0].1["timestamp_ms"].as_u64().unwrap();
    let end = events[1].1["timestamp_ms"].as_u64().unwrap();
    assert!(start.abs_diff(1000) <= 100, "start {start}");
    assert!(end.abs_diff(2000) <= 400, "end {end}");
}

#[tokio::test]
async fn resample_16k_round_trip_keeps_pitch_rate_and_length() {
    let input = sine(440.0, 48_000, 48_000, 0.5);
    let out = run(&load("resample_16k.yaml"), frames(&input)).await;
    let (audio, rates) = audio_of(&out);
    assert!(rates.iter().all(|&r| r == 48_000));
    assert!(audio.len().abs_diff(input.len()) <= 6, "{}", audio.len());
    let f = dominant_frequency(&audio[4800..43_200], 48_000);
    assert!((f - 440.0).abs() <= 2.0, "{f} Hz");
}

#[tokio::test]
async fn text_sentences_joins_fragments() {
    let parts = ["Hello wor", "ld. How are", " you? Fine", " thanks"];
    let input = parts
        .iter()
        .map(|t| {
            Envelope::new(RuntimeData::Text {
                text: (*t).into(),
                language: String::new(),
            })
        })
        .collect();
    let out = run(&load("text_sentences.yaml"), input).await;
    let got: Vec<_> = out
        .iter()
        .filter_map(|e| match &e.data {
            RuntimeData::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(got, ["Hello world.", "How are you?", "Fine thanks"]);
}

#[tokio::test]
async fn calculator_answers_and_survives_division_by_zero() {
    let json = |p: &str| {
        Envelope::new(RuntimeData::Json {
            payload: p.into(),
            schema_type: String::new(),
        })
    };
    let input = vec![
        json(r#"{"operation":"add","operands":[2,3]}"#),
        json(r#"{"operation":"divide","operands":[1,0]}"#),
        json(r#"{"operation":"multiply","operands":[4,2.5]}"#),
    ];
    let out = json_of(&run(&load("calculator.yaml"), input).await);
    let results: Vec<_> = out
        .iter()
        .map(|(_, v)| v["result"].as_f64().unwrap())
        .collect();
    assert_eq!(results, [5.0, 10.0]);
}

#[tokio::test]
async fn vad_bidirectional_forwards_audio_and_cancels_a_short_segment() {
    // A 120 ms blip (speech for the VAD, too short for the gate), then 1 s of real speech.
    let mut input = vec![0.0; 24_000];
    input.extend(voice(120));
    input.extend(vec![0.0; 24_000]);
    input.extend(voice(1000));
    input.extend(vec![0.0; 24_000]);
    let out = run(&load("vad_bidirectional.yaml"), frames(&input)).await;
    let (audio, rates) = audio_of(&out);
    assert!(rates.iter().all(|&r| r == 48_000));
    assert!(
        audio.len().abs_diff(input.len()) <= 12,
        "{} vs {}",
        audio.len(),
        input.len()
    );
    let cancels: Vec<_> = out
        .iter()
        .filter_map(|e| match &e.data {
            RuntimeData::Control(pb::ControlMessage {
                message_type: Some(pb::control_message::MessageType::CancelSpeculation(c)),
                ..
            }) => Some((c.from_timestamp, c.to_timestamp)),
            _ => None,
        })
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    let (from, to) = cancels[0];
    // The blip is at 500..620 ms: lookback 150 and lookahead 50 widen it.
    assert!((300..=500).contains(&from), "from {from}");
    assert!((620..=900).contains(&to), "to {to}");
}

#[test]
fn bad_params_are_rejected_at_build_naming_node_and_param() {
    let cases = [
        ("FastResampleNode", "{}", "params.targetRate: is required"),
        ("AudioChunkerNode", "{chunkSize: many}", "params.chunkSize"),
        ("VADNode", "{minSilenceMs: -5}", "params.minSilenceMs"),
        ("SileroVADNode", "{threshold: 1.5}", "params.threshold"),
        (
            "SpeculativeVADGate",
            "{lookahead_ms: x}",
            "params.lookaheadMs",
        ),
        (
            "TextCollectorNode",
            "{minSentenceLength: [1]}",
            "params.minSentenceLength",
        ),
        (
            "SpeechToTextNode",
            "{model: /nonexistent/acoustic-model}",
            "params.model: pocketsphinx: acoustic model directory \
             `/nonexistent/acoustic-model` does not exist",
        ),
        (
            "SpeechToTextNode",
            "{engine: whisper}",
            "params.engine: unknown engine `whisper`",
        ),
        ("TurnDetectorNode", "{hangoverMs: -1}", "params.hangoverMs"),
    ];
    for (node_type, params, expect) in cases {
        let text = format!(
            "version: v1\nmetadata: {{name: bad}}\nnodes:\n  - {{id: n7, node_type: {node_type}, params: {params}}}\nconnections: []\n"
        );
        let err = Pipeline::new(Manifest::parse(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node `n7`") && err.contains(expect),
            "{node_type}: {err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn tts_speaks_a_text_sentence_by_sentence_in_20_ms_frames() {
    // Paused time: play-out runs on ticks, the engine (espeak-ng) on the offload pool.
    let tts = load("tts.yaml");
    let text = |s: &str| {
        Envelope::new(RuntimeData::Text {
            text: s.into(),
            language: "en".into(),
        })
    };
    let started = tokio::time::Instant::now();
    let out = run(&tts, vec![text("One sentence here. And a second one.")]).await;
    let played = started.elapsed();
    let (samples, rates) = audio_of(&out);
    assert!(rates.iter().all(|&r| r == 48_000));
    assert!(out.iter().all(
        |e| matches!(&e.data, RuntimeData::Audio(f) if f.samples.len() == 960 && f.channels == 1)
    ));
    let seconds = samples.len() as f64 / 48_000.0;
    assert!((1.2..5.0).contains(&seconds), "{seconds} s of speech");
    assert!(remotemedia_webrtc::media::rms(&samples) > 0.02);
    // Played in real time: the session lasts as long as its speech (less the 40 ms lead).
    assert!(
        played.as_secs_f64() >= seconds - 0.1,
        "{seconds} s of speech played in {played:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_echo_transcribes_ends_the_turn_and_speaks_it_back() {
    // Real time: decoding runs on the offload pool's threads while the turn's hangover runs on
    // the runtime's clock. Debian's recorded "front center" (alsa-utils), free speech (the
    // language model).
    let wav = std::fs::read("/usr/share/sounds/alsa/Front_Center.wav")
        .expect("alsa-utils' Front_Center.wav (make deps)");
    let reader = hound::WavReader::new(wav.as_slice()).unwrap();
    let mut input = vec![0.0f32; 48_000 / 2];
    input.extend(
        reader
            .into_samples::<i16>()
            .map(|s| f32::from(s.unwrap()) / 32_768.0),
    );
    input.extend(vec![0.0f32; 48_000]);
    let out = run(&load("voice_echo.yaml"), frames(&input)).await;
    let json = json_of(&out);
    let finals: Vec<_> = json
        .iter()
        .filter(|(schema, v)| schema == "transcript" && v["final"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "{json:?}");
    let text = finals[0].1["text"].as_str().unwrap();
    // Free speech (the language model) measured "friend center" here.
    assert!(text.contains("center"), "`{text}`");
    let turn = json
        .iter()
        .find(|(schema, _)| schema == "turn")
        .expect("a turn_end");
    assert_eq!(turn.1["type"], "turn_end");
    assert_eq!(turn.1["text"], text);
    let (samples, _) = audio_of(&out);
    assert!(
        samples.len() >= 48_000 / 2 && remotemedia_webrtc::media::rms(&samples) > 0.02,
        "the turn is spoken back: {} samples",
        samples.len()
    );
}
