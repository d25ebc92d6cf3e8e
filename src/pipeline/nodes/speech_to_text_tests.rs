use super::*;
use crate::pipeline::nodes::pocketsphinx_ffi::tests::{config, front_center, language_model};
use crate::pipeline::nodes::pocketsphinx_ffi::Search;
use crate::pipeline::AudioFrame;

fn keywords_pool(size: usize) -> Arc<DecoderPool> {
    DecoderPool::new(
        config(Search::Keywords(vec![
            "front center".into(),
            "rear left".into(),
            "side right".into(),
        ])),
        size,
    )
    .unwrap()
}

fn audio(samples: &[f32]) -> Envelope {
    Envelope::new(RuntimeData::Audio(AudioFrame {
        samples: samples.to_vec(),
        sample_rate: 48_000,
        channels: 1,
    }))
}

fn vad(event: VadEvent) -> Envelope {
    event.to_envelope()
}

/// Runs the node's jobs on this thread until none is left, collecting outputs.
fn drain(node: &mut SpeechToTextNode, out: &mut Vec<Envelope>) {
    loop {
        let mut jobs = Vec::new();
        node.take_jobs(&mut jobs);
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            let done = Completed {
                id: job.id,
                utterance: job.utterance,
                outcome: Outcome::Ran((job.work)()),
            };
            node.complete(done, Instant::now(), out).unwrap();
        }
    }
}

/// The transcripts in `out` (other outputs skipped).
fn transcripts(out: &[Envelope]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|env| match &env.data {
            RuntimeData::Json {
                payload,
                schema_type,
            } if schema_type == TRANSCRIPT_SCHEMA => Some(serde_json::from_str(payload).unwrap()),
            _ => None,
        })
        .collect()
}

/// Feeds `clip` (48 kHz) as a VAD would pass it: 300 ms of silence, the clip, 400 ms of
/// silence; `speech_start` (stamped at the clip's onset) arrives 200 ms into the clip, and
/// `speech_end` (stamped at its end) 300 ms after it, as the VAD confirms them late. Jobs run
/// after each input, as the pool would.
fn feed_utterance(
    node: &mut SpeechToTextNode,
    clip: &[f32],
    offset_ms: u64,
    out: &mut Vec<Envelope>,
) {
    let silence = vec![0.0f32; 960];
    for _ in 0..15 {
        node.process(audio(&silence), out).unwrap();
        drain(node, out);
    }
    for (k, frame) in clip.chunks(960).enumerate() {
        node.process(audio(frame), out).unwrap();
        if k == 10 {
            node.process(vad(VadEvent::SpeechStart(offset_ms + 300)), out)
                .unwrap();
        }
        drain(node, out);
    }
    let end_ms = offset_ms + 300 + (clip.len() as u64 / 48);
    for k in 0..20 {
        node.process(audio(&silence), out).unwrap();
        if k == 15 {
            node.process(vad(VadEvent::SpeechEnd(end_ms)), out).unwrap();
        }
        drain(node, out);
    }
}

