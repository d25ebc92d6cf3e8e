//! `TextToSpeechNode`: text in (a TextBuffer, or JSON with a `text` field), speech out as
//! 48 kHz mono audio in 20 ms frames, sentence by sentence, so the first sentence plays while
//! the next ones are synthesized.
//!
//! An offloaded node ([`crate::pipeline::offload`]): each sentence is a job for the process's
//! pool, where the engine runs (see [`super::speech_engine`]). Results may come back out of
//! order; they are played in order. Play-out is paced by ticks: frames leave in real time, a
//! little ahead of the output's pacer, because the output keeps only a few frames.
//!
//! Bounds: at most [`MAX_SYNTHESIZING`] sentences at the engine, no more synthesized ahead
//! than [`LOOKAHEAD`] of audio, and [`MAX_WAITING`] sentences waiting; beyond that the oldest
//! utterance (a whole input text) is dropped, counted as `backlog`.
//!
//! Barge-in (`bargeIn`, on by default): a VAD's `speech_start` that comes while the node's
//! speech is being heard (audio left to play here, or the session's output still playing it,
//! see [`crate::pipeline::playback`]) drops everything left to say, flushes the output and
//! sends `{"type":"interrupted"}` (`schema_type` [`INTERRUPTED_SCHEMA`]). A `speech_start`
//! while nothing is heard changes nothing: text still being synthesized is then spoken.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::speech_engine::{engine, SpeechEngine, SPEECH_RATE};
use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::media::FRAME_SAMPLES;
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData, TEXT_CHANNEL_KEY};
use crate::pipeline::error::NodeError;
use crate::pipeline::offload::{count_dropped, Completed, DropReason, Job, Offload, Outcome};

/// Sentences at the engine at once: the one playing next, and one more in parallel.
pub const MAX_SYNTHESIZING: usize = 2;
/// Sentences waiting for the engine; beyond, the oldest utterance goes.
pub const MAX_WAITING: usize = 64;
/// Audio synthesized ahead of play-out at most, before the next sentence is started.
pub const LOOKAHEAD: Duration = Duration::from_secs(3);
/// A sentence longer than this (in characters) is cut at a space.
pub const MAX_SENTENCE_CHARS: usize = 400;
/// Frames leave this far ahead of real time (the output holds six).
const PLAYOUT_LEAD: Duration = Duration::from_millis(40);
/// One frame's duration.
const FRAME: Duration = Duration::from_millis(20);
/// The `schema_type` of the interruption event.
pub const INTERRUPTED_SCHEMA: &str = "interrupted";

/// Speaks its text inputs.
pub struct TextToSpeechNode {
    id: String,
    engine: Arc<dyn SpeechEngine>,
    /// Sentences not yet at the engine, oldest first.
    waiting: VecDeque<Sentence>,
    /// Sentences at the engine or back from it, in speaking order.
    order: VecDeque<Slot>,
    /// Jobs made and not yet taken by the runner.
    jobs: Vec<Job>,
    next_job: u64,
    next_utterance: u64,
    playout: Playout,
    /// Whether the user's speech interrupts ours (`bargeIn`).
    barge_in: bool,
    /// Whether the session's output was still playing our audio at the last input.
    output_speaking: bool,
    /// An interruption asks the output to drop what it holds; taken by the runner.
    flush: bool,
}

#[derive(Debug)]
struct Sentence {
    utterance: u64,
    text: String,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    utterance: u64,
    audio: SlotAudio,
}

#[derive(Debug)]
enum SlotAudio {
    Synthesizing,
    Ready(Vec<f32>),
    /// Dropped or failed: skipped.
    Gone,
}

/// Synthesized audio waiting to be played, and when its next frame is due.
#[derive(Debug, Default)]
struct Playout {
    samples: VecDeque<f32>,
    /// Due time of the next frame; kept across a pause so frames never overlap.
    next_frame: Option<Instant>,
}

impl Playout {
    /// Emits every frame due by `now` (plus the lead), padding the last one with silence.
    fn play(&mut self, now: Instant, out: &mut Vec<Envelope>) {
        if self.samples.is_empty() {
            return;
        }
        // After a pause, the next frame is due now, not when the last one would have been.
        let mut at = self.next_frame.map_or(now, |at| at.max(now));
        while !self.samples.is_empty() && at <= now + PLAYOUT_LEAD {
            let take = self.samples.len().min(FRAME_SAMPLES);
            let mut samples: Vec<f32> = self.samples.drain(..take).collect();
            samples.resize(FRAME_SAMPLES, 0.0);
            out.push(Envelope::new(RuntimeData::Audio(AudioFrame {
                samples,
                sample_rate: SPEECH_RATE,
                channels: 1,
            })));
            at += FRAME;
        }
        self.next_frame = Some(at);
    }

