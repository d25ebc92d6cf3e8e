use super::*;
use crate::pipeline::offload::Completed;

/// An engine that answers each sentence with `ms_per_char` of a constant level per character
/// (no clock, no process: the node's logic alone).
#[derive(Debug)]
struct FakeEngine {
    samples_per_char: usize,
}

impl SpeechEngine for FakeEngine {
    fn synthesize(&self, text: &str) -> Result<Vec<f32>, super::super::EngineError> {
        Ok(vec![0.25; text.chars().count() * self.samples_per_char])
    }
}

fn node(samples_per_char: usize) -> TextToSpeechNode {
    TextToSpeechNode::with_engine("tts", Arc::new(FakeEngine { samples_per_char }))
}

fn text(s: &str) -> Envelope {
    Envelope::new(RuntimeData::Text {
        text: s.into(),
        language: String::new(),
    })
}

fn take(node: &mut TextToSpeechNode) -> Vec<Job> {
    let mut jobs = Vec::new();
    node.take_jobs(&mut jobs);
    jobs
}

fn run(job: Job) -> Completed {
    Completed {
        id: job.id,
        utterance: job.utterance,
        outcome: Outcome::Ran((job.work)()),
    }
}

fn samples(out: &[Envelope]) -> usize {
    out.iter()
        .map(|env| match &env.data {
            RuntimeData::Audio(frame) => {
                assert_eq!(frame.sample_rate, 48_000);
                assert_eq!(frame.channels, 1);
                assert_eq!(frame.samples.len(), FRAME_SAMPLES, "whole 20 ms frames");
                frame.samples.len()
            }
            other => panic!("not audio: {other:?}"),
        })
        .sum()
}

#[test]
fn text_splits_into_sentences() {
    assert_eq!(
        sentences("Hello there. How are you?\nFine! Version 1.5 is out"),
        [
            "Hello there.",
            "How are you?",
            "Fine!",
            "Version 1.5 is out"
        ]
    );
    assert!(sentences("  ... \n ").is_empty());
    let long = "word ".repeat(200);
    let parts = sentences(&long);
    assert!(parts.len() >= 3, "{}", parts.len());
    assert!(parts
        .iter()
        .all(|p| p.chars().count() <= MAX_SENTENCE_CHARS && !p.ends_with("wor")));
}

