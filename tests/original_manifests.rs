//! The original's manifests: its example files (copied into `examples/original/` and
//! `tests/data/original/`) load, its node names of nodes we have run ours, and its nodes we do
//! not have fail at load naming the node and what to use instead.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};

use remotemedia_webrtc::media::sine;
use remotemedia_webrtc::pipeline::{
    Envelope, Manifest, Pipeline, PipelineCatalog, RuntimeData, NODE_ALIASES,
};

mod common;
use common::pipeline::{frames, run};

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn audio_of(out: &[Envelope]) -> (usize, Vec<u32>) {
    let mut len = 0;
    let mut rates = Vec::new();
    for e in out {
        if let RuntimeData::Audio(f) = &e.data {
            len += f.samples.len();
            rates.push(f.sample_rate);
        }
    }
    (len, rates)
}

#[tokio::test]
async fn the_original_loopback_files_load_and_return_the_input() {
    for file in [
        "examples/original/loopback.json",
        "examples/original/loopback.yaml",
    ] {
        let manifest = Manifest::load(&path(file)).unwrap();
        // loopback.yaml has no version: taken as v1; loopback.json says "1.0".
        assert!(["v1", "1.0"].contains(&manifest.version.as_str()), "{file}");
        let input = frames(&sine(440.0, 48_000, 4800, 0.5));
        let out = run(&Pipeline::new(manifest).unwrap(), input.clone()).await;
        assert_eq!(out, input, "{file}");
    }
    let yaml = Manifest::load(&path("examples/original/loopback.yaml")).unwrap();
    assert_eq!(yaml.version, "v1");
}

#[tokio::test]
async fn the_original_vad_bidirectional_json_loads_and_returns_48k_audio() {
    let manifest = Manifest::load(&path("examples/original/vad_bidirectional.json")).unwrap();
    assert_eq!(manifest.nodes.len(), 6);
    let pipeline = Pipeline::new(manifest).unwrap();
    let input = sine(300.0, 48_000, 48_000, 0.3);
    let out = run(&pipeline, frames(&input)).await;
    let (len, rates) = audio_of(&out);
    assert!(
        !rates.is_empty() && rates.iter().all(|&r| r == 48_000),
        "{rates:?}"
    );
    // Its confirmation VAD passes audio through too (as the original's did), so the gate gets
    // the chunker's audio and the VAD's: at least the input comes back.
    assert!(len + 12 >= input.len(), "{len} < {}", input.len());
}

