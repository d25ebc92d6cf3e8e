//! The speech engines and the voice pipeline: `cargo bench --bench speech` (part of `make
//! bench`). The bench pins itself to one core (it runs itself again under `taskset -c 1`, or
//! the core `SPEECH_BENCH_CPU` names): every thread of the process (the async runtime, which
//! then has one worker, and the offload pool, which then has one thread, as on a one-core
//! machine) and every espeak-ng subprocess share that core, so each figure is one core's.
//!
//! - **Synthesis** (espeak-ng as `TextToSpeechNode` runs it, `examples/tts.yaml`'s voice):
//!   real-time factor = wall time of the engine / duration of the speech it made (the node's
//!   play-out is paced in real time, so the engine is timed on its own).
//! - **Recognition** (pocketsphinx through `SpeechToTextNode`, `examples/voice_echo.yaml`'s VAD
//!   and speech node with its language model): wall time / audio duration, for Debian's
//!   recorded voices (`alsa-utils`) with pauses, fed as fast as the pipeline takes them.
//! - **Voice to voice** (`examples/voice_echo.yaml`, fed in real time, 20 ms frames): from the
//!   end of an utterance's audio to the first audio frame back with energy, p50/p95 over 20
//!   utterances, with where the time goes: the VAD's `speech_end`, the final transcript, the
//!   turn's end, the first audio, each from the utterance's end (its last loud sample), and
//!   how many utterances the VAD split. Per utterance in `docs/bench/speech-voice-to-voice.csv`.
//! - **Sessions per core**: N `voice_echo.yaml` sessions (the whole manifest: VAD, speech to
//!   text, turn, speech) fed at once in real time, each its own caller repeating the recorded
//!   voices with pauses, their onsets spread over one utterance's period; N steps up until
//!   the core falls behind. Core load = CPU time of the process and its espeak-ng children /
//!   wall time (each session's audio time); RTF = load / N. A step keeps up when every
//!   utterance is transcribed and answered, no job or frame is dropped, and the slowest
//!   session's recognition lag (final transcript after `speech_end`) stays under 1 s (past
//!   the core's capacity a backlog grows without bound). Table on stdout,
//!   `docs/bench/speech-sessions.csv` (or under `OUT`).
//! - **Turn pauses**: two phrases with a pause between them (400..1000 ms), one session each:
//!   how long a pause inside a turn survives, the price of a shorter hangover.
//! - **Decode timing** (only when named, `-- decode_timing`): the decoder's work on each
//!   recorded voice and its end of utterance (the second pass), timed apart.
//!
//! `cargo bench --bench speech -- voice sessions` runs only the parts whose names contain a
//! word given (`synthesis`, `recognition`, `voice_to_voice`, `turn_pauses`,
//! `sessions_per_core`). A plain timing loop (no criterion), like `benches/pipeline.rs`.

#![allow(clippy::unwrap_used)] // a bench that fails should stop loudly

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remotemedia_webrtc::pipeline::metrics::metrics;
use remotemedia_webrtc::pipeline::{
    AudioFrame, DecoderConfig, DecoderPool, Envelope, Manifest, Pipeline, PipelineSession,
    RuntimeData, Search, VadEvent,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const RATE: u32 = 48_000;
const FRAME: usize = 960;
const RECORDINGS: [&str; 3] = ["Front_Center.wav", "Front_Left.wav", "Rear_Right.wav"];
const UTTERANCES: usize = 20;
/// Silence after each utterance: time for the answer before the next one.
const PAUSE_S: f64 = 3.0;
/// Utterances each session says in a sessions-per-core step.
const SESSION_UTTERANCES: usize = 6;
/// Pauses inside a two-phrase turn tried by [`turn_pauses`].
const TURN_PAUSES_MS: [usize; 7] = [400, 500, 600, 700, 800, 900, 1000];
/// Sessions tried, in order, until one step does not keep up.
const SESSION_STEPS: [usize; 10] = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16];
/// Decoders of the sessions' speech node: one per session, so the CPU, not the pool's size,
/// is what runs out (each decoder holds its own model copy, ~100 MB).
const SESSION_DECODERS: usize = 16;
/// A recognition lag above this is not keeping up (a backlog grows without bound past the
/// core's capacity; a session that keeps up stays at tens of ms).
const MAX_LAG: Duration = Duration::from_secs(1);

