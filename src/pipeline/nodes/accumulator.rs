//! `AudioBufferAccumulatorNode`: gathers a whole utterance into one audio buffer, because batch
//! models (speech recognition) want the utterance, not 20 ms frames.
//!
//! Rule: audio accumulates; a VAD `speech_start` event (fan-in from a VAD node fed the same
//! audio) drops what came before the event's timestamp; a `speech_end` emits the buffer if it
//! holds at least `minUtteranceDurationMs`, else discards it; a buffer reaching
//! `maxUtteranceDurationMs` is emitted at once; end of stream emits what is left (if long
//! enough). Without VAD events the node cuts the stream into `maxUtteranceDurationMs` pieces.
//!
//! Durations come from the sample rate and channel count the audio claims, which a client
//! chooses (768 kHz and thousands of channels pass the wire checks), so the buffer is also
//! bounded by `--max-utterance-bytes`: a buffer reaching it is emitted as if it had reached
//! the maximum duration, counted.

use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::metrics::{limit_hit, Limit};
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Bytes per buffered sample.
const SAMPLE_BYTES: usize = std::mem::size_of::<f32>();

/// Buffers one utterance of a single audio format.
#[derive(Debug)]
pub struct AudioBufferAccumulatorNode {
    min_ms: u64,
    max_ms: u64,
    /// Interleaved samples of the utterance so far.
    buffer: Vec<f32>,
    /// (rate, channels) of `buffer`.
    format: Option<(u32, u16)>,
    /// Samples per channel seen since the first audio: the VAD events' clock.
    clock: u64,
    /// `clock` at `buffer[0]`.
    buffer_start: u64,
    /// Samples `buffer` may hold (`--max-utterance-bytes`).
    max_samples: usize,
}

impl AudioBufferAccumulatorNode {
    /// `{minUtteranceDurationMs 250, maxUtteranceDurationMs 30000}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when mistyped, or max < min or max = 0.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let min_ms: u64 = params.get_or("minUtteranceDurationMs", 250)?;
        let max_ms: u64 = params.get_or("maxUtteranceDurationMs", 30_000)?;
        if max_ms == 0 || max_ms < min_ms || max_ms > 600_000 {
            return Err(params.error(
                "maxUtteranceDurationMs",
                format!("must be 1..=600000 and at least minUtteranceDurationMs ({min_ms}), got {max_ms}"),
            ));
        }
        Ok(Self {
            min_ms,
            max_ms,
            buffer: Vec::new(),
            format: None,
            clock: 0,
            buffer_start: 0,
            max_samples: usize::MAX,
        })
    }

    /// The same node, its buffer bounded to `max_bytes` (at least one sample).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_samples = (max_bytes / SAMPLE_BYTES).max(1);
        self
    }

    fn channels(&self) -> usize {
        self.format.map_or(1, |(_, c)| usize::from(c.max(1)))
    }

    fn buffered_ms(&self) -> u64 {
        let Some((rate, _)) = self.format else {
            return 0;
        };
        (self.buffer.len() / self.channels()) as u64 * 1000 / u64::from(rate.max(1))
    }

    /// Emits the buffer when long enough, and empties it either way.
    fn emit(&mut self, out: &mut Vec<Envelope>) {
        let samples = std::mem::take(&mut self.buffer);
        self.buffer_start = self.clock;
        let Some((sample_rate, channels)) = self.format else {
            return;
        };
        let per_channel = samples.len() / usize::from(channels.max(1));
        if per_channel == 0 || (per_channel as u64) * 1000 < self.min_ms * u64::from(sample_rate) {
            return;
        }
        out.push(Envelope::new(RuntimeData::Audio(AudioFrame {
            samples,
            sample_rate,
            channels,
        })));
    }

    fn drop_before(&mut self, ms: u64) {
        let Some((rate, _)) = self.format else {
            return;
        };
        // `ms` is a VAD event's, which a client may send: no overflow.
        let at = ms.saturating_mul(u64::from(rate)) / 1000;
        let skip = at.saturating_sub(self.buffer_start) as usize * self.channels();
        let skip = skip.min(self.buffer.len());
        self.buffer.drain(..skip);
        self.buffer_start += (skip / self.channels()) as u64;
    }
}

impl Node for AudioBufferAccumulatorNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Audio(_) | RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        match input.data {
            RuntimeData::Audio(frame) => {
                let format = (frame.sample_rate, frame.channels.max(1));
                if self.format != Some(format) {
                    self.emit(out);
                    self.format = Some(format);
                }
                let per_channel = frame.samples.len() / usize::from(format.1);
                // Whole frames of every channel, so a cut keeps the channels interleaved.
                let room = self.max_samples.max(usize::from(format.1));
                let room = room - room % usize::from(format.1);
                let mut samples = &frame.samples[..per_channel * usize::from(format.1)];
                while !samples.is_empty() {
                    let take = samples.len().min(room - self.buffer.len().min(room));
                    let (now, later) = samples.split_at(take);
                    self.buffer.extend_from_slice(now);
                    self.clock += (now.len() / usize::from(format.1)) as u64;
                    samples = later;
                    if self.buffer.len() >= room {
                        tracing::debug!(
                            bytes = self.buffer.len() * SAMPLE_BYTES,
                            "utterance over --max-utterance-bytes; cut"
                        );
                        limit_hit(Limit::UtteranceBytes, 1);
                        self.emit(out);
                    } else if self.buffered_ms() >= self.max_ms {
                        self.emit(out);
                    }
                }
            }
            RuntimeData::Json {
                payload,
                schema_type,
            } => match VadEvent::from_json(&payload, &schema_type) {
                Some(VadEvent::SpeechStart(ts)) => self.drop_before(ts),
                Some(VadEvent::SpeechEnd(_)) => self.emit(out),
                None => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.emit(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(p: serde_json::Value) -> AudioBufferAccumulatorNode {
        AudioBufferAccumulatorNode::new(&Params::new("acc", &p).unwrap()).unwrap()
    }

    fn ms_of_audio(node: &mut AudioBufferAccumulatorNode, ms: usize, out: &mut Vec<Envelope>) {
        for _ in 0..ms / 20 {
            let f = AudioFrame {
                samples: vec![0.1; 320],
                sample_rate: 16_000,
                channels: 1,
            };
            node.process(Envelope::new(RuntimeData::Audio(f)), out)
                .unwrap();
        }
    }

    fn lens(out: &[Envelope]) -> Vec<usize> {
        out.iter()
            .map(|e| match &e.data {
                RuntimeData::Audio(f) => f.samples.len(),
                _ => 0,
            })
            .collect()
    }

    #[test]
    fn utterance_between_vad_events() {
        let mut n = node(json!({}));
        let mut out = Vec::new();
        ms_of_audio(&mut n, 1000, &mut out);
        n.process(VadEvent::SpeechStart(800).to_envelope(), &mut out)
            .unwrap();
        ms_of_audio(&mut n, 600, &mut out);
        n.process(VadEvent::SpeechEnd(1600).to_envelope(), &mut out)
            .unwrap();
        // From 800 ms to 1600 ms: 0.8 s at 16 kHz.
        assert_eq!(lens(&out), [12_800]);
        // A 100 ms blip is under minUtteranceDurationMs.
        n.process(VadEvent::SpeechStart(1600).to_envelope(), &mut out)
            .unwrap();
        ms_of_audio(&mut n, 100, &mut out);
        n.process(VadEvent::SpeechEnd(1700).to_envelope(), &mut out)
            .unwrap();
        assert_eq!(lens(&out), [12_800]);
    }

    #[test]
    fn max_duration_cuts_and_finish_flushes() {
        let mut n = node(json!({"max_utterance_duration_ms": 500, "minUtteranceDurationMs": 100}));
        let mut out = Vec::new();
        ms_of_audio(&mut n, 1200, &mut out);
        assert_eq!(lens(&out), [8000, 8000]);
        n.finish(&mut out).unwrap();
        assert_eq!(lens(&out), [8000, 8000, 3200]);
    }

    #[test]
    fn bad_params_name_the_field() {
        let p = json!({"minUtteranceDurationMs": 500, "maxUtteranceDurationMs": 100});
        let err = AudioBufferAccumulatorNode::new(&Params::new("acc", &p).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node `acc`: params.maxUtteranceDurationMs"),
            "{err}"
        );
    }

    #[test]
    fn a_claimed_rate_cannot_grow_the_buffer_past_its_bytes() {
        let hits = crate::metrics::metrics()
            .limit_hits
            .with_label_values(&["utterance_bytes"]);
        let before = hits.get();
        // 30 s at a claimed 768 kHz would be 23 million samples; 1,000 are allowed.
        let mut n = node(json!({"minUtteranceDurationMs": 0})).with_max_bytes(4000);
        let mut out = Vec::new();
        for _ in 0..10 {
            let f = AudioFrame {
                samples: vec![0.1; 320],
                sample_rate: 768_000,
                channels: 1,
            };
            n.process(Envelope::new(RuntimeData::Audio(f)), &mut out)
                .unwrap();
            assert!(n.buffer.len() <= 1000);
        }
        assert_eq!(lens(&out), [1000, 1000, 1000]);
        assert!(hits.get() >= before + 3);
        // Stereo is cut between whole sample pairs.
        let mut n = node(json!({"minUtteranceDurationMs": 0})).with_max_bytes(20);
        let f = AudioFrame {
            samples: vec![0.1; 12],
            sample_rate: 48_000,
            channels: 2,
        };
        let mut out = Vec::new();
        n.process(Envelope::new(RuntimeData::Audio(f)), &mut out)
            .unwrap();
        assert_eq!(lens(&out), [4, 4, 4]);
    }

    #[test]
    fn a_client_s_vad_timestamp_cannot_overflow() {
        let mut n = node(json!({}));
        let mut out = Vec::new();
        ms_of_audio(&mut n, 100, &mut out);
        n.process(VadEvent::SpeechStart(u64::MAX).to_envelope(), &mut out)
            .unwrap();
        assert!(n.buffer.is_empty());
    }
}
