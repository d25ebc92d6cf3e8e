//! `FastResampleNode`: converts audio to `targetRate` with rubato's FFT resampler (through
//! [`crate::media::Resampler`]), so a 16 kHz model can sit behind a 48 kHz WebRTC track and its
//! output can go back.

use serde::Deserialize;

use super::{Node, Params};
use crate::media::Resampler;
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// The original's quality levels. They pick the FFT chunk: rubato's filter length follows it,
/// so a longer chunk cuts off more sharply but delays the output by half a chunk more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Quality {
    #[serde(alias = "low", alias = "LOW")]
    Low,
    #[serde(alias = "medium", alias = "MEDIUM")]
    Medium,
    #[serde(alias = "high", alias = "HIGH")]
    High,
}

impl Quality {
    fn chunk_ms(self) -> u32 {
        match self {
            Quality::Low => 5,
            Quality::Medium => 10,
            Quality::High => 40,
        }
    }
}

/// Resamples each channel of its audio input; other inputs pass through unchanged, so control
/// messages and events can travel along an audio chain to the session output.
pub struct FastResampleNode {
    id: String,
    /// Declared input rate; `None` takes each frame's own rate.
    source_rate: Option<u32>,
    target_rate: u32,
    quality: Quality,
    channels: u16,
    /// One resampler per channel, for the input rate in `from`.
    streams: Vec<Resampler>,
    from: u32,
    metadata: std::collections::HashMap<String, String>,
}

/// Rates above this are not audio we handle (the wire limit is the same).
const MAX_RATE: u32 = 768_000;

impl FastResampleNode {
    /// Reads `targetRate` (required), `sourceRate` (optional), `quality` (Low|Medium|High,
    /// default Medium) and `channels` (default 1).
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when one is missing, mistyped or out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let rate = |name: &str, value: u32| {
            if value == 0 || value > MAX_RATE {
                Err(params.error(
                    name,
                    format!("must be between 1 and {MAX_RATE}, got {value}"),
                ))
            } else {
                Ok(value)
            }
        };
        let target_rate = rate("targetRate", params.required("targetRate")?)?;
        let source_rate = match params.get::<u32>("sourceRate")? {
            Some(r) => Some(rate("sourceRate", r)?),
            None => None,
        };
        let channels: u16 = params.get_or("channels", 1)?;
        if channels == 0 || channels > 64 {
            return Err(params.error(
                "channels",
                format!("must be between 1 and 64, got {channels}"),
            ));
        }
        Ok(Self {
            id: params.id().to_owned(),
            source_rate,
            target_rate,
            quality: params.get_or("quality", Quality::Medium)?,
            channels,
            streams: Vec::new(),
            from: 0,
            metadata: Default::default(),
        })
    }

    /// Ends the current stream: flushes every channel's tail as one last frame.
    fn flush(&mut self, out: &mut Vec<Envelope>) {
        if self.streams.is_empty() {
            return;
        }
        let tails: Vec<Vec<f32>> = self
            .streams
            .iter_mut()
            .map(|r| {
                let mut tail = Vec::new();
                r.flush(&mut tail);
                tail
            })
            .collect();
        self.streams.clear();
        self.push(tails, out);
    }

    /// Interleaves per-channel outputs into one frame (if any samples are ready).
    fn push(&self, per_channel: Vec<Vec<f32>>, out: &mut Vec<Envelope>) {
        let len = per_channel.iter().map(Vec::len).min().unwrap_or(0);
        if len == 0 {
            return;
        }
        let mut samples = Vec::with_capacity(len * per_channel.len());
        for i in 0..len {
            samples.extend(per_channel.iter().map(|c| c[i]));
        }
        out.push(Envelope {
            data: RuntimeData::Audio(AudioFrame {
                samples,
                sample_rate: self.target_rate,
                channels: self.channels,
            }),
            metadata: self.metadata.clone(),
        });
    }
}

