//! `TurnDetectorNode`: the end of the user's turn, from the VAD's silence and the transcript,
//! as `DataBuffer{json}` with `schema_type` "turn":
//! `{"type":"turn_end","text":…,"words":…,"start_ms":…,"end_ms":…}` (a `text` field, so a
//! `TextToSpeechNode` downstream speaks it).
//!
//! A turn is one or more VAD segments. After a `speech_end`, the turn ends once the user has
//! been silent for the hangover and the final transcript of every segment is in; speech
//! before then continues the turn. pocketsphinx gives no punctuation to tell a finished
//! sentence, so the transcript's length stands in: a turn of at most `shortTurnWords` words
//! (a fragment, or a hesitation) waits the longer `shortHangoverMs`. A turn with fewer than
//! `minWords` words (a cough, a noise the VAD took for speech) ends with nothing sent. A final
//! transcript that has not come `transcriptWaitMs` after the hangover is given up on.
//!
//! Pure state: the time comes in with each input ([`Offload::input_at`]) and tick, so the
//! logic is tested with plain instants; it asks for a tick at the turn's deadline.

use std::time::Duration;

use tokio::time::Instant;

use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;
use crate::pipeline::offload::{Completed, Job, Offload};

/// The `schema_type` of turn events.
pub const TURN_SCHEMA: &str = "turn";

/// When a turn ends (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnSettings {
    pub hangover: Duration,
    pub short_turn_words: usize,
    pub short_hangover: Duration,
    pub min_words: usize,
    pub transcript_wait: Duration,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            hangover: Duration::from_millis(500),
            short_turn_words: 1,
            short_hangover: Duration::from_millis(900),
            min_words: 1,
            transcript_wait: Duration::from_millis(3_000),
        }
    }
}

/// The turn in progress.
#[derive(Debug, Default)]
struct Turn {
    /// Final transcripts so far, in order.
    texts: Vec<String>,
    start_ms: Option<u64>,
    end_ms: u64,
    /// Segments started and not yet transcribed (final).
    awaiting: usize,
    /// Whether the user speaks now (between the VAD's start and end).
    speaking: bool,
    /// When the user last stopped speaking.
    silent_since: Option<Instant>,
}

impl Turn {
    fn words(&self) -> usize {
        self.texts
            .iter()
            .map(|t| t.split_whitespace().count())
            .sum()
    }
}

/// Ends the user's turns.
pub struct TurnDetectorNode {
    settings: TurnSettings,
    turn: Option<Turn>,
    /// The time of the input being processed (from the runner).
    now: Option<Instant>,
}