fn recording(name: &str) -> Vec<f32> {
    let path = Path::new("/usr/share/sounds/alsa").join(name);
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().sample_rate, RATE, "{}", path.display());
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

fn frame(chunk: &[f32]) -> Envelope {
    let mut samples = chunk.to_vec();
    samples.resize(FRAME, 0.0);
    Envelope::new(RuntimeData::Audio(AudioFrame {
        samples,
        sample_rate: RATE,
        channels: 1,
    }))
}

fn frames(samples: &[f32]) -> Vec<Envelope> {
    samples.chunks(FRAME).map(frame).collect()
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

/// Where CSVs go: `OUT`, or `docs/bench`.
fn out_dir() -> PathBuf {
    std::env::var_os("OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench"),
        PathBuf::from,
    )
}

fn write_csv(name: &str, header: &str, rows: &[String]) {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "{header}").unwrap();
    for row in rows {
        writeln!(file, "{row}").unwrap();
    }
    println!("wrote {}", path.display());
}

/// The `at` quantile of `values` (sorted here), NaN when empty.
fn quantile(values: &[f64], at: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 - 1.0) * at).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
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
    println!(
        "synthesis   espeak-ng    RTF {:.3} over {audio:.1} s of speech (a sentence takes {:.0} ms \
         median to synthesize, process start included)",
        wall / audio,
        quantile(&first_ms, 0.5)
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
    let median = quantile(&rtfs, 0.5);
    println!(
        "recognition pocketsphinx RTF median {median:.3} over {audio:.1} s of recorded speech \
         ({finals} final transcripts a run): recognition alone, one core keeps up with about \
         {:.0} sessions' speech",
        1.0 / median
    );
}

/// A caller's audio: silence, then utterances of the recorded voices each followed by
/// [`PAUSE_S`] of silence.
struct Script {
    samples: Vec<f32>,
    /// Per utterance: its first sample and one past its last loud one.
    utterances: Vec<(usize, usize)>,
}

impl Script {
    fn new(count: usize, first: usize, lead_in_s: f64) -> Self {
        let mut samples = vec![0.0; (lead_in_s * f64::from(RATE)) as usize];
        let mut utterances = Vec::new();
        for i in 0..count {
            let voice = recording(RECORDINGS[(first + i) % RECORDINGS.len()]);
            // The utterance ends at its last loud sample, not at the recording's trailing
            // quiet.
            let spoken = voice
                .iter()
                .rposition(|s| s.abs() > 0.02)
                .map_or(0, |n| n + 1);
            utterances.push((samples.len(), samples.len() + spoken));
            samples.extend(voice);
            samples.extend(std::iter::repeat_n(
                0.0,
                (PAUSE_S * f64::from(RATE)) as usize,
            ));
        }
        Self {
            samples,
            utterances,
        }
    }

    fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(RATE)
    }
}

/// What came out of a session, and when.
#[derive(Debug, Clone)]
enum Heard {
    SpeechEnd,
    Final(String),
    Turn(u64),
    /// An audio frame with energy.
    Loud,
}

