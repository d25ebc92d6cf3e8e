//! `SpeechToTextNode`: audio in (any rate and channel count, resampled to 16 kHz inside),
//! transcripts out as `DataBuffer{json}` with `schema_type` "transcript":
//! `{"type":"transcript","final":bool,"text":…,"start_ms":…,"end_ms":…}`.
//!
//! Utterances are the VAD's: a `VADNode` upstream passes its audio and its `speech_start` /
//! `speech_end` events along one edge; an utterance starts at `speech_start` (with the audio
//! since its timestamp, kept in a short pre-roll, because the VAD confirms speech only after
//! `minSpeechMs`) and ends at `speech_end`. Times are the VAD's (ms since the session's first
//! audio). The VAD's events are passed on (`passEvents`), so a turn detector downstream sees
//! them in order with the transcripts.
//!
//! An offloaded node ([`crate::pipeline::offload`]): decoding runs on the process's pool, one
//! job at a time per session, each job the audio gathered since the last one (so a slow pool
//! makes bigger jobs, not more). An utterance leases a decoder from the process's shared pool
//! ([`super::speech_recognizer`]) at its first job and returns it with its final. Partial
//! transcripts come after each job whose hypothesis changed; the final after `speech_end`.
//!
//! The final is what a turn waits for, so it is not delayed by silence: at `speech_end`, the
//! audio not yet decoded beyond [`FINAL_TAIL_MS`] after the VAD's end time (the rest of the
//! silence the VAD waited for) is dropped, and the final decodes only what is left of the
//! speech and the engine's end of utterance.
//!
//! Bounds: an utterance is cut (a final, then a new utterance) after `maxUtteranceMs`; audio
//! waiting for the engine beyond [`MAX_PENDING_MS`] drops the oldest utterance (`backlog`);
//! when every decoder is leased, an utterance's audio waits in its job state (up to
//! `maxUtteranceMs`) for one, and its final says it was not transcribed if none came.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::pocketsphinx_ffi::DECODER_RATE;
use super::speech_recognizer::{recognizer, DecoderPool, Lease};
use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::media::Resampler;
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;
use crate::pipeline::offload::{count_dropped, Completed, DropReason, Job, Offload, Outcome};

/// The `schema_type` of transcripts.
pub const TRANSCRIPT_SCHEMA: &str = "transcript";
/// Audio waiting for the engine at most (every utterance of the session together).
pub const MAX_PENDING_MS: u64 = 60_000;
/// Audio kept before `speech_start` at most.
const MAX_PRE_ROLL_MS: u64 = 1_000;
/// Audio kept for the final after the VAD's `speech_end` time (its last voiced audio plus its
/// pad): the rest of the `minSilenceMs` the VAD waited to end the segment is silence, and
/// decoding it would only delay the final transcript a turn waits for.
pub const FINAL_TAIL_MS: u64 = 150;
/// Samples per ms at the decoder's rate.
const PER_MS: u64 = DECODER_RATE as u64 / 1000;

/// Transcribes the VAD's utterances.
pub struct SpeechToTextNode {
    id: String,
    pool: Arc<DecoderPool>,
    settings: Settings,
    /// The input's rate and the resampler to 16 kHz.
    resampler: Option<(u32, Resampler)>,
    /// 16 kHz samples received: the node's clock (the VAD's, when it passes all audio).
    clock: u64,
    /// Recent audio outside utterances, for the next one's onset.
    pre_roll: VecDeque<i16>,
    /// The utterance being heard.
    current: Option<Heard>,
    /// Audio not yet handed to the engine, oldest first.
    pending: VecDeque<Chunk>,
    /// The job at the engine (one at a time).
    in_flight: Option<Chunk>,
    /// Shared with the jobs: the decoder of the utterance being decoded.
    stream: Arc<Mutex<Stream>>,
    /// Last partial text sent, per utterance, so an unchanged one is not repeated.
    last_partial: Option<(u64, String)>,
    jobs: Vec<Job>,
    next_job: u64,
    next_utterance: u64,
    pass_events: bool,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Audio gathered before a partial job (0: no partials, one job per utterance).
    partial_samples: u64,
    max_utterance_samples: u64,
}

#[derive(Debug)]
struct Heard {
    utterance: u64,
    start_ms: u64,
    /// Samples of it so far.
    samples: u64,
}

/// Audio of one utterance for the engine; `last` once its end is known.
#[derive(Debug, Default)]
struct Chunk {
    utterance: u64,
    samples: Vec<i16>,
    last: bool,
    start_ms: u64,
    end_ms: u64,
}