#[test]
fn the_vad_segment_of_a_recorded_voice_is_transcribed_with_its_times() {
    let mut node = SpeechToTextNode::with_pool("stt", keywords_pool(2), 300, 20_000);
    let clip = front_center();
    let mut out = Vec::new();
    feed_utterance(&mut node, &clip, 0, &mut out);
    let all = transcripts(&out);
    let finals: Vec<_> = all.iter().filter(|t| t["final"] == true).collect();
    assert_eq!(finals.len(), 1, "{all:?}");
    let last = finals[0];
    assert!(
        last["text"].as_str().unwrap().contains("front center"),
        "{all:?}"
    );
    assert_eq!(last["start_ms"], 300);
    assert_eq!(last["end_ms"], 300 + clip.len() as u64 / 48);
    assert_eq!(all.last(), Some(last), "the final comes last");
    for partial in &all[..all.len() - 1] {
        assert_eq!(partial["final"], false);
        assert!(!partial["text"].as_str().unwrap().is_empty());
    }
    // The VAD's events are passed on, in order.
    let events: Vec<_> = out
        .iter()
        .filter_map(|env| match &env.data {
            RuntimeData::Json {
                payload,
                schema_type,
            } => VadEvent::from_json(payload, schema_type),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 2);
    // A second utterance, on the same node, reuses a pooled decoder.
    let mut again = Vec::new();
    let offset = node.now_ms();
    feed_utterance(&mut node, &clip, offset, &mut again);
    let finals: Vec<_> = transcripts(&again)
        .into_iter()
        .filter(|t| t["final"] == true)
        .collect();
    assert!(finals[0]["text"].as_str().unwrap().contains("front center"));
}

#[test]
fn partials_come_while_the_user_speaks() {
    let pool = DecoderPool::new(config(language_model()), 1).unwrap();
    let mut node = SpeechToTextNode::with_pool("stt", pool, 200, 20_000);
    let clip = front_center();
    let mut out = Vec::new();
    feed_utterance(&mut node, &clip, 0, &mut out);
    let all = transcripts(&out);
    assert!(all.len() >= 2, "a partial before the final: {all:?}");
    assert_eq!(all[0]["final"], false);
    assert_eq!(all.last().unwrap()["final"], true);
}

#[test]
fn audio_outside_vad_segments_is_not_decoded() {
    let mut node = SpeechToTextNode::with_pool("stt", keywords_pool(1), 300, 20_000);
    let mut out = Vec::new();
    for frame in front_center().chunks(960) {
        node.process(audio(frame), &mut out).unwrap();
    }
    let mut jobs = Vec::new();
    node.take_jobs(&mut jobs);
    assert!(jobs.is_empty() && out.is_empty());
}

#[test]
fn the_silence_the_vad_waited_for_is_not_decoded_beyond_the_tail() {
    // No partials: the utterance's audio waits whole for its final.
    let mut node = SpeechToTextNode::with_pool("stt", keywords_pool(1), 0, 20_000);
    let mut out = Vec::new();
    let frame = vec![0.0f32; 960];
    for _ in 0..10 {
        node.process(audio(&frame), &mut out).unwrap();
    }
    // The utterance starts now (the resampler holds a few ms back: the node's clock).
    let onset = node.clock;
    node.process(vad(VadEvent::SpeechStart(onset / PER_MS)), &mut out)
        .unwrap();
    // 800 ms of it heard: the speech ends 350 ms in (the VAD's end time, its pad included),
    // the rest is the silence the VAD waited for.
    for _ in 0..40 {
        node.process(audio(&frame), &mut out).unwrap();
    }
    let end_ms = onset / PER_MS + 350;
    assert_eq!(node.pending.back().unwrap().samples.len(), 800 * 16);
    node.end_utterance(end_ms);
    let chunk = node.pending.back().unwrap();
    assert!(chunk.last);
    assert_eq!(chunk.end_ms, end_ms);
    // From the onset to the end time plus the tail (to the ms of the node's clock).
    let kept = chunk.samples.len() as u64;
    let expected = (350 + FINAL_TAIL_MS) * PER_MS;
    assert!(
        kept.abs_diff(expected) <= PER_MS,
        "{kept} samples kept, {expected} expected"
    );
}

#[test]
fn with_every_decoder_leased_an_utterance_gets_an_empty_final_and_the_pool_recovers() {
    let pool = keywords_pool(1);
    let mut holder = SpeechToTextNode::with_pool("a", Arc::clone(&pool), 300, 20_000);
    let mut other = SpeechToTextNode::with_pool("b", Arc::clone(&pool), 300, 20_000);
    let clip = front_center();
    let mut out = Vec::new();
    // `a` is mid-utterance: it holds the only decoder.
    holder
        .process(vad(VadEvent::SpeechStart(0)), &mut out)
        .unwrap();
    for frame in clip[..24_000].chunks(960) {
        holder.process(audio(frame), &mut out).unwrap();
    }
    drain(&mut holder, &mut out);
    assert!(holder.stream.lock().lease.is_some());
    // `b`'s whole utterance passes meanwhile.
    let mut theirs = Vec::new();
    feed_utterance(&mut other, &clip, 0, &mut theirs);
    let finals: Vec<_> = transcripts(&theirs)
        .into_iter()
        .filter(|t| t["final"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "a final all the same");
    assert_eq!(finals[0]["text"], "");
    // `a` ends, its decoder goes back, and `b` is heard next time.
    holder
        .process(vad(VadEvent::SpeechEnd(600)), &mut out)
        .unwrap();
    drain(&mut holder, &mut out);
    assert!(holder.stream.lock().lease.is_none());
    let mut next = Vec::new();
    let offset = other.now_ms();
    feed_utterance(&mut other, &clip, offset, &mut next);
    let finals: Vec<_> = transcripts(&next)
        .into_iter()
        .filter(|t| t["final"] == true)
        .collect();
    assert!(finals[0]["text"].as_str().unwrap().contains("front center"));
}

#[test]
fn a_long_utterance_is_cut_at_the_maximum() {
    let mut node = SpeechToTextNode::with_pool("stt", keywords_pool(1), 0, 1_000);
    let mut out = Vec::new();
    node.process(vad(VadEvent::SpeechStart(0)), &mut out)
        .unwrap();
    let tone: Vec<f32> = (0..960).map(|i| (i as f32 * 0.1).sin() * 0.3).collect();
    for _ in 0..130 {
        node.process(audio(&tone), &mut out).unwrap();
        drain(&mut node, &mut out);
    }
    let finals = transcripts(&out)
        .into_iter()
        .filter(|t| t["final"] == true)
        .count();
    assert_eq!(
        finals, 2,
        "2.6 s of speech in 1 s utterances: two finals so far"
    );
}

#[test]
fn load_errors_name_the_param_and_the_path() {
    let err = |params: serde_json::Value| {
        SpeechToTextNode::new(&Params::new("stt", &params).unwrap())
            .err()
            .unwrap()
            .to_string()
    };
    let missing = err(serde_json::json!({"model": "/nonexistent/en-us"}));
    assert!(
        missing.contains("node `stt`: params.model") && missing.contains("/nonexistent/en-us"),
        "{missing}"
    );
    let missing = err(serde_json::json!({"dict": "/nonexistent/words.dict"}));
    assert!(
        missing.contains("params.dict") && missing.contains("/nonexistent/words.dict"),
        "{missing}"
    );
    let unknown = err(serde_json::json!({"engine": "whisper"}));
    assert!(
        unknown.contains("params.engine") && unknown.contains("unknown engine `whisper`"),
        "{unknown}"
    );
    let word = err(serde_json::json!({"keywords": ["front qwxzzy"]}));
    assert!(
        word.contains("params.keywords") && word.contains("`qwxzzy`"),
        "{word}"
    );
    let both = err(serde_json::json!({"keywords": ["front"], "grammar": "/tmp/g.gram"}));
    assert!(both.contains("one of"), "{both}");
    assert!(err(serde_json::json!({"decoders": 0})).contains("params.decoders"));
}

#[test]
fn the_model_is_loaded_once_per_process_and_shared() {
    let params = serde_json::json!({"keywords": ["front center"], "decoders": 3});
    let a = recognizer(&Params::new("a", &params).unwrap()).unwrap();
    let b = recognizer(&Params::new("b", &params).unwrap()).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}