    /// When the next frame should be emitted, while audio waits.
    fn next_tick(&self) -> Option<Instant> {
        if self.samples.is_empty() {
            return None;
        }
        let at = self.next_frame?;
        Some(at.checked_sub(PLAYOUT_LEAD).unwrap_or(at))
    }
}

impl TextToSpeechNode {
    /// `{engine "espeak-ng", voice "en-us", rate 175, pitch 50, bargeIn true}` (see
    /// [`super::speech_engine::EspeakNg::new`]).
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param: an unknown engine, a missing program or voice,
    /// a value out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let mut node = Self::with_engine(params.id(), engine(params)?);
        node.barge_in = params.get_or("bargeIn", true)?;
        Ok(node)
    }

    /// A node speaking with `engine` (tests give their own).
    pub fn with_engine(id: &str, engine: Arc<dyn SpeechEngine>) -> Self {
        Self {
            id: id.to_owned(),
            engine,
            waiting: VecDeque::new(),
            order: VecDeque::new(),
            jobs: Vec::new(),
            next_job: 0,
            next_utterance: 0,
            playout: Playout::default(),
            barge_in: true,
            output_speaking: false,
            flush: false,
        }
    }

    /// Whether our speech is being heard: audio left to play here, or the output still
    /// playing what left.
    fn speaking(&self) -> bool {
        self.output_speaking || !self.playout.samples.is_empty()
    }

    /// The user started speaking: while we speak, everything left to say goes, the output is
    /// flushed and the client told.
    fn interrupt(&mut self, out: &mut Vec<Envelope>) {
        if !self.barge_in || !self.speaking() {
            return;
        }
        let sentences = self.waiting.len()
            + self
                .order
                .iter()
                .filter(|slot| !matches!(slot.audio, SlotAudio::Gone))
                .count();
        if sentences > 0 {
            count_dropped(DropReason::Interrupted, sentences as u64);
        }
        self.waiting.clear();
        // Jobs not yet handed to the runner never go; those at the engine come back to no
        // slot and are ignored.
        self.jobs.clear();
        self.order.clear();
        self.playout = Playout::default();
        self.output_speaking = false;
        self.flush = true;
        crate::pipeline::metrics::metrics().interruptions.inc();
        out.push(Envelope::new(RuntimeData::Json {
            payload: r#"{"type":"interrupted"}"#.to_owned(),
            schema_type: INTERRUPTED_SCHEMA.to_owned(),
        }));
    }

    /// Starts sentences while the engine and the look-ahead have room.
    fn fill(&mut self) {
        let lookahead = (LOOKAHEAD.as_secs_f64() * f64::from(SPEECH_RATE)) as usize;
        while self.order.len() < MAX_SYNTHESIZING && self.playout.samples.len() < lookahead {
            let Some(sentence) = self.waiting.pop_front() else {
                return;
            };
            let id = self.next_job;
            self.next_job += 1;
            let engine = Arc::clone(&self.engine);
            let node = self.id.clone();
            let text = sentence.text;
            self.jobs.push(Job {
                id,
                utterance: sentence.utterance,
                work: Box::new(move || {
                    let samples = engine
                        .synthesize(&text)
                        .map_err(|err| NodeError::Input(format!("node `{node}`: {err}")))?;
                    Ok(vec![Envelope::new(RuntimeData::Audio(AudioFrame {
                        samples,
                        sample_rate: SPEECH_RATE,
                        channels: 1,
                    }))])
                }),
            });
            self.order.push_back(Slot {
                id,
                utterance: sentence.utterance,
                audio: SlotAudio::Synthesizing,
            });
        }
    }

    /// Drops what is left of `utterance`: its waiting sentences, and its slots' audio.
    fn drop_utterance(&mut self, utterance: u64, reason: DropReason) {
        let before = self.waiting.len();
        self.waiting.retain(|s| s.utterance != utterance);
        let dropped = before - self.waiting.len();
        if dropped > 0 {
            count_dropped(reason, dropped as u64);
        }
        for slot in &mut self.order {
            if slot.utterance == utterance {
                slot.audio = SlotAudio::Gone;
            }
        }
    }

    /// Moves the audio at the head of the order to the play-out, as far as it is back.
    fn advance(&mut self) {
        while let Some(slot) = self.order.front() {
            if matches!(slot.audio, SlotAudio::Synthesizing) {
                return;
            }
            if let Some(Slot {
                audio: SlotAudio::Ready(samples),
                ..
            }) = self.order.pop_front()
            {
                self.playout.samples.extend(samples);
            }
        }
    }
}