/// What the jobs of this node share across utterances.
#[derive(Debug, Default)]
struct Stream {
    utterance: Option<u64>,
    lease: Option<Lease>,
    /// Audio of the utterance while no decoder is free.
    waiting: Vec<i16>,
}

impl SpeechToTextNode {
    /// `{engine "pocketsphinx", model, dict, languageModel | keywords | grammar, decoders 2,
    /// partialMs 300, maxUtteranceMs 20000, passEvents true}` (see
    /// [`super::speech_recognizer::recognizer`]). Loads the model on first use in the process.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param: an unknown engine, a missing model file (its
    /// path named), a value out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let partial_ms: u64 = params.get_or("partialMs", 300)?;
        if partial_ms > 10_000 {
            return Err(params.error(
                "partialMs",
                format!("must be 0 (no partials) ..= 10000 ms, got {partial_ms}"),
            ));
        }
        let max_utterance_ms: u64 = params.get_or("maxUtteranceMs", 20_000)?;
        if !(1_000..=MAX_PENDING_MS / 2).contains(&max_utterance_ms) {
            return Err(params.error(
                "maxUtteranceMs",
                format!(
                    "must be 1000..={} ms, got {max_utterance_ms}",
                    MAX_PENDING_MS / 2
                ),
            ));
        }
        let pass_events = params.get_or("passEvents", true)?;
        let pool = recognizer(params)?;
        let mut node = Self::with_pool(params.id(), pool, partial_ms, max_utterance_ms);
        node.pass_events = pass_events;
        Ok(node)
    }

    /// A node decoding with `pool` (tests).
    pub fn with_pool(
        id: &str,
        pool: Arc<DecoderPool>,
        partial_ms: u64,
        max_utterance_ms: u64,
    ) -> Self {
        Self {
            id: id.to_owned(),
            pool,
            settings: Settings {
                partial_samples: partial_ms * PER_MS,
                max_utterance_samples: max_utterance_ms * PER_MS,
            },
            resampler: None,
            clock: 0,
            pre_roll: VecDeque::new(),
            current: None,
            pending: VecDeque::new(),
            in_flight: None,
            stream: Arc::new(Mutex::new(Stream::default())),
            last_partial: None,
            jobs: Vec::new(),
            next_job: 0,
            next_utterance: 0,
            pass_events: true,
        }
    }

    /// The node's clock in ms.
    fn now_ms(&self) -> u64 {
        self.clock / PER_MS
    }

    /// Mono 16 kHz samples of `frame`.
    fn resample_to_decoder(
        &mut self,
        frame: &crate::pipeline::AudioFrame,
    ) -> Result<Vec<i16>, NodeError> {
        let channels = usize::from(frame.channels.max(1));
        let mono: Vec<f32> = if channels == 1 {
            frame.samples.clone()
        } else {
            frame
                .samples
                .chunks(channels)
                .map(|c| c.iter().sum::<f32>() / c.len() as f32)
                .collect()
        };
        if self.resampler.as_ref().map(|(rate, _)| *rate) != Some(frame.sample_rate) {
            let resampler = Resampler::new(frame.sample_rate, DECODER_RATE)
                .map_err(|e| NodeError::Input(format!("node `{}`: {e}", self.id)))?;
            self.resampler = Some((frame.sample_rate, resampler));
        }
        let mut out = Vec::with_capacity(mono.len());
        if let Some((_, resampler)) = self.resampler.as_mut() {
            resampler
                .process(&mono, &mut out)
                .map_err(|e| NodeError::Input(format!("node `{}`: {e}", self.id)))?;
        }
        Ok(out
            .into_iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32_767.0) as i16)
            .collect())
    }

    fn hear(&mut self, samples: Vec<i16>) {
        self.clock += samples.len() as u64;
        let Some(heard) = self.current.as_mut() else {
            self.pre_roll.extend(samples);
            let cap = (MAX_PRE_ROLL_MS * PER_MS) as usize;
            if self.pre_roll.len() > cap {
                let cut = self.pre_roll.len() - cap;
                self.pre_roll.drain(..cut);
            }
            return;
        };
        heard.samples += samples.len() as u64;
        let (utterance, start_ms, total) = (heard.utterance, heard.start_ms, heard.samples);
        self.push_audio(utterance, start_ms, samples);
        if total >= self.settings.max_utterance_samples {
            // Too long: a final now, and the speech goes on as a new utterance.
            let now = self.now_ms();
            self.end_utterance(now);
            self.start_utterance(now);
        }
    }

    /// Appends audio of `utterance` to the pending chunk of it (or a new one).
    fn push_audio(&mut self, utterance: u64, start_ms: u64, samples: Vec<i16>) {
        let end_ms = self.now_ms();
        match self.pending.back_mut() {
            Some(chunk) if chunk.utterance == utterance && !chunk.last => {
                chunk.samples.extend(samples);
                chunk.end_ms = end_ms;
            }
            _ => self.pending.push_back(Chunk {
                utterance,
                samples,
                last: false,
                start_ms,
                end_ms,
            }),
        }
        self.bound_pending();
    }

    /// Drops the oldest utterances while too much audio waits (`backlog`).
    fn bound_pending(&mut self) {
        let max = (MAX_PENDING_MS * PER_MS) as usize;
        while self.pending.iter().map(|c| c.samples.len()).sum::<usize>() > max {
            let Some(oldest) = self.pending.front().map(|c| c.utterance) else {
                return;
            };
            let before = self.pending.len();
            self.pending.retain(|c| c.utterance != oldest);
            count_dropped(DropReason::Backlog, (before - self.pending.len()) as u64);
            if self.current.as_ref().is_some_and(|h| h.utterance == oldest) {
                self.current = None;
            }
        }
    }

    fn start_utterance(&mut self, start_ms: u64) {
        if self.current.is_some() {
            return;
        }
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        // The audio since the VAD's onset, as far as the pre-roll reaches.
        let back = (self.now_ms().saturating_sub(start_ms) * PER_MS) as usize;
        let take = back.min(self.pre_roll.len());
        let onset: Vec<i16> = self.pre_roll.drain(self.pre_roll.len() - take..).collect();
        self.pre_roll.clear();
        self.current = Some(Heard {
            utterance,
            start_ms,
            samples: onset.len() as u64,
        });
        self.push_audio(utterance, start_ms, onset);
    }

    fn end_utterance(&mut self, end_ms: u64) {
        let Some(heard) = self.current.take() else {
            return;
        };
        let silence = self
            .now_ms()
            .saturating_sub(end_ms.saturating_add(FINAL_TAIL_MS))
            * PER_MS;
        match self.pending.back_mut() {
            Some(chunk) if chunk.utterance == heard.utterance => {
                // The silence not yet decoded goes, but for the tail.
                let keep = chunk
                    .samples
                    .len()
                    .saturating_sub(usize::try_from(silence).unwrap_or(usize::MAX));
                chunk.samples.truncate(keep);
                chunk.last = true;
                chunk.end_ms = end_ms;
            }
            _ => self.pending.push_back(Chunk {
                utterance: heard.utterance,
                samples: Vec::new(),
                last: true,
                start_ms: heard.start_ms,
                end_ms,
            }),
        }
    }

    /// Hands the next chunk to the engine when none is there and it is worth a job.
    fn pump(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let ready = self.pending.front().is_some_and(|chunk| {
            chunk.last
                || (self.settings.partial_samples > 0
                    && chunk.samples.len() as u64 >= self.settings.partial_samples)
        });
        if !ready {
            return;
        }
        let Some(chunk) = self.pending.pop_front() else {
            return;
        };
        let id = self.next_job;
        self.next_job += 1;
        let work = decode_job(
            self.id.clone(),
            Arc::clone(&self.pool),
            Arc::clone(&self.stream),
            &chunk,
            self.settings.max_utterance_samples as usize,
        );
        self.jobs.push(Job {
            id,
            utterance: chunk.utterance,
            work,
        });
        self.in_flight = Some(Chunk {
            samples: Vec::new(),
            ..chunk
        });
    }

    /// After a dropped job: the rest of its utterance goes, and its decoder back to the
    /// pool (no job of ours runs now, so the lock is free; if not, the next job frees it).
    fn drop_utterance(&mut self, utterance: u64) {
        let before = self.pending.len();
        self.pending.retain(|c| c.utterance != utterance);
        let dropped = before - self.pending.len();
        if dropped > 0 {
            count_dropped(DropReason::Backlog, dropped as u64);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|h| h.utterance == utterance)
        {
            self.current = None;
        }
        if let Some(mut stream) = self.stream.try_lock() {
            if stream.utterance == Some(utterance) {
                *stream = Stream::default();
            }
        }
    }
}

