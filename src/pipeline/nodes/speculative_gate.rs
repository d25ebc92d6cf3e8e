//! `SpeculativeVADGate`: forwards audio at once (no VAD latency for a downstream speech model)
//! and takes the speculation back afterwards: when the VAD events it also receives (fan-in from a
//! VAD node) show a speech segment shorter than `minSpeechMs`, it emits
//! `ControlMessage{cancel_speculation{from_timestamp, to_timestamp}}` covering that segment
//! widened by `lookbackMs` / `lookaheadMs`, so consumers can discard what they started on.
//!
//! The gate makes no voice decisions of its own: `vadThreshold`, `sampleRate`, `minSilenceMs`
//! and `padMs` are accepted and checked for the original's manifests; the VAD node feeding the
//! gate applies its own. Give that VAD a short `minSpeechMs` so short segments reach the gate.

use super::vad_core::VadEvent;
use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;
use crate::proto::common as pb;

/// Forwards audio, turns too-short VAD segments into cancel messages.
#[derive(Debug)]
pub struct SpeculativeVadGate {
    lookback_ms: u64,
    lookahead_ms: u64,
    min_speech_ms: u64,
    /// Start of the open segment, from the last `speech_start`.
    open: Option<u64>,
    segments: u64,
}

impl SpeculativeVadGate {
    /// `{lookbackMs 150, lookaheadMs 50, sampleRate 16000, vadThreshold 0.5, minSpeechMs 250,
    /// minSilenceMs 100, padMs 30}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when one is mistyped or out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let ms = |name: &str, default: u64| -> Result<u64, NodeError> {
            let v: u64 = params.get_or(name, default)?;
            if v > 600_000 {
                return Err(params.error(name, format!("must be at most 600000 ms, got {v}")));
            }
            Ok(v)
        };
        let threshold: f64 = params.get_or("vadThreshold", 0.5)?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(params.error(
                "vadThreshold",
                format!("must be between 0 and 1, got {threshold}"),
            ));
        }
        let rate: u32 = params.get_or("sampleRate", 16_000)?;
        if rate == 0 || rate > 768_000 {
            return Err(params.error("sampleRate", format!("must be 1..=768000, got {rate}")));
        }
        ms("minSilenceMs", 100)?;
        ms("padMs", 30)?;
        Ok(Self {
            lookback_ms: ms("lookbackMs", 150)?,
            lookahead_ms: ms("lookaheadMs", 50)?,
            min_speech_ms: ms("minSpeechMs", 250)?,
            open: None,
            segments: 0,
        })
    }

    fn on_event(&mut self, event: VadEvent, out: &mut Vec<Envelope>) {
        match event {
            VadEvent::SpeechStart(ts) => self.open = Some(ts),
            VadEvent::SpeechEnd(end) => {
                let Some(start) = self.open.take() else {
                    return;
                };
                self.segments += 1;
                if end.saturating_sub(start) >= self.min_speech_ms {
                    return;
                }
                let cancel = pb::ControlMessage {
                    message_type: Some(pb::control_message::MessageType::CancelSpeculation(
                        pb::CancelSpeculation {
                            from_timestamp: start.saturating_sub(self.lookback_ms),
                            to_timestamp: end + self.lookahead_ms,
                        },
                    )),
                    segment_id: format!("speech-{}", self.segments),
                    timestamp_ms: end,
                    metadata: String::new(),
                };
                out.push(Envelope::new(RuntimeData::Control(cancel)));
            }
        }
    }
}

impl Node for SpeculativeVadGate {
    fn wants_audio(&self) -> bool {
        true
    }

    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Audio(_) | RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        match &input.data {
            RuntimeData::Audio(_) => out.push(input),
            RuntimeData::Json {
                payload,
                schema_type,
            } => {
                // Other JSON (not a VAD event) is not ours to judge: it passes through.
                match VadEvent::from_json(payload, schema_type) {
                    Some(event) => self.on_event(event, out),
                    None => out.push(input),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::data::AudioFrame;
    use serde_json::json;

    fn gate(p: serde_json::Value) -> SpeculativeVadGate {
        SpeculativeVadGate::new(&Params::new("g", &p).unwrap()).unwrap()
    }

    #[test]
    fn audio_passes_at_once_and_short_segments_are_cancelled() {
        let mut g = gate(json!({}));
        let mut out = Vec::new();
        let audio = Envelope::new(RuntimeData::Audio(AudioFrame {
            samples: vec![0.1; 320],
            sample_rate: 16_000,
            channels: 1,
        }));
        g.process(audio.clone(), &mut out).unwrap();
        assert_eq!(out, [audio]);
        out.clear();
        for ev in [
            VadEvent::SpeechStart(1000),
            VadEvent::SpeechEnd(1100),
            VadEvent::SpeechStart(2000),
            VadEvent::SpeechEnd(3000),
        ] {
            g.process(ev.to_envelope(), &mut out).unwrap();
        }
        let [Envelope {
            data: RuntimeData::Control(c),
            ..
        }] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            c.message_type,
            Some(pb::control_message::MessageType::CancelSpeculation(
                pb::CancelSpeculation {
                    from_timestamp: 850,
                    to_timestamp: 1150
                }
            ))
        );
    }

    #[test]
    fn params_are_checked_and_other_json_passes() {
        for bad in [json!({"vadThreshold": 3}), json!({"lookbackMs": "x"})] {
            let err = SpeculativeVadGate::new(&Params::new("g", &bad).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("node `g`: params."), "{err}");
        }
        let mut g = gate(json!({"lookback_ms": 10}));
        let mut out = Vec::new();
        let other = Envelope::new(RuntimeData::Json {
            payload: "{\"result\":3}".into(),
            schema_type: String::new(),
        });
        g.process(other.clone(), &mut out).unwrap();
        g.process(VadEvent::SpeechEnd(5).to_envelope(), &mut out)
            .unwrap();
        assert_eq!(out, [other]);
    }
}