impl TurnDetectorNode {
    /// `{hangoverMs 500, shortTurnWords 1, shortHangoverMs 900, minWords 1,
    /// transcriptWaitMs 3000}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when one is out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let defaults = TurnSettings::default();
        let ms = |name: &str, default: Duration| -> Result<Duration, NodeError> {
            let ms: u64 = params.get_or(name, default.as_millis() as u64)?;
            if ms > 60_000 {
                return Err(params.error(name, format!("must be at most 60000 ms, got {ms}")));
            }
            Ok(Duration::from_millis(ms))
        };
        let settings = TurnSettings {
            hangover: ms("hangoverMs", defaults.hangover)?,
            short_turn_words: params.get_or("shortTurnWords", defaults.short_turn_words)?,
            short_hangover: ms("shortHangoverMs", defaults.short_hangover)?,
            min_words: params.get_or("minWords", defaults.min_words)?,
            transcript_wait: ms("transcriptWaitMs", defaults.transcript_wait)?,
        };
        if settings.short_hangover < settings.hangover {
            return Err(params.error(
                "shortHangoverMs",
                format!(
                    "must be at least hangoverMs ({} ms), got {} ms",
                    settings.hangover.as_millis(),
                    settings.short_hangover.as_millis()
                ),
            ));
        }
        Ok(Self::with_settings(settings))
    }

    /// A detector with `settings` (tests).
    pub fn with_settings(settings: TurnSettings) -> Self {
        Self {
            settings,
            turn: None,
            now: None,
        }
    }

    /// The hangover this turn waits after its last speech.
    fn hangover(&self, turn: &Turn) -> Duration {
        if turn.words() <= self.settings.short_turn_words {
            self.settings.short_hangover
        } else {
            self.settings.hangover
        }
    }

    /// The VAD's event at `now`.
    pub fn vad(&mut self, event: VadEvent, now: Instant) {
        match event {
            VadEvent::SpeechStart(ts) => {
                let turn = self.turn.get_or_insert_with(Turn::default);
                turn.start_ms.get_or_insert(ts);
                turn.speaking = true;
                turn.silent_since = None;
                turn.awaiting += 1;
            }
            VadEvent::SpeechEnd(ts) => {
                if let Some(turn) = self.turn.as_mut().filter(|t| t.speaking) {
                    turn.speaking = false;
                    turn.silent_since = Some(now);
                    turn.end_ms = turn.end_ms.max(ts);
                }
            }
        }
    }

    /// A final transcript of one of the turn's segments.
    pub fn transcript(&mut self, text: &str, end_ms: u64) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        turn.awaiting = turn.awaiting.saturating_sub(1);
        turn.end_ms = turn.end_ms.max(end_ms);
        if !text.trim().is_empty() {
            turn.texts.push(text.trim().to_owned());
        }
    }

    /// When the turn in progress may end (at the hangover, or when its transcript is given
    /// up on); `None` while the user speaks or no turn is open.
    pub fn deadline(&self) -> Option<Instant> {
        let turn = self.turn.as_ref()?;
        let silent_since = turn.silent_since.filter(|_| !turn.speaking)?;
        let hangover = silent_since + self.hangover(turn);
        if turn.awaiting > 0 {
            // Ends when the transcript comes (an input) or at this at the latest.
            Some(hangover + self.settings.transcript_wait)
        } else {
            Some(hangover)
        }
    }

    /// Ends the turn if its time has come; its `turn_end` (if it had words) to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Envelope>) {
        let Some(turn) = self.turn.as_ref() else {
            return;
        };
        let Some(silent_since) = turn.silent_since.filter(|_| !turn.speaking) else {
            return;
        };
        let due = silent_since + self.hangover(turn);
        let given_up = due + self.settings.transcript_wait;
        if now < due || (turn.awaiting > 0 && now < given_up) {
            return;
        }
        let Some(turn) = self.turn.take() else {
            return;
        };
        let words = turn.words();
        if words < self.settings.min_words.max(1) {
            return;
        }
        out.push(Envelope::new(RuntimeData::Json {
            payload: serde_json::json!({
                "type": "turn_end",
                "text": turn.texts.join(" "),
                "words": words,
                "start_ms": turn.start_ms.unwrap_or(0),
                "end_ms": turn.end_ms,
            })
            .to_string(),
            schema_type: TURN_SCHEMA.to_owned(),
        }));
    }
}

/// A final transcript's text and end, from a JSON payload.
fn final_transcript(payload: &str) -> Option<(String, u64)> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    if value.get("type")?.as_str()? != "transcript" || !value.get("final")?.as_bool()? {
        return None;
    }
    let text = value.get("text")?.as_str()?.to_owned();
    let end_ms = value
        .get("end_ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some((text, end_ms))
}

impl Node for TurnDetectorNode {
    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Json {
            payload,
            schema_type,
        } = &input.data
        else {
            return Ok(());
        };
        // The runner gives the time before each input; without it (a direct call) the
        // event is still counted, and the turn ends at the next tick or input.
        let now = self.now;
        if let Some(event) = VadEvent::from_json(payload, schema_type) {
            if let Some(now) = now {
                self.vad(event, now);
            }
        } else if let Some((text, end_ms)) = final_transcript(payload) {
            self.transcript(&text, end_ms);
        }
        if let Some(now) = now {
            self.poll(now, out);
        }
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }
}

impl Offload for TurnDetectorNode {
    fn take_jobs(&mut self, _jobs: &mut Vec<Job>) {}

    fn complete(
        &mut self,
        _done: Completed,
        _now: Instant,
        _out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        Ok(())
    }

    fn input_at(&mut self, now: Instant) {
        self.now = Some(now);
    }

    fn next_tick(&self) -> Option<Instant> {
        self.deadline()
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.poll(now, out);
        Ok(())
    }
}

#[cfg(test)]
#[path = "turn_detector_tests.rs"]
mod tests;