/// The job decoding `chunk` with the utterance's leased decoder.
fn decode_job(
    node: String,
    pool: Arc<DecoderPool>,
    stream: Arc<Mutex<Stream>>,
    chunk: &Chunk,
    max_waiting: usize,
) -> crate::pipeline::offload::Work {
    let (utterance, last, start_ms, end_ms) =
        (chunk.utterance, chunk.last, chunk.start_ms, chunk.end_ms);
    let samples = chunk.samples.clone();
    Box::new(move || {
        let mut stream = stream.lock();
        let failed =
            |err: &dyn std::fmt::Display| NodeError::Input(format!("node `{node}`: {err}"));
        if stream.utterance != Some(utterance) {
            // A new utterance: the last one's decoder (if it was left) goes back first.
            *stream = Stream {
                utterance: Some(utterance),
                ..Stream::default()
            };
        }
        if stream.lease.is_none() {
            match pool.try_lease().map_err(|e| failed(&e))? {
                Some(mut lease) => {
                    let waiting = std::mem::take(&mut stream.waiting);
                    lease.decoder().start().map_err(|e| failed(&e))?;
                    lease.decoder().process(&waiting).map_err(|e| failed(&e))?;
                    stream.lease = Some(lease);
                }
                None => {
                    let room = max_waiting.saturating_sub(stream.waiting.len());
                    stream
                        .waiting
                        .extend_from_slice(&samples[..samples.len().min(room)]);
                    if !last {
                        return Ok(Vec::new());
                    }
                    *stream = Stream::default();
                    return Err(failed(&format!(
                        "all {} decoders busy: an utterance was not transcribed",
                        pool.size()
                    )));
                }
            }
        }
        let Some(lease) = stream.lease.as_mut() else {
            return Ok(Vec::new());
        };
        let decoder = lease.decoder();
        let result = decoder.process(&samples).and_then(|()| {
            if last {
                decoder.end()?;
            }
            Ok(decoder.hypothesis())
        });
        if last || result.is_err() {
            // The decoder goes back to the pool; a failed utterance is not decoded further.
            *stream = Stream::default();
        }
        let text = result.map_err(|e| failed(&e))?;
        Ok(vec![transcript(last, &text, start_ms, end_ms)])
    })
}