#[test]
fn a_directory_of_the_original_files_is_a_catalog() {
    // loopback.json and loopback.yaml share a stem, so load the one that differs from ours.
    let dir = std::env::temp_dir().join(format!("rm-original-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["loopback.json", "vad_bidirectional.json"] {
        std::fs::copy(path("examples/original").join(file), dir.join(file)).unwrap();
    }
    let catalog = PipelineCatalog::load(None, Some(&dir)).unwrap();
    assert_eq!(
        catalog.names().collect::<Vec<_>>(),
        ["loopback", "vad_bidirectional"]
    );
}

fn manifest_with(node_type: &str, params: &str) -> Manifest {
    Manifest::parse(&format!(
        r#"{{"version": "v1", "nodes": [{{"id": "n", "node_type": "{node_type}", "params": {params}}}]}}"#
    ))
    .unwrap()
}

/// A buzzy voice-like signal (harmonics of 150 Hz, syllable envelope) the GMM VAD calls speech.
fn voice(ms: usize) -> Vec<f32> {
    (0..48 * ms)
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

fn vad_events(out: &[Envelope]) -> Vec<String> {
    out.iter()
        .filter_map(|e| match &e.data {
            RuntimeData::Json { payload, .. } => {
                let v: serde_json::Value = serde_json::from_str(payload).unwrap();
                Some(v["event"].as_str().unwrap().to_owned())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn rust_vad_node_runs_our_vad_node() {
    let mut input = vec![0.0; 48_000];
    input.extend(voice(1000));
    input.extend(vec![0.0; 48_000]);
    // The original's RustVADNode params (sample_rate, frame_duration_ms, energy_threshold)
    // are accepted and ignored.
    let original = Pipeline::new(manifest_with(
        "RustVADNode",
        r#"{"sample_rate": 48000, "frame_duration_ms": 30, "energy_threshold": 0.01}"#,
    ))
    .unwrap();
    let ours = Pipeline::new(manifest_with("VADNode", "{}")).unwrap();
    let from_original = run(&original, frames(&input)).await;
    let from_ours = run(&ours, frames(&input)).await;
    assert_eq!(vad_events(&from_original), ["speech_start", "speech_end"]);
    assert_eq!(from_original, from_ours);
}

#[tokio::test]
async fn every_alias_builds_and_does_its_target_s_job() {
    let tone = frames(&sine(440.0, 48_000, 4800, 0.5));
    for name in ["PassThroughNode", "PassthroughNode"] {
        let out = run(
            &Pipeline::new(manifest_with(name, "{}")).unwrap(),
            tone.clone(),
        )
        .await;
        assert_eq!(out, tone, "{name}");
    }
    let resample = Pipeline::new(manifest_with(
        "RustResampleNode",
        r#"{"source_rate": 48000, "target_rate": 16000, "channels": 1}"#,
    ))
    .unwrap();
    let (len, rates) = audio_of(&run(&resample, tone).await);
    assert!(rates.iter().all(|&r| r == 16_000), "{rates:?}");
    assert!(len.abs_diff(1600) <= 32, "{len}");
    for (original, _) in NODE_ALIASES {
        let params = if *original == "RustResampleNode" {
            r#"{"targetRate": 16000}"#
        } else {
            "{}"
        };
        assert!(
            Pipeline::new(manifest_with(original, params)).is_ok(),
            "{original}"
        );
    }
}

#[test]
fn the_original_tts_manifest_fails_at_load_naming_the_node_and_ours() {
    let manifest = Manifest::load(&path("tests/data/original/tts.json")).unwrap();
    let err = Pipeline::new(manifest).err().unwrap().to_string();
    assert!(err.contains("`kokoro_tts`"), "{err}");
    assert!(err.contains("KokoroTTSNode"), "{err}");
    assert!(
        err.contains("text-to-speech node is TextToSpeechNode"),
        "{err}"
    );
    assert!(err.contains("examples/tts.yaml"), "{err}");
}

#[test]
fn python_backed_and_other_missing_nodes_say_what_to_use_instead() {
    let cases = [
        ("VibeVoiceTTSNode", "text-to-speech"),
        ("LFM2AudioNode", "speech-recognition"),
        ("WhisperSTT", "speech-recognition"),
        ("SimplePyTorchNode", "no Python nodes"),
        ("RemotePipelineNode", "--mode frontend"),
        ("VideoFlip", "does not decode video"),
        ("RustFormatConverterNode", "remove the node"),
        ("AudioTransform", "FastResampleNode"),
    ];
    for (node_type, advice) in cases {
        let err = Pipeline::new(manifest_with(node_type, "{}"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(node_type) && err.contains("not available here") && err.contains(advice),
            "{node_type}: {err}"
        );
    }
    // A name the original never had keeps the list of ours.
    let err = Pipeline::new(manifest_with("NoSuchNode", "{}"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown node_type") && err.contains("VADNode"),
        "{err}"
    );
}

#[test]
fn camel_case_node_keys_of_the_original_next_js_manifests_are_read() {
    // Its vad-s2s pipeline spells `nodeType` and `isStreaming`; it parses, and fails only at
    // its speech-recognition node.
    let manifest = Manifest::load(&path("tests/data/original/vad-s2s-pipeline.json")).unwrap();
    assert_eq!(manifest.nodes[0].node_type, "AudioChunkerNode");
    assert!(manifest.nodes[0].is_streaming);
    let err = Pipeline::new(manifest).err().unwrap().to_string();
    assert!(
        err.contains("`lfm2_audio`") && err.contains("LFM2AudioNode"),
        "{err}"
    );
}

#[test]
fn the_server_refuses_the_original_tts_manifest_with_the_advice() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args([
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
        ])
        .args(["--ice-ips", "127.0.0.1", "--manifest"])
        .arg(path("tests/data/original/tts.json"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tts.json") && stderr.contains("KokoroTTSNode"),
        "{stderr}"
    );
    assert!(stderr.contains("text-to-speech"), "{stderr}");
}