/// Every output of the session until it closes, timestamped as it comes.
async fn listen(
    mut output: mpsc::Receiver<Envelope>,
    cancel: CancellationToken,
) -> Vec<(Instant, Heard)> {
    let mut heard = Vec::new();
    loop {
        let env = tokio::select! {
            biased;
            env = output.recv() => match env {
                Some(env) => env,
                None => break,
            },
            () = cancel.cancelled() => break,
        };
        let at = Instant::now();
        match &env.data {
            RuntimeData::Audio(f) => {
                let energy =
                    f.samples.iter().map(|s| s * s).sum::<f32>() / f.samples.len().max(1) as f32;
                if energy > 1e-5 {
                    heard.push((at, Heard::Loud));
                }
            }
            RuntimeData::Json {
                payload,
                schema_type,
            } => {
                if let Some(VadEvent::SpeechEnd(_)) = VadEvent::from_json(payload, schema_type) {
                    heard.push((at, Heard::SpeechEnd));
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(payload).unwrap();
                match value["type"].as_str() {
                    Some("transcript") if value["final"] == true => heard.push((
                        at,
                        Heard::Final(value["text"].as_str().unwrap_or("").to_owned()),
                    )),
                    Some("turn_end") => {
                        heard.push((at, Heard::Turn(value["words"].as_u64().unwrap_or(0))));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    heard
}

/// Feeds `script` to `session` in real time, 20 ms frames as the server's playout pushes
/// them (never waiting: a session that falls behind loses its oldest audio); returns when
/// each frame went, and the frames dropped.
async fn feed(session: &PipelineSession, script: &Script) -> (Vec<Instant>, u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut sent = Vec::new();
    let mut dropped = 0;
    for chunk in script.samples.chunks(FRAME) {
        ticker.tick().await;
        dropped += session.input.push_audio([frame(chunk)]).unwrap();
        sent.push(Instant::now());
    }
    (sent, dropped)
}

/// One utterance as the caller lived it, times in ms from its end (its last loud sample).
#[derive(Debug, Default, Clone)]
struct Answer {
    speech_end_ms: Option<f64>,
    final_ms: Option<f64>,
    turn_ms: Option<f64>,
    audio_ms: Option<f64>,
    /// VAD segments (final transcripts) the utterance came out as.
    segments: usize,
    words: u64,
    text: String,
}

impl Answer {
    /// The final transcript after the VAD's end: the recognizer's lag.
    fn lag_ms(&self) -> Option<f64> {
        Some(self.final_ms? - self.speech_end_ms?)
    }
}

/// Each utterance's answer: what came between its start and the next one's.
fn answers(script: &Script, sent: &[Instant], heard: &[(Instant, Heard)]) -> Vec<Answer> {
    let at = |sample: usize| sent[(sample / FRAME).min(sent.len() - 1)];
    let mut out = Vec::new();
    for (i, &(start, end)) in script.utterances.iter().enumerate() {
        let (from, ended) = (at(start), at(end.saturating_sub(1)));
        let until = script
            .utterances
            .get(i + 1)
            .map_or(Instant::now() + Duration::from_secs(3_600), |&(next, _)| {
                at(next)
            });
        let ms = |t: Instant| t.saturating_duration_since(ended).as_secs_f64() * 1e3;
        let mut answer = Answer::default();
        for (t, what) in heard.iter().filter(|(t, _)| *t >= from && *t < until) {
            match what {
                // The last of each: the end that closed the utterance.
                Heard::SpeechEnd => answer.speech_end_ms = Some(ms(*t)),
                Heard::Final(text) => {
                    answer.final_ms = Some(ms(*t));
                    answer.segments += 1;
                    if !text.is_empty() {
                        answer.text = format!("{} {text}", answer.text).trim().to_owned();
                    }
                }
                Heard::Turn(words) if answer.turn_ms.is_none() => {
                    answer.turn_ms = Some(ms(*t));
                    answer.words = *words;
                }
                Heard::Loud if answer.audio_ms.is_none() && *t >= ended => {
                    answer.audio_ms = Some(ms(*t));
                }
                _ => {}
            }
        }
        out.push(answer);
    }
    out
}

/// Starts a session of `pipeline` with a task listening to its output (what [`listen`]
/// hears, once `cancel` fires).
fn start_listening(
    pipeline: &Pipeline,
) -> (
    PipelineSession,
    CancellationToken,
    tokio::task::JoinHandle<Vec<(Instant, Heard)>>,
) {
    let cancel = CancellationToken::new();
    let mut session = pipeline.start(cancel.clone()).unwrap();
    let (tx, output) = mpsc::channel(1);
    let output = std::mem::replace(&mut session.output, output);
    drop(tx);
    let listener = tokio::spawn(listen(output, cancel.clone()));
    (session, cancel, listener)
}

/// Feeds voice_echo in real time: each utterance, then 3 s of silence; the delays from each
/// utterance's end to the first audio back with energy, and where they went.
async fn voice_to_voice() {
    let pipeline = Pipeline::new(manifest("voice_echo.yaml")).unwrap();
    let (session, cancel, listener) = start_listening(&pipeline);
    let script = Script::new(UTTERANCES, 0, 0.5);
    let (sent, _) = feed(&session, &script).await;
    cancel.cancel();
    let heard = listener.await.unwrap();
    let answers = answers(&script, &sent, &heard);
    let answered: Vec<&Answer> = answers.iter().filter(|a| a.audio_ms.is_some()).collect();
    let phase =
        |f: fn(&Answer) -> Option<f64>| -> Vec<f64> { answers.iter().filter_map(f).collect() };
    let delays = phase(|a| a.audio_ms);
    let split = answers.iter().filter(|a| a.segments > 1).count();
    println!(
        "voice to voice voice_echo.yaml: p50 {:.0} ms, p95 {:.0} ms over {} utterances \
         ({} not answered, {split} split by the VAD)",
        quantile(&delays, 0.5),
        quantile(&delays, 0.95),
        answered.len(),
        answers.len() - answered.len()
    );
    println!(
        "  where it goes (p50 from the utterance's end): VAD speech_end {:.0} ms, final \
         transcript {:.0} ms (lag {:.0} ms after speech_end), turn end {:.0} ms, first audio {:.0} ms",
        quantile(&phase(|a| a.speech_end_ms), 0.5),
        quantile(&phase(|a| a.final_ms), 0.5),
        quantile(&phase(Answer::lag_ms), 0.5),
        quantile(&phase(|a| a.turn_ms), 0.5),
        quantile(&delays, 0.5),
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
    let rows: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{i},{},{},{},{},{},{},{},{},{}",
                RECORDINGS[i % RECORDINGS.len()],
                a.segments,
                a.words,
                opt(a.speech_end_ms),
                opt(a.final_ms),
                opt(a.turn_ms),
                opt(a.audio_ms),
                a.audio_ms.is_none(),
                a.text
            )
        })
        .collect();
    write_csv(
        "speech-voice-to-voice.csv",
        "utterance,recording,segments,words,speech_end_ms,final_ms,turn_end_ms,first_audio_ms,unanswered,text",
        &rows,
    );
}

/// Where a final transcript's time goes: the decoder's work on the utterance's audio (fed as
/// the node feeds it, 300 ms at a time) and its end (the second pass) on its own.
fn decode_timing() {
    let base = Path::new("/usr/share/pocketsphinx/model/en-us");
    let config = DecoderConfig {
        hmm: base.join("en-us"),
        dict: base.join("cmudict-en-us.dict"),
        search: Search::LanguageModel(base.join("en-us.lm.bin")),
    };
    let mut decoder = remotemedia_webrtc::pipeline::Decoder::new(&config).unwrap();
    for name in RECORDINGS {
        let voice = recording(name);
        // 48 kHz to 16 kHz by taking every third sample: timing only.
        let mut samples: Vec<i16> = voice
            .iter()
            .step_by(3)
            .map(|s| (s * 32_767.0) as i16)
            .collect();
        samples.extend(std::iter::repeat_n(0, 16 * 450));
        decoder.start().unwrap();
        let started = Instant::now();
        for chunk in samples.chunks(16 * 300) {
            decoder.process(chunk).unwrap();
            let _ = decoder.hypothesis();
        }
        let processed = started.elapsed();
        let started = Instant::now();
        decoder.end().unwrap();
        let text = decoder.hypothesis();
        println!(
            "decode {name}: {:.0} ms of audio processed in {:.0} ms, end (second pass) {:.0} ms: `{text}`",
            samples.len() as f64 / 16.0,
            processed.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// A turn of two phrases with a pause between them: how long a pause the turn survives
/// (shorter hangovers answer sooner and cut more turns). Each case one session: Front_Center
/// to its last loud sample, the pause, Rear_Right, then silence; the turns it ended.
async fn turn_pauses() {
    let pipeline = Pipeline::new(manifest("voice_echo.yaml")).unwrap();
    let front = recording(RECORDINGS[0]);
    let spoken = front
        .iter()
        .rposition(|s| s.abs() > 0.02)
        .map_or(0, |n| n + 1);
    let mut cases = Vec::new();
    for pause_ms in TURN_PAUSES_MS {
        let mut samples = vec![0.0; RATE as usize / 2];
        samples.extend_from_slice(&front[..spoken]);
        samples.extend(std::iter::repeat_n(0.0, pause_ms * RATE as usize / 1000));
        samples.extend(recording(RECORDINGS[2]));
        samples.extend(std::iter::repeat_n(0.0, 2 * RATE as usize));
        let script = Script {
            samples,
            utterances: vec![(0, spoken)],
        };
        let (session, cancel, listener) = start_listening(&pipeline);
        feed(&session, &script).await;
        cancel.cancel();
        let heard = listener.await.unwrap();
        let turns = heard
            .iter()
            .filter(|(_, h)| matches!(h, Heard::Turn(_)))
            .count();
        cases.push(format!("{pause_ms} ms: {turns}"));
    }
    println!(
        "turn pauses voice_echo.yaml: turns ended by two phrases with a pause between them \
         (1: one turn, 2: cut at the pause): {}",
        cases.join(", ")
    );
}

/// CPU seconds of this process and its waited-for children (the espeak-ng subprocesses).
fn cpu_seconds(ticks_per_s: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command's closing parenthesis start at field 3 (state).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime, stime, cutime, cstime: fields 14..=17.
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum();
    ticks as f64 / ticks_per_s
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One step of the sessions-per-core sweep.
struct Step {
    sessions: usize,
    /// CPU seconds per audio second, all sessions: the core's load.
    load: f64,
    /// The slowest session's recognition lag, p50 and max.
    lag_p50_ms: f64,
    lag_max_ms: f64,
    v2v_p50_ms: f64,
    v2v_p95_ms: f64,
    utterances: usize,
    answered: usize,
    transcribed: usize,
    split: usize,
    /// Offload jobs dropped or failed, and input frames dropped.
    dropped_jobs: u64,
    failed_jobs: u64,
    dropped_frames: u64,
    /// How far the last frame went after its due time (the feeders' own lateness).
    feed_late_ms: f64,
}

impl Step {
    fn rtf(&self) -> f64 {
        self.load / self.sessions as f64
    }

    fn keeps_up(&self) -> bool {
        self.load < 1.0
            && self.answered == self.utterances
            && self.transcribed == self.utterances
            && self.dropped_jobs + self.failed_jobs + self.dropped_frames == 0
            && self.lag_max_ms < MAX_LAG.as_secs_f64() * 1e3
    }
}

/// The sessions' manifest: voice_echo.yaml with [`SESSION_DECODERS`] decoders.
fn sessions_manifest() -> Manifest {
    let mut manifest = manifest("voice_echo.yaml");
    let stt = manifest.nodes.iter_mut().find(|n| n.id == "stt").unwrap();
    stt.params["decoders"] = serde_json::json!(SESSION_DECODERS);
    manifest
}

/// Builds `count` of the sessions' decoders now, so no step pays a model load.
async fn warm_decoders(count: usize) {
    tokio::task::spawn_blocking(move || {
        let base = Path::new("/usr/share/pocketsphinx/model/en-us");
        let config = DecoderConfig {
            hmm: base.join("en-us"),
            dict: base.join("cmudict-en-us.dict"),
            search: Search::LanguageModel(base.join("en-us.lm.bin")),
        };
        let pool = DecoderPool::shared(config, SESSION_DECODERS).unwrap();
        let leases: Vec<_> = (0..count)
            .map_while(|_| pool.try_lease().unwrap())
            .collect();
        assert_eq!(leases.len(), count, "decoders built");
    })
    .await
    .unwrap();
}

async fn sessions_step(pipeline: &Arc<Pipeline>, n: usize, ticks_per_s: f64) -> Step {
    warm_decoders(n).await;
    let period = Script::new(RECORDINGS.len(), 0, 0.0).seconds() / RECORDINGS.len() as f64;
    let m = metrics();
    let dropped_before: u64 = ["queue_full", "backlog", "interrupted"]
        .iter()
        .map(|r| m.offload_dropped.with_label_values(&[*r]).get())
        .sum();
    let failed_before = m.offload_jobs.with_label_values(&["failed"]).get();
    let cancel = CancellationToken::new();
    let cpu_before = cpu_seconds(ticks_per_s);
    let started = Instant::now();
    let mut runs = Vec::new();
    for i in 0..n {
        let pipeline = Arc::clone(pipeline);
        let cancel = cancel.clone();
        // Onsets spread over one utterance's period; every session's audio as long.
        let lead_in = period * i as f64 / n as f64;
        let mut script = Script::new(SESSION_UTTERANCES, i, lead_in);
        let total = Script::new(SESSION_UTTERANCES, 0, period).samples.len();
        script.samples.resize(total.max(script.samples.len()), 0.0);
        runs.push(tokio::spawn(async move {
            let mut session = pipeline.start(cancel.clone()).unwrap();
            let (tx, output) = mpsc::channel(1);
            let output = std::mem::replace(&mut session.output, output);
            drop(tx);
            let listener = tokio::spawn(listen(output, cancel.clone()));
            let (sent, dropped) = feed(&session, &script).await;
            // The feed's end: the last answers are in by then (each utterance has 3 s).
            (script, sent, dropped, listener, session)
        }));
    }
    let mut fed = Vec::new();
    for run in runs {
        fed.push(run.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(ticks_per_s) - cpu_before;
    cancel.cancel();
    let audio = fed.iter().map(|(s, ..)| s.seconds()).fold(0.0, f64::max);
    let mut step = Step {
        sessions: n,
        load: cpu / wall,
        lag_p50_ms: 0.0,
        lag_max_ms: 0.0,
        v2v_p50_ms: 0.0,
        v2v_p95_ms: 0.0,
        utterances: 0,
        answered: 0,
        transcribed: 0,
        split: 0,
        dropped_jobs: 0,
        failed_jobs: 0,
        dropped_frames: 0,
        feed_late_ms: (wall - audio).max(0.0) * 1e3,
    };
    let mut delays = Vec::new();
    for (script, sent, dropped, listener, session) in fed {
        let heard = listener.await.unwrap();
        drop(session);
        let answers = answers(&script, &sent, &heard);
        let lags: Vec<f64> = answers.iter().filter_map(Answer::lag_ms).collect();
        let max = quantile(&lags, 1.0);
        if max.is_nan() || max > step.lag_max_ms {
            step.lag_max_ms = if max.is_nan() { f64::INFINITY } else { max };
            step.lag_p50_ms = quantile(&lags, 0.5);
        }
        step.utterances += answers.len();
        step.answered += answers.iter().filter(|a| a.audio_ms.is_some()).count();
        step.transcribed += answers
            .iter()
            .filter(|a| a.final_ms.is_some() && !a.text.is_empty())
            .count();
        step.split += answers.iter().filter(|a| a.segments > 1).count();
        step.dropped_frames += dropped;
        delays.extend(answers.iter().filter_map(|a| a.audio_ms));
    }
    step.v2v_p50_ms = quantile(&delays, 0.5);
    step.v2v_p95_ms = quantile(&delays, 0.95);
    let dropped_after: u64 = ["queue_full", "backlog", "interrupted"]
        .iter()
        .map(|r| m.offload_dropped.with_label_values(&[*r]).get())
        .sum();
    step.dropped_jobs = dropped_after - dropped_before;
    step.failed_jobs = m.offload_jobs.with_label_values(&["failed"]).get() - failed_before;
    step
}

/// How many voice_echo sessions the core keeps up with.
async fn sessions_per_core() {
    let ticks_per_s = clock_ticks();
    let pipeline = Arc::new(Pipeline::new(sessions_manifest()).unwrap());
    println!(
        "sessions per core, voice_echo.yaml ({SESSION_UTTERANCES} utterances a session, \
         {PAUSE_S} s pauses, onsets spread):"
    );
    println!(
        "{:>8} {:>9} {:>8} {:>15} {:>15} {:>12} {:>9} {:>6} {:>8} {:>5}",
        "sessions",
        "core load",
        "RTF",
        "lag p50/max ms",
        "v2v p50/p95 ms",
        "transcribed",
        "answered",
        "split",
        "dropped",
        "keeps"
    );
    let mut rows = Vec::new();
    let mut sustained = 0;
    for n in SESSION_STEPS {
        let step = sessions_step(&pipeline, n, ticks_per_s).await;
        let keeps = step.keeps_up();
        println!(
            "{:>8} {:>9.2} {:>8.3} {:>7.0}/{:<7.0} {:>7.0}/{:<7.0} {:>6}/{:<5} {:>4}/{:<4} {:>6} {:>8} {:>5}",
            n,
            step.load,
            step.rtf(),
            step.lag_p50_ms,
            step.lag_max_ms,
            step.v2v_p50_ms,
            step.v2v_p95_ms,
            step.transcribed,
            step.utterances,
            step.answered,
            step.utterances,
            step.split,
            step.dropped_jobs + step.failed_jobs + step.dropped_frames,
            if keeps { "yes" } else { "no" }
        );
        rows.push(format!(
            "{n},{:.3},{:.4},{:.0},{:.0},{:.0},{:.0},{},{},{},{},{},{},{},{:.0},{keeps}",
            step.load,
            step.rtf(),
            step.lag_p50_ms,
            step.lag_max_ms,
            step.v2v_p50_ms,
            step.v2v_p95_ms,
            step.utterances,
            step.transcribed,
            step.answered,
            step.split,
            step.dropped_jobs,
            step.failed_jobs,
            step.dropped_frames,
            step.feed_late_ms,
        ));
        if !keeps {
            break;
        }
        sustained = n;
    }
    println!(
        "sessions per core: one core keeps up with {sustained} voice_echo sessions \
         (the next step did not, or none was left to try)"
    );
    write_csv(
        "speech-sessions.csv",
        "sessions,core_load,rtf_per_session,lag_p50_ms,lag_max_ms,v2v_p50_ms,v2v_p95_ms,utterances,transcribed,answered,split,dropped_jobs,failed_jobs,dropped_frames,feed_late_ms,keeps_up",
        &rows,
    );
}

/// Runs the bench again under `taskset -c <core>` unless it runs pinned already; the pinned
/// run's exit status, or `None` to go on here.
fn run_pinned() -> Option<i32> {
    if std::env::var_os("SPEECH_BENCH_PINNED").is_some() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let core = std::env::var("SPEECH_BENCH_CPU")
        .unwrap_or_else(|_| if cpus > 1 { "1" } else { "0" }.to_owned());
    let status = std::process::Command::new("taskset")
        .arg("-c")
        .arg(&core)
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env("SPEECH_BENCH_PINNED", &core)
        .status();
    match status {
        Ok(status) => Some(status.code().unwrap_or(1)),
        Err(err) => {
            eprintln!("taskset: {err}; running unpinned, the figures are not one core's");
            None
        }
    }
}

fn main() {
    if let Some(code) = run_pinned() {
        std::process::exit(code);
    }
    if let Ok(core) = std::env::var("SPEECH_BENCH_PINNED") {
        println!("pinned to core {core}: the runtime and the offload pool have one thread each");
    }
    // Sized from the CPUs this process may use, as the server's runtime is.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench --bench speech -- voice sessions` runs the parts whose names match.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let part = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    runtime.block_on(async {
        if part("synthesis") {
            synthesis();
        }
        if part("recognition") {
            recognition().await;
        }
        if filters.iter().any(|f| f == "decode_timing") {
            decode_timing();
        }
        if part("voice_to_voice") {
            voice_to_voice().await;
        }
        if part("turn_pauses") {
            turn_pauses().await;
        }
        if part("sessions_per_core") {
            sessions_per_core().await;
        }
    });
}