/// The text of an input: a TextBuffer, or JSON with a `text` string.
fn text_of(data: &RuntimeData) -> Option<String> {
    match data {
        RuntimeData::Text { text, .. } => Some(text.clone()),
        RuntimeData::Json { payload, .. } => serde_json::from_str::<serde_json::Value>(payload)
            .ok()?
            .get("text")?
            .as_str()
            .map(str::to_owned),
        _ => None,
    }
}

/// Splits text into sentences: after `.`, `!`, `?`, `;` or `:` followed by white space, and at
/// line breaks; a sentence over [`MAX_SENTENCE_CHARS`] is cut at its last space before.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let ends =
            c == '\n' || (".!?;:".contains(c) && chars.peek().is_none_or(|n| n.is_whitespace()));
        if c != '\n' {
            current.push(c);
        }
        if ends {
            push_sentence(&mut out, &current);
            current.clear();
        } else if current.chars().count() >= MAX_SENTENCE_CHARS {
            let cut = current
                .rfind(' ')
                .filter(|&at| at > 0)
                .unwrap_or(current.len());
            let rest = current.split_off(cut);
            push_sentence(&mut out, &current);
            current = rest;
        }
    }
    push_sentence(&mut out, &current);
    out
}

fn push_sentence(out: &mut Vec<String>, sentence: &str) {
    let trimmed = sentence.trim();
    if trimmed.chars().any(char::is_alphanumeric) {
        out.push(trimmed.to_owned());
    }
}

impl Node for TextToSpeechNode {
    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Text { .. } | RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        if let RuntimeData::Json {
            payload,
            schema_type,
        } = &input.data
        {
            if let Some(event) = VadEvent::from_json(payload, schema_type) {
                if matches!(event, VadEvent::SpeechStart(_)) {
                    self.interrupt(out);
                }
                return Ok(());
            }
        }
        // JSON without a `text` (another node's events on a shared edge) is not for us, nor
        // text for display (a TextBuffer on the original's `ui` channel).
        let Some(text) = text_of(&input.data) else {
            return Ok(());
        };
        if input.metadata.get(TEXT_CHANNEL_KEY).map(String::as_str) == Some("ui") {
            return Ok(());
        }
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        self.waiting.extend(
            sentences(&text)
                .into_iter()
                .map(|text| Sentence { utterance, text }),
        );
        self.fill();
        // Too much waiting: the oldest utterances go, whole; a text that alone is too long
        // loses its end.
        while self.waiting.len() > MAX_WAITING {
            match self.waiting.front().map(|s| s.utterance) {
                Some(oldest) if oldest != utterance => {
                    self.drop_utterance(oldest, DropReason::Backlog);
                }
                _ => {
                    let cut = self.waiting.len() - MAX_WAITING;
                    self.waiting.truncate(MAX_WAITING);
                    count_dropped(DropReason::Backlog, cut as u64);
                }
            }
        }
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }
}

impl Offload for TextToSpeechNode {
    fn take_jobs(&mut self, jobs: &mut Vec<Job>) {
        jobs.append(&mut self.jobs);
    }

    fn complete(
        &mut self,
        done: Completed,
        now: Instant,
        out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        let audio = match done.outcome {
            Outcome::Ran(Ok(outputs)) => SlotAudio::Ready(
                outputs
                    .into_iter()
                    .filter_map(|env| match env.data {
                        RuntimeData::Audio(frame) => Some(frame.samples),
                        _ => None,
                    })
                    .flatten()
                    .collect(),
            ),
            Outcome::Ran(Err(err)) => {
                tracing::warn!(node = %self.id, %err, "sentence not spoken");
                SlotAudio::Gone
            }
            Outcome::Dropped(reason) => {
                // The rest of that utterance goes too: never half a text out of order.
                self.drop_utterance(done.utterance, reason);
                SlotAudio::Gone
            }
        };
        if let Some(slot) = self.order.iter_mut().find(|slot| slot.id == done.id) {
            if matches!(slot.audio, SlotAudio::Synthesizing) {
                slot.audio = audio;
            }
        }
        self.advance();
        self.playout.play(now, out);
        self.fill();
        Ok(())
    }

    fn next_tick(&self) -> Option<Instant> {
        self.playout.next_tick()
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.playout.play(now, out);
        self.fill();
        Ok(())
    }

    fn output_speaking(&mut self, speaking: bool) {
        self.output_speaking = speaking;
    }

    fn take_flush(&mut self) -> bool {
        std::mem::take(&mut self.flush)
    }
}

#[cfg(test)]
#[path = "text_to_speech_tests.rs"]
mod tests;
