//! `AudioChunkerNode`: re-cuts an audio stream into chunks of exactly `chunkSize` samples per
//! channel, because downstream steps (a VAD wanting 20 ms, a model wanting 512 samples) need a
//! fixed size while WebRTC and resamplers deliver whatever they have.

use super::{Node, Params};
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// The original's default: 512 samples per channel (32 ms at 16 kHz).
const DEFAULT_CHUNK_SIZE: usize = 512;

/// Buffers audio and emits full chunks; never pads in the middle of a stream. The remainder is
/// emitted, shorter, at end of stream or when the format (rate, channels) changes, so no sample
/// is lost or mixed across formats.
#[derive(Debug)]
pub struct AudioChunkerNode {
    chunk_size: usize,
    /// Interleaved samples not yet emitted, all of `format`.
    pending: Vec<f32>,
    /// (sample_rate, channels) of `pending`.
    format: Option<(u32, u16)>,
    metadata: std::collections::HashMap<String, String>,
}

impl AudioChunkerNode {
    /// Reads `chunkSize` (samples per channel, ≥ 1, default 512).
    ///
    /// # Errors
    /// [`NodeError::Param`] for a non-integer or zero `chunkSize`.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let chunk_size: usize = params.get_or("chunkSize", DEFAULT_CHUNK_SIZE)?;
        if chunk_size == 0 || chunk_size > 10_000_000 {
            return Err(params.error(
                "chunkSize",
                format!("must be between 1 and 10000000, got {chunk_size}"),
            ));
        }
        Ok(Self {
            chunk_size,
            pending: Vec::new(),
            format: None,
            metadata: Default::default(),
        })
    }

    fn emit(&self, samples: Vec<f32>, out: &mut Vec<Envelope>) {
        let Some((sample_rate, channels)) = self.format else {
            return;
        };
        out.push(Envelope {
            data: RuntimeData::Audio(AudioFrame {
                samples,
                sample_rate,
                channels,
            }),
            metadata: self.metadata.clone(),
        });
    }

    fn flush_remainder(&mut self, out: &mut Vec<Envelope>) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(rest, out);
        }
    }
}

impl Node for AudioChunkerNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Audio(frame) = input.data else {
            // Events and control messages travel on along the audio chain.
            out.push(input);
            return Ok(());
        };
        let format = (frame.sample_rate, frame.channels.max(1));
        if self.format != Some(format) {
            self.flush_remainder(out);
            self.format = Some(format);
        }
        self.metadata = input.metadata;
        let step = self.chunk_size * usize::from(format.1);
        self.pending.extend_from_slice(&frame.samples);
        if self.pending.len() >= step {
            let full = self.pending.len() / step * step;
            let rest = self.pending.split_off(full);
            let ready = std::mem::replace(&mut self.pending, rest);
            for chunk in ready.chunks_exact(step) {
                self.emit(chunk.to_vec(), out);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.flush_remainder(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn audio(samples: Vec<f32>, sample_rate: u32, channels: u16) -> Envelope {
        Envelope::new(RuntimeData::Audio(AudioFrame {
            samples,
            sample_rate,
            channels,
        }))
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
    fn cuts_exact_chunks_and_flushes_the_rest() {
        let p = json!({"chunkSize": 320});
        let mut node = AudioChunkerNode::new(&Params::new("c", &p).unwrap()).unwrap();
        let mut out = Vec::new();
        let input: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        for part in input.chunks(333) {
            node.process(audio(part.to_vec(), 16_000, 1), &mut out)
                .unwrap();
        }
        assert_eq!(lens(&out), [320, 320, 320]);
        node.finish(&mut out).unwrap();
        assert_eq!(lens(&out), [320, 320, 320, 40]);
        let joined: Vec<f32> = out
            .iter()
            .flat_map(|e| match &e.data {
                RuntimeData::Audio(f) => f.samples.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(joined, input);
    }

    #[test]
    fn stereo_counts_samples_per_channel_and_format_change_flushes() {
        let p = json!({"chunk_size": 4});
        let mut node = AudioChunkerNode::new(&Params::new("c", &p).unwrap()).unwrap();
        let mut out = Vec::new();
        node.process(audio(vec![0.0; 10], 48_000, 2), &mut out)
            .unwrap();
        assert_eq!(lens(&out), [8]);
        node.process(audio(vec![0.0; 3], 16_000, 1), &mut out)
            .unwrap();
        assert_eq!(lens(&out), [8, 2]);
        node.finish(&mut out).unwrap();
        assert_eq!(lens(&out), [8, 2, 3]);
    }

    #[test]
    fn default_and_bad_params() {
        let p = serde_json::Value::Null;
        let node = AudioChunkerNode::new(&Params::new("c", &p).unwrap()).unwrap();
        assert_eq!(node.chunk_size, 512);
        for bad in [json!({"chunkSize": 0}), json!({"chunkSize": "big"})] {
            let err = AudioChunkerNode::new(&Params::new("c", &bad).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("node `c`: params.chunkSize"), "{err}");
        }
    }
}