impl Node for FastResampleNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Audio(frame) = input.data else {
            // Events and control messages travel on along the audio chain.
            out.push(input);
            return Ok(());
        };
        if frame.channels != self.channels {
            return Err(NodeError::Input(format!(
                "node `{}`: got {}-channel audio, params.channels is {}",
                self.id, frame.channels, self.channels
            )));
        }
        if let Some(declared) = self.source_rate {
            if declared != frame.sample_rate {
                return Err(NodeError::Input(format!(
                    "node `{}`: got {} Hz audio, params.sourceRate is {declared}",
                    self.id, frame.sample_rate
                )));
            }
        }
        if self.streams.is_empty() || self.from != frame.sample_rate {
            self.flush(out);
            self.streams = (0..self.channels)
                .map(|_| {
                    Resampler::with_chunk_ms(
                        frame.sample_rate,
                        self.target_rate,
                        self.quality.chunk_ms(),
                    )
                })
                .collect::<Result<_, _>>()
                .map_err(|e| NodeError::Input(format!("node `{}`: {e}", self.id)))?;
            self.from = frame.sample_rate;
        }
        self.metadata = input.metadata;
        let channels = usize::from(self.channels);
        let mut outputs = Vec::with_capacity(channels);
        for (c, stream) in self.streams.iter_mut().enumerate() {
            let mono: Vec<f32> = frame
                .samples
                .iter()
                .skip(c)
                .step_by(channels)
                .copied()
                .collect();
            let mut resampled = Vec::new();
            stream
                .process(&mono, &mut resampled)
                .map_err(|e| NodeError::Input(format!("node `{}`: {e}", self.id)))?;
            outputs.push(resampled);
        }
        self.push(outputs, out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        self.flush(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{dominant_frequency, sine};
    use serde_json::json;

    fn node(p: serde_json::Value) -> Result<FastResampleNode, NodeError> {
        FastResampleNode::new(&Params::new("rs", &p).unwrap())
    }

    fn run(node: &mut FastResampleNode, input: &[f32], rate: u32, channels: u16) -> Vec<f32> {
        let mut out = Vec::new();
        for part in input.chunks(960 * usize::from(channels)) {
            let frame = AudioFrame {
                samples: part.to_vec(),
                sample_rate: rate,
                channels,
            };
            node.process(Envelope::new(RuntimeData::Audio(frame)), &mut out)
                .unwrap();
        }
        node.finish(&mut out).unwrap();
        out.into_iter()
            .flat_map(|e| match e.data {
                RuntimeData::Audio(f) => {
                    assert_eq!(f.sample_rate, node.target_rate);
                    f.samples
                }
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn each_quality_keeps_pitch_and_length() {
        for q in ["Low", "Medium", "High"] {
            let mut n =
                node(json!({"sourceRate": 48000, "targetRate": 16000, "quality": q})).unwrap();
            let out = run(&mut n, &sine(440.0, 48_000, 48_000, 0.5), 48_000, 1);
            assert!(out.len().abs_diff(16_000) <= 2, "{q}: {}", out.len());
            let f = dominant_frequency(&out, 16_000);
            assert!((f - 440.0).abs() < 2.0, "{q}: {f}");
        }
    }

    #[test]
    fn stereo_channels_stay_apart() {
        let mut n = node(json!({"target_rate": 16000, "channels": 2})).unwrap();
        let left = sine(440.0, 48_000, 48_000, 0.5);
        let right = sine(1000.0, 48_000, 48_000, 0.5);
        let inter: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(l, r)| [*l, *r])
            .collect();
        let out = run(&mut n, &inter, 48_000, 2);
        let l: Vec<f32> = out.iter().step_by(2).copied().collect();
        let r: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
        assert!((dominant_frequency(&l, 16_000) - 440.0).abs() < 2.0);
        assert!((dominant_frequency(&r, 16_000) - 1000.0).abs() < 2.0);
    }

    #[test]
    fn params_are_checked() {
        let err = node(json!({})).err().unwrap().to_string();
        assert!(
            err.contains("node `rs`: params.targetRate: is required"),
            "{err}"
        );
        let err = node(json!({"targetRate": "fast"}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("params.targetRate"), "{err}");
        let err = node(json!({"targetRate": 16000, "quality": "Best"}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("params.quality"), "{err}");
        assert!(node(json!({"targetRate": 16000, "channels": 0})).is_err());
    }

    #[test]
    fn mismatched_input_is_an_error_not_a_panic() {
        let mut n = node(json!({"sourceRate": 48000, "targetRate": 16000})).unwrap();
        let frame = AudioFrame {
            samples: vec![0.0; 160],
            sample_rate: 16_000,
            channels: 1,
        };
        let mut out = Vec::new();
        let err = n
            .process(Envelope::new(RuntimeData::Audio(frame)), &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sourceRate"), "{err}");
    }
}
