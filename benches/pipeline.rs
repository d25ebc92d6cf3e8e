//! Pipeline overhead per 20 ms frame: `cargo bench --bench pipeline`.
//!
//! For each manifest, starts a session, pushes N frames of 48 kHz mono audio (speech-like, so
//! the VAD works), drains the output and prints µs per frame. A plain timing loop (no criterion)
//! so it builds with the project's dependencies only.

#![allow(clippy::unwrap_used)] // a bench that fails should stop loudly

use std::path::Path;
use std::time::Instant;

use remotemedia_webrtc::pipeline::{AudioFrame, Envelope, Manifest, Pipeline, RuntimeData};

const FRAMES: usize = 3000; // 60 s of audio
const ROUNDS: usize = 3;

fn frame(i: usize) -> Envelope {
    let samples = (0..960)
        .map(|k| {
            let t = (i * 960 + k) as f32 / 48_000.0;
            // Alternating seconds of a voice-like buzz and silence.
            if (i / 50).is_multiple_of(2) {
                (1..=8)
                    .map(|h| (std::f32::consts::TAU * 150.0 * h as f32 * t).sin() / h as f32)
                    .sum::<f32>()
                    * 0.2
            } else {
                0.0
            }
        })
        .collect();
    Envelope::new(RuntimeData::Audio(AudioFrame {
        samples,
        sample_rate: 48_000,
        channels: 1,
    }))
}

async fn once(pipeline: &Pipeline, inputs: &[Envelope]) -> f64 {
    let inputs = inputs.to_vec();
    let started = Instant::now();
    let (outputs, _) = pipeline.run_to_end(inputs).await.unwrap();
    let elapsed = started.elapsed();
    assert!(!outputs.is_empty());
    elapsed.as_secs_f64() * 1e6 / FRAMES as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inputs: Vec<Envelope> = (0..FRAMES).map(frame).collect();
    for name in [
        "loopback.yaml",
        "passthrough.yaml",
        "vad.yaml",
        "resample_16k.yaml",
        "vad_bidirectional.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let pipeline = Pipeline::new(Manifest::load(&path).unwrap()).unwrap();
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            best = best.min(runtime.block_on(once(&pipeline, &inputs)));
        }
        println!("{name:<24} {best:>8.2} µs per 20 ms frame (best of {ROUNDS}, {FRAMES} frames)");
    }
}
