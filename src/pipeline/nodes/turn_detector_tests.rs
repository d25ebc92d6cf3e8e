use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings() -> TurnSettings {
    TurnSettings {
        hangover: ms(500),
        short_turn_words: 1,
        short_hangover: ms(900),
        min_words: 1,
        transcript_wait: ms(2_000),
    }
}

/// The `turn_end` payloads in `out`.
fn turn_ends(out: &[Envelope]) -> Vec<serde_json::Value> {
    out.iter()
        .map(|env| match &env.data {
            RuntimeData::Json {
                payload,
                schema_type,
            } => {
                assert_eq!(schema_type, TURN_SCHEMA);
                let value: serde_json::Value = serde_json::from_str(payload).unwrap();
                assert_eq!(value["type"], "turn_end");
                value
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_turn_ends_after_the_hangover_with_its_transcript() {
    let mut turn = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    turn.vad(VadEvent::SpeechStart(1_000), t0);
    assert_eq!(turn.deadline(), None, "no deadline while the user speaks");
    turn.vad(VadEvent::SpeechEnd(2_500), t0 + ms(1_500));
    turn.transcript("turn the lights on", 2_500);
    assert_eq!(turn.deadline(), Some(t0 + ms(2_000)));
    turn.poll(t0 + ms(1_999), &mut out);
    assert!(out.is_empty(), "not before the hangover");
    turn.poll(t0 + ms(2_000), &mut out);
    let ends = turn_ends(&out);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["text"], "turn the lights on");
    assert_eq!(ends[0]["words"], 4);
    assert_eq!(ends[0]["start_ms"], 1_000);
    assert_eq!(ends[0]["end_ms"], 2_500);
    assert_eq!(turn.deadline(), None, "the turn is over");
}

#[test]
fn speech_within_the_hangover_continues_the_turn() {
    let mut turn = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    turn.vad(VadEvent::SpeechStart(0), t0);
    turn.vad(VadEvent::SpeechEnd(800), t0 + ms(800));
    turn.transcript("i would like", 800);
    turn.poll(t0 + ms(1_200), &mut out);
    turn.vad(VadEvent::SpeechStart(1_250), t0 + ms(1_250));
    turn.poll(t0 + ms(1_400), &mut out);
    assert!(out.is_empty(), "the user speaks again");
    turn.vad(VadEvent::SpeechEnd(2_000), t0 + ms(2_000));
    turn.transcript("a coffee", 2_000);
    turn.poll(t0 + ms(2_500), &mut out);
    let ends = turn_ends(&out);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["text"], "i would like a coffee");
    assert_eq!(ends[0]["start_ms"], 0);
}

#[test]
fn a_one_word_turn_waits_the_longer_hangover() {
    let mut turn = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    turn.vad(VadEvent::SpeechStart(0), t0);
    turn.vad(VadEvent::SpeechEnd(400), t0 + ms(400));
    turn.transcript("well", 400);
    assert_eq!(turn.deadline(), Some(t0 + ms(1_300)));
    turn.poll(t0 + ms(900), &mut out);
    assert!(out.is_empty(), "a fragment is given time to go on");
    turn.poll(t0 + ms(1_300), &mut out);
    assert_eq!(turn_ends(&out)[0]["text"], "well");
}

#[test]
fn the_turn_waits_for_its_final_transcript_and_gives_up_on_it_in_time() {
    let mut turn = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    turn.vad(VadEvent::SpeechStart(0), t0);
    turn.vad(VadEvent::SpeechEnd(1_000), t0 + ms(1_000));
    // The hangover has passed but the transcript is still being decoded.
    turn.poll(t0 + ms(1_600), &mut out);
    assert!(out.is_empty());
    turn.transcript("hello there", 1_000);
    turn.poll(t0 + ms(1_700), &mut out);
    assert_eq!(turn_ends(&out)[0]["text"], "hello there");

    // A transcript that never comes: the turn is given up at hangover + wait, and with no
    // words it sends nothing.
    out.clear();
    turn.vad(VadEvent::SpeechStart(5_000), t0 + ms(5_000));
    turn.vad(VadEvent::SpeechEnd(6_000), t0 + ms(6_000));
    assert_eq!(turn.deadline(), Some(t0 + ms(6_000 + 900 + 2_000)));
    turn.poll(t0 + ms(8_900), &mut out);
    assert!(out.is_empty());
    assert_eq!(turn.deadline(), None);
}

#[test]
fn noise_without_words_is_no_turn() {
    let mut turn = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    turn.vad(VadEvent::SpeechStart(0), t0);
    turn.vad(VadEvent::SpeechEnd(300), t0 + ms(300));
    turn.transcript("", 300);
    turn.poll(t0 + ms(5_000), &mut out);
    assert!(out.is_empty());
    assert_eq!(turn.deadline(), None);
}

#[test]
fn the_node_reads_vad_events_and_transcripts_at_the_time_it_is_given() {
    let mut node = TurnDetectorNode::with_settings(settings());
    let t0 = Instant::now();
    let mut out = Vec::new();
    let json = |payload: serde_json::Value, schema: &str| {
        Envelope::new(RuntimeData::Json {
            payload: payload.to_string(),
            schema_type: schema.to_owned(),
        })
    };
    node.input_at(t0);
    node.process(
        json(
            serde_json::json!({"event": "speech_start", "timestamp_ms": 100}),
            "vad",
        ),
        &mut out,
    )
    .unwrap();
    node.input_at(t0 + ms(900));
    node.process(
        json(
            serde_json::json!({"event": "speech_end", "timestamp_ms": 1_000}),
            "vad",
        ),
        &mut out,
    )
    .unwrap();
    // A partial is not the turn's text; the final is.
    let transcript = |last: bool, text: &str| {
        json(
            serde_json::json!({"type": "transcript", "final": last, "text": text,
                "start_ms": 100, "end_ms": 1_000}),
            "transcript",
        )
    };
    node.input_at(t0 + ms(950));
    node.process(transcript(false, "front"), &mut out).unwrap();
    node.input_at(t0 + ms(1_000));
    node.process(transcript(true, "front center"), &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(node.next_tick(), Some(t0 + ms(1_400)));
    node.tick(t0 + ms(1_400), &mut out).unwrap();
    assert_eq!(turn_ends(&out)[0]["text"], "front center");
    assert!(
        !node.accepts(&RuntimeData::Audio(crate::pipeline::AudioFrame {
            samples: vec![],
            sample_rate: 48_000,
            channels: 1,
        }))
    );
}

#[test]
fn params_are_checked() {
    let ok = serde_json::json!({"hangoverMs": 300, "shortHangoverMs": 600, "minWords": 2});
    assert!(TurnDetectorNode::new(&Params::new("t", &ok).unwrap()).is_ok());
    let bad = serde_json::json!({"hangoverMs": 800, "shortHangoverMs": 600});
    let err = TurnDetectorNode::new(&Params::new("t", &bad).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("node `t`: params.shortHangoverMs"), "{err}");
    let bad = serde_json::json!({"hangoverMs": 100_000});
    assert!(TurnDetectorNode::new(&Params::new("t", &bad).unwrap()).is_err());
}
