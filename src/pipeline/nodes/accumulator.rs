//! `AudioBufferAccumulatorNode`: gathers a whole utterance into one audio buffer, because batch
//! models (speech recognition) want the utterance, not 20 ms frames.
//!
//! Rule: audio accumulates; a VAD `speech_start` event (fan-in from a VAD node fed the same
//! audio) drops what came before the event's timestamp; a `speech_end` emits the buffer if it
//! holds at least `minUtteranceDurationMs`, else discards it; a buffer reaching
//! `maxUtteranceDurationMs` is emitted at once; end of stream emits what is left (if long
//! enough). Without VAD events the node cuts the stream into `maxUtteranceDurationMs` pieces.

use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

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
        })
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
        let at = ms * u64::from(rate) / 1000;
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
                self.buffer.extend_from_slice(&frame.samples);
                self.clock += (frame.samples.len() / usize::from(format.1)) as u64;
                if self.buffered_ms() >= self.max_ms {
                    self.emit(out);
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
}