#[test]
fn json_with_a_text_field_is_spoken_and_other_json_ignored() {
    let mut tts = node(10);
    let mut out = Vec::new();
    let json = |payload: &str| {
        Envelope::new(RuntimeData::Json {
            payload: payload.into(),
            schema_type: String::new(),
        })
    };
    tts.process(json(r#"{"type":"vad","speaking":true}"#), &mut out)
        .unwrap();
    assert!(take(&mut tts).is_empty());
    tts.process(json(r#"{"text":"Say this."}"#), &mut out)
        .unwrap();
    assert_eq!(take(&mut tts).len(), 1);
    // Display text (the original's `ui` channel) is not spoken.
    let mut ui = text("Shown, not said.");
    ui.metadata.insert(TEXT_CHANNEL_KEY.into(), "ui".into());
    tts.process(ui, &mut out).unwrap();
    assert!(take(&mut tts).is_empty() && tts.waiting.is_empty());
    assert!(!tts.accepts(&RuntimeData::Audio(AudioFrame {
        samples: vec![],
        sample_rate: 48_000,
        channels: 1,
    })));
}

#[test]
fn sentences_play_in_order_in_real_time_even_when_synthesized_out_of_order() {
    let mut tts = node(960); // one frame per character
    let mut out = Vec::new();
    tts.process(text("Aa. Bbbb. Cc."), &mut out).unwrap();
    assert!(out.is_empty());
    let jobs = take(&mut tts);
    assert_eq!(jobs.len(), MAX_SYNTHESIZING, "two sentences at the engine");
    let mut jobs = jobs.into_iter();
    let (first, second) = (jobs.next().unwrap(), jobs.next().unwrap());
    let t0 = Instant::now();
    // The second sentence comes back first: nothing plays before the first.
    tts.complete(run(second), t0, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(tts.next_tick(), None);
    tts.complete(run(first), t0, &mut out).unwrap();
    // Frames due now and within the lead (40 ms): three.
    assert_eq!(samples(&out), 3 * FRAME_SAMPLES);
    out.clear();
    // The third sentence started once a slot freed.
    assert_eq!(take(&mut tts).len(), 1);
    // Then one frame per 20 ms.
    let tick = tts.next_tick().unwrap();
    assert_eq!(tick, t0 + Duration::from_millis(20));
    tts.tick(tick, &mut out).unwrap();
    assert_eq!(samples(&out), FRAME_SAMPLES);
    out.clear();
    // "Aa." and "Bbbb." are 3 + 5 frames; 4 have left.
    let mut now = tick;
    while let Some(at) = tts.next_tick() {
        assert!(at > now, "ticks move forward");
        now = at;
        tts.tick(now, &mut out).unwrap();
    }
    assert_eq!(samples(&out), 4 * FRAME_SAMPLES);
    assert_eq!(now, t0 + Duration::from_millis(100));
}

#[test]
fn a_dropped_sentence_drops_the_rest_of_its_utterance_and_the_next_one_plays() {
    let mut tts = node(960);
    let mut out = Vec::new();
    tts.process(text("One. Two. Three. Four."), &mut out)
        .unwrap();
    tts.process(text("Next."), &mut out).unwrap();
    let jobs = take(&mut tts);
    assert_eq!(jobs.len(), 2);
    let now = Instant::now();
    for job in jobs {
        let dropped = Completed {
            id: job.id,
            utterance: job.utterance,
            outcome: Outcome::Dropped(DropReason::QueueFull),
        };
        tts.complete(dropped, now, &mut out).unwrap();
    }
    assert!(out.is_empty());
    // "Three." and "Four." went with their utterance; "Next." is synthesized.
    let jobs = take(&mut tts);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].utterance, 1);
    tts.complete(run(jobs.into_iter().next().unwrap()), now, &mut out)
        .unwrap();
    assert_eq!(samples(&out), 3 * FRAME_SAMPLES);
}

#[test]
fn too_much_waiting_text_drops_the_oldest_utterance_counted() {
    let counter = || {
        crate::pipeline::metrics::metrics()
            .offload_dropped
            .with_label_values(&["backlog"])
            .get()
    };
    let before = counter();
    let mut tts = node(1);
    let mut out = Vec::new();
    let many: String = (0..MAX_WAITING + MAX_SYNTHESIZING)
        .map(|i| format!("Sentence {i}. "))
        .collect();
    tts.process(text(&many), &mut out).unwrap();
    tts.process(text("The newest text."), &mut out).unwrap();
    // The first utterance's waiting sentences went; the newest waits its turn.
    assert_eq!(tts.waiting.len(), 1);
    assert_eq!(tts.waiting[0].text, "The newest text.");
    assert!(counter() >= before + MAX_WAITING as u64);
    // A text too long alone keeps its beginning.
    let mut tts = node(1);
    let many: String = (0..MAX_WAITING + 10)
        .map(|i| format!("Sentence {i}. "))
        .collect();
    tts.process(text(&many), &mut out).unwrap();
    assert_eq!(tts.waiting.len(), MAX_WAITING);
    assert_eq!(tts.waiting[0].text, "Sentence 2.");
}

#[test]
fn lookahead_bounds_the_audio_synthesized_ahead() {
    // Each sentence is 2 s of audio: three are synthesized at once, the fourth waits until
    // less than the look-ahead (3 s) is left to play.
    let mut tts = node(48_000 * 2 / 4);
    let mut out = Vec::new();
    tts.process(text("Aaa. Bbb. Ccc. Ddd."), &mut out).unwrap();
    let t0 = Instant::now();
    loop {
        let jobs = take(&mut tts);
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            tts.complete(run(job), t0, &mut out).unwrap();
        }
    }
    assert_eq!(tts.waiting.len(), 1, "the fourth sentence waits");
    let mut now = t0;
    while take(&mut tts).is_empty() {
        now = tts.next_tick().unwrap();
        tts.tick(now, &mut out).unwrap();
    }
    let played = now - t0;
    assert!(
        (Duration::from_millis(2_800)..Duration::from_millis(3_100)).contains(&played),
        "started after {played:?} of play-out"
    );
}

/// A real synthesis through Debian's espeak-ng (installed by `make deps`).
#[test]
fn espeak_ng_speaks_a_sentence_at_48_khz() {
    let params = serde_json::json!({"voice": "en-us", "rate": 175, "pitch": 50});
    let engine =
        super::super::speech_engine::engine(&Params::new("tts", &params).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let samples = engine
        .synthesize("The quick brown fox jumps over the lazy dog.")
        .unwrap();
    let took = started.elapsed();
    let seconds = samples.len() as f64 / 48_000.0;
    // Nine words at 175 words per minute: about three seconds.
    assert!((1.5..5.0).contains(&seconds), "{seconds} s of speech");
    let rms = crate::media::rms(&samples);
    assert!(rms > 0.02, "speech is not silent: rms {rms}");
    assert!(samples.iter().all(|s| s.abs() <= 1.0));
    let speech_band = crate::media::band_energy_ratio(&samples, 48_000, 300.0, 3400.0);
    assert!(speech_band > 0.5, "energy in 300-3400 Hz: {speech_band}");
    println!(
        "espeak-ng: {seconds:.2} s of speech in {took:?}, rms {rms:.3}, speech band {speech_band:.2}"
    );
}

#[test]
fn an_unknown_engine_a_missing_program_and_a_missing_voice_fail_at_load() {
    let error = |params: serde_json::Value| {
        TextToSpeechNode::new(&Params::new("speaker", &params).unwrap())
            .err()
            .unwrap()
            .to_string()
    };
    let err = error(serde_json::json!({"engine": "festival"}));
    assert!(
        err.contains("node `speaker`: params.engine")
            && err.contains("unknown engine `festival`")
            && err.contains("espeak-ng"),
        "{err}"
    );
    let err = error(serde_json::json!({"program": "/nonexistent/espeak-ng"}));
    assert!(
        err.contains("params.engine") && err.contains("/nonexistent/espeak-ng` not found"),
        "{err}"
    );
    let err = error(serde_json::json!({"voice": "xx-nosuch"}));
    assert!(
        err.contains("params.voice") && err.contains("no voice `xx-nosuch`"),
        "{err}"
    );
    let err = error(serde_json::json!({"program": "/bin/true"}));
    assert!(
        err.contains("params.program") && err.contains("not espeak-ng"),
        "{err}"
    );
    let err = error(serde_json::json!({"voice": "--help"}));
    assert!(err.contains("params.voice"), "{err}");
    let err = error(serde_json::json!({"rate": 20}));
    assert!(err.contains("params.rate"), "{err}");
}

fn speech_start() -> Envelope {
    VadEvent::SpeechStart(1_000).to_envelope()
}

fn interrupted(out: &[Envelope]) -> bool {
    out.iter().any(|env| {
        matches!(&env.data, RuntimeData::Json { payload, schema_type }
            if schema_type == INTERRUPTED_SCHEMA && payload == r#"{"type":"interrupted"}"#)
    })
}

/// Three sentences of 10 frames each, the first one playing (its first frames out).
fn speaking_node() -> (TextToSpeechNode, Instant) {
    let mut tts = node(960 * 10 / 4);
    let mut out = Vec::new();
    tts.process(text("Aaa. Bbb. Ccc."), &mut out).unwrap();
    let t0 = Instant::now();
    for job in take(&mut tts) {
        tts.complete(run(job), t0, &mut out).unwrap();
    }
    assert!(samples(&out) > 0, "the first frames left");
    (tts, t0)
}

#[test]
fn the_users_speech_interrupts_ours_drops_the_rest_and_flushes_the_output() {
    let counter = || {
        crate::pipeline::metrics::metrics()
            .offload_dropped
            .with_label_values(&["interrupted"])
            .get()
    };
    let before = counter();
    let (mut tts, t0) = speaking_node();
    let mut out = Vec::new();
    tts.process(speech_start(), &mut out).unwrap();
    assert!(interrupted(&out), "{out:?}");
    assert_eq!(out.len(), 1, "no audio after the interruption");
    assert!(tts.take_flush(), "the output is flushed");
    assert!(!tts.take_flush(), "once");
    // Nothing is left to play or to say: no tick, no job, not even the third sentence.
    assert_eq!(tts.next_tick(), None);
    assert!(take(&mut tts).is_empty());
    assert!(tts.waiting.is_empty() && tts.order.is_empty());
    assert!(counter() > before);
    // A second speech_start with nothing playing changes nothing.
    out.clear();
    tts.process(speech_start(), &mut out).unwrap();
    assert!(out.is_empty() && !tts.take_flush());
    // New text after the interruption is spoken.
    tts.process(text("Ddd."), &mut out).unwrap();
    let jobs = take(&mut tts);
    assert_eq!(jobs.len(), 1);
    tts.complete(run(jobs.into_iter().next().unwrap()), t0, &mut out)
        .unwrap();
    assert!(samples(&out) > 0);
}

#[test]
fn speech_still_playing_at_the_output_is_interrupted_too() {
    // Everything has left the node, but the output still plays it.
    let mut tts = node(960 / 4);
    let mut out = Vec::new();
    tts.process(text("A."), &mut out).unwrap();
    let t0 = Instant::now();
    for job in take(&mut tts) {
        tts.complete(run(job), t0, &mut out).unwrap();
    }
    assert_eq!(tts.next_tick(), None, "all of it left");
    out.clear();
    tts.output_speaking(false);
    tts.process(speech_start(), &mut out).unwrap();
    assert!(out.is_empty(), "not heard any more: no interruption");
    tts.output_speaking(true);
    tts.process(speech_start(), &mut out).unwrap();
    assert!(interrupted(&out) && tts.take_flush());
}

#[test]
fn without_barge_in_the_users_speech_changes_nothing() {
    let (mut tts, _) = speaking_node();
    tts.barge_in = false;
    let mut out = Vec::new();
    tts.process(speech_start(), &mut out).unwrap();
    assert!(out.is_empty() && !tts.take_flush());
    assert!(tts.next_tick().is_some(), "still playing");
    let params = serde_json::json!({"bargeIn": false});
    let node = TextToSpeechNode::new(&Params::new("tts", &params).unwrap()).unwrap();
    assert!(!node.barge_in);
}
