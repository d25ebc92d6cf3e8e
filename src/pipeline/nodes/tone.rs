//! `ToneGeneratorNode`: a test source. It answers each input with a sine chunk, so a pipeline's
//! audio path can be checked without a microphone (a known frequency and level come out).
//!
//! Rule: an audio input is replaced by a tone of the same duration (or `durationMs` when set);
//! any other input (a data-channel message) triggers a tone of `durationMs` (default 1000 ms).
//! The phase runs on across chunks, so consecutive chunks form one clean tone.

use super::{Node, Params};
use crate::media::SineGenerator;
use crate::pipeline::data::{AudioFrame, Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Emits mono sine audio at `sampleRate`.
pub struct ToneGeneratorNode {
    generator: SineGenerator,
    sample_rate: u32,
    duration_ms: Option<u32>,
}

/// Default tone length for a non-audio trigger.
const TRIGGER_MS: u32 = 1000;

impl ToneGeneratorNode {
    /// `{frequency 440, sampleRate 48000, amplitude 0.5, durationMs}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when mistyped or out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let sample_rate: u32 = params.get_or("sampleRate", 48_000)?;
        if !(8_000..=192_000).contains(&sample_rate) {
            return Err(params.error(
                "sampleRate",
                format!("must be 8000..=192000, got {sample_rate}"),
            ));
        }
        let frequency: f32 = params.get_or("frequency", 440.0)?;
        if !(frequency > 0.0 && frequency < sample_rate as f32 / 2.0) {
            return Err(params.error(
                "frequency",
                format!("must be above 0 and below sampleRate/2, got {frequency}"),
            ));
        }
        let amplitude: f32 = params.get_or("amplitude", 0.5)?;
        if !(0.0..=1.0).contains(&amplitude) {
            return Err(params.error("amplitude", format!("must be 0..=1, got {amplitude}")));
        }
        let duration_ms: Option<u32> = params.get("durationMs")?;
        if let Some(d) = duration_ms {
            if d == 0 || d > 60_000 {
                return Err(params.error("durationMs", format!("must be 1..=60000, got {d}")));
            }
        }
        Ok(Self {
            generator: SineGenerator::new(frequency, sample_rate, amplitude),
            sample_rate,
            duration_ms,
        })
    }
}

impl Node for ToneGeneratorNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let samples = match (&input.data, self.duration_ms) {
            (_, Some(ms)) => u64::from(self.sample_rate) * u64::from(ms) / 1000,
            (RuntimeData::Audio(f), None) => {
                let per_channel = f.samples.len() / usize::from(f.channels.max(1));
                per_channel as u64 * u64::from(self.sample_rate) / u64::from(f.sample_rate.max(1))
            }
            (_, None) => u64::from(self.sample_rate) * u64::from(TRIGGER_MS) / 1000,
        };
        // Bounded by the 768 kHz wire limit and the 60 s durationMs limit: fits in usize.
        let samples = usize::try_from(samples).unwrap_or(0);
        if samples == 0 {
            return Ok(());
        }
        out.push(Envelope {
            data: RuntimeData::Audio(AudioFrame {
                samples: self.generator.generate(samples),
                sample_rate: self.sample_rate,
                channels: 1,
            }),
            metadata: input.metadata,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dominant_frequency;
    use serde_json::json;

    #[test]
    fn answers_audio_with_a_tone_of_the_same_duration() {
        let p = json!({"frequency": 1000, "sample_rate": 16000});
        let mut n = ToneGeneratorNode::new(&Params::new("tone", &p).unwrap()).unwrap();
        let mut out = Vec::new();
        for _ in 0..50 {
            let f = AudioFrame {
                samples: vec![0.0; 960],
                sample_rate: 48_000,
                channels: 1,
            };
            n.process(Envelope::new(RuntimeData::Audio(f)), &mut out)
                .unwrap();
        }
        let all: Vec<f32> = out
            .iter()
            .flat_map(|e| match &e.data {
                RuntimeData::Audio(f) => f.samples.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(all.len(), 16_000);
        assert!((dominant_frequency(&all, 16_000) - 1000.0).abs() < 2.0);
    }

    #[test]
    fn text_triggers_duration_ms_and_params_are_checked() {
        let p = json!({"durationMs": 100});
        let mut n = ToneGeneratorNode::new(&Params::new("tone", &p).unwrap()).unwrap();
        let mut out = Vec::new();
        let t = Envelope::new(RuntimeData::Text {
            text: "beep".into(),
            language: String::new(),
        });
        n.process(t, &mut out).unwrap();
        let RuntimeData::Audio(f) = &out[0].data else {
            panic!()
        };
        assert_eq!(f.samples.len(), 4800);
        for bad in [
            json!({"frequency": 30000}),
            json!({"amplitude": 2}),
            json!({"durationMs": 0}),
        ] {
            let err = ToneGeneratorNode::new(&Params::new("tone", &bad).unwrap())
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("node `tone`: params."), "{err}");
        }
    }
}
