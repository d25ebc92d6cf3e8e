//! The speech engines and the voice pipeline: `cargo bench --bench speech` (part of `make
//! bench`; pin it to one core with `taskset -c 0` for per-core figures).
//!
//! - **Synthesis** (espeak-ng as `TextToSpeechNode` runs it, `examples/tts.yaml`'s voice):
//!   real-time factor = wall time of the engine / duration of the speech it made (the node's
//!   play-out is paced in real time, so the engine is timed on its own).
//! - **Recognition** (pocketsphinx through `SpeechToTextNode`, `examples/voice_echo.yaml`'s VAD
//!   and speech node with its language model): wall time / audio duration, for Debian's
//!   recorded voices (`alsa-utils`) with pauses, fed as fast as the pipeline takes them.
//!   `1 / RTF` is how many sessions' recognition one core keeps up with.
//! - **Voice to voice** (`examples/voice_echo.yaml`, fed in real time, 20 ms frames): from the
//!   end of an utterance's audio to the first audio frame back with energy, p50/p95 over 20
//!   utterances.
//!
//! A plain timing loop (no criterion), like `benches/pipeline.rs`.

#![allow(clippy::unwrap_used)] // a bench that fails should stop loudly

use std::path::Path;
use std::time::{Duration, Instant};

use remotemedia_webrtc::pipeline::{AudioFrame, Envelope, Manifest, Pipeline, RuntimeData};
use tokio_util::sync::CancellationToken;

const RATE: u32 = 48_000;
const FRAME: usize = 960;
const RECORDINGS: [&str; 3] = ["Front_Center.wav", "Front_Left.wav", "Rear_Right.wav"];
const UTTERANCES: usize = 20;

fn recording(name: &str) -> Vec<f32> {
    let path = Path::new("/usr/share/sounds/alsa").join(name);
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, RATE, "{}", path.display());
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

fn frames(samples: &[f32]) -> Vec<Envelope> {
    samples
        .chunks(FRAME)
        .map(|chunk| {
            let mut samples = chunk.to_vec();
            samples.resize(FRAME, 0.0);
            Envelope::new(RuntimeData::Audio(AudioFrame {
                samples,
                sample_rate: RATE,
                channels: 1,
            }))
        })
        .collect()
}

fn manifest(name: &str) -> Manifest {
    Manifest::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

/// voice_echo.yaml's VAD and speech node alone.
fn recognition_manifest() -> Manifest {
    let mut manifest = manifest("voice_echo.yaml");
    manifest.nodes.retain(|n| n.id == "vad" || n.id == "stt");
    manifest
        .connections
        .retain(|c| c.from == "vad" && c.to == "stt");
    manifest
}

/// espeak-ng run as `TextToSpeechNode` runs it (one `--stdout` subprocess per sentence, its
/// voice params as in `examples/tts.yaml`); the node's play-out is paced in real time, so the
/// engine is timed here on its own.
fn synthesis() {
    let sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "A voice pipeline runs next to the media.",
        "It speaks one sentence while the next is synthesized.",
        "Nothing leaves the machine.",
    ];
    let mut wall = 0.0;
    let mut audio = 0.0;
    let mut first_ms = Vec::new();
    for _ in 0..5 {
        for sentence in sentences {
            let started = Instant::now();
            let output = std::process::Command::new("espeak-ng")
                .args([
                    "--stdout", "-b", "1", "-v", "en-us", "-s", "175", "-p", "50",
                ])
                .arg(sentence)
                .output()
                .unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            assert!(output.status.success(), "espeak-ng failed");
            // The header of a streamed WAV claims the largest length: count the samples.
            let mut reader = hound::WavReader::new(std::io::Cursor::new(output.stdout)).unwrap();
            let rate = f64::from(reader.spec().sample_rate);
            let samples = reader.samples::<i16>().take_while(Result::is_ok).count();
            let seconds = samples as f64 / rate;
            wall += elapsed;
            audio += seconds;
            first_ms.push(elapsed * 1e3);
        }
    }
    first_ms.sort_by(f64::total_cmp);
    println!(
        "synthesis   espeak-ng    RTF {:.3} over {audio:.1} s of speech (a sentence takes {:.0} ms \
         median to synthesize, process start included)",
        wall / audio,
        first_ms[first_ms.len() / 2]
    );
}

async fn recognition() {
    let pipeline = Pipeline::new(recognition_manifest()).unwrap();
    let mut samples = Vec::new();
    for name in RECORDINGS {
        samples.extend(recording(name));
        samples.extend(std::iter::repeat_n(0.0, RATE as usize));
    }
    let inputs = frames(&samples);
    let audio = samples.len() as f64 / f64::from(RATE);
    let mut rtfs = Vec::new();
    let mut finals = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let (outputs, _) = pipeline.run_to_end(inputs.clone()).await.unwrap();
        rtfs.push(started.elapsed().as_secs_f64() / audio);
        finals = outputs
            .iter()
            .filter(|e| {
                matches!(&e.data, RuntimeData::Json { payload, .. } if payload.contains("\"final\":true"))
            })
            .count();
    }
    rtfs.sort_by(f64::total_cmp);
    let median = rtfs[rtfs.len() / 2];
    println!(
        "recognition pocketsphinx RTF median {median:.3} over {audio:.1} s of recorded speech \
         ({finals} final transcripts a run): one core keeps up with about {:.0} sessions' speech",
        1.0 / median
    );
}

/// Feeds voice_echo in real time: each utterance, then 3 s of silence; returns the delays
/// from each utterance's end to the first audio back with energy.
async fn voice_to_voice() {
    let pipeline = Pipeline::new(manifest("voice_echo.yaml")).unwrap();
    let cancel = CancellationToken::new();
    let mut session = pipeline.start(cancel.clone()).unwrap();
    let mut delays = Vec::new();
    let mut unanswered = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..UTTERANCES {
        let mut samples = recording(RECORDINGS[i % RECORDINGS.len()]);
        // The utterance ends at its last loud sample, not at the recording's trailing quiet.
        let spoken = samples
            .iter()
            .rposition(|s| s.abs() > 0.02)
            .map_or(0, |n| n + 1);
        samples.extend(std::iter::repeat_n(0.0, 3 * RATE as usize));
        let mut ended = None;
        let mut answered = None;
        for (n, frame) in frames(&samples).into_iter().enumerate() {
            ticker.tick().await;
            session.input.send(frame).await.unwrap();
            if ended.is_none() && (n + 1) * FRAME >= spoken {
                ended = Some(Instant::now());
            }
            while let Ok(out) = session.output.try_recv() {
                let loud = matches!(&out.data, RuntimeData::Audio(f)
                    if f.samples.iter().map(|s| s * s).sum::<f32>() / f.samples.len().max(1) as f32 > 1e-5);
                if loud && answered.is_none() && ended.is_some() {
                    answered = Some(Instant::now());
                }
            }
        }
        match (ended, answered) {
            (Some(ended), Some(answered)) => delays.push(answered.duration_since(ended)),
            _ => unanswered += 1,
        }
    }
    cancel.cancel();
    delays.sort();
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "voice to voice voice_echo.yaml: p50 {:.0} ms, p95 {:.0} ms over {} utterances \
         ({unanswered} not answered: nothing recognized)",
        at(0.5),
        at(0.95),
        delays.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        synthesis();
        recognition().await;
        voice_to_voice().await;
    });
}