/// A transcript as it travels.
pub fn transcript(last: bool, text: &str, start_ms: u64, end_ms: u64) -> Envelope {
    Envelope::new(RuntimeData::Json {
        payload: serde_json::json!({
            "type": "transcript",
            "final": last,
            "text": text,
            "start_ms": start_ms,
            "end_ms": end_ms,
        })
        .to_string(),
        schema_type: TRANSCRIPT_SCHEMA.to_owned(),
    })
}

impl Node for SpeechToTextNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Audio(_) | RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        match &input.data {
            RuntimeData::Audio(frame) => {
                let samples = self.resample_to_decoder(frame)?;
                self.hear(samples);
            }
            RuntimeData::Json {
                payload,
                schema_type,
            } => {
                match VadEvent::from_json(payload, schema_type) {
                    Some(VadEvent::SpeechStart(ts)) => self.start_utterance(ts),
                    Some(VadEvent::SpeechEnd(ts)) => self.end_utterance(ts),
                    None => {}
                }
                if self.pass_events {
                    out.push(input);
                }
            }
            _ => {}
        }
        self.pump();
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        // The VAD ends its segment at the end of the stream, so nothing should be left; an
        // utterance without its end is not transcribed.
        let _ = out;
        Ok(())
    }
}

impl Offload for SpeechToTextNode {
    fn take_jobs(&mut self, jobs: &mut Vec<Job>) {
        jobs.append(&mut self.jobs);
    }

    fn complete(
        &mut self,
        done: Completed,
        _now: Instant,
        out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        let chunk = self.in_flight.take();
        match done.outcome {
            Outcome::Ran(Ok(outputs)) => {
                for env in outputs {
                    if let Some(text) = partial_text(&env) {
                        let key = (done.utterance, text);
                        if self.last_partial.as_ref() == Some(&key) || key.1.is_empty() {
                            continue;
                        }
                        self.last_partial = Some(key);
                    }
                    out.push(env);
                }
            }
            Outcome::Ran(Err(err)) => {
                tracing::warn!(node = %self.id, %err, "utterance not transcribed");
                self.drop_utterance(done.utterance);
                // Its end still counts: a final with no text, so a turn does not wait.
                if let Some(c) = chunk.as_ref().filter(|c| c.last) {
                    out.push(transcript(true, "", c.start_ms, c.end_ms));
                }
            }
            Outcome::Dropped(_) => self.drop_utterance(done.utterance),
        }
        self.pump();
        Ok(())
    }
}

/// The text of a partial transcript envelope.
fn partial_text(env: &Envelope) -> Option<String> {
    let RuntimeData::Json { payload, .. } = &env.data else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    if value.get("final")?.as_bool()? {
        return None;
    }
    Some(value.get("text")?.as_str()?.to_owned())
}

#[cfg(test)]
#[path = "speech_to_text_tests.rs"]
mod tests;
