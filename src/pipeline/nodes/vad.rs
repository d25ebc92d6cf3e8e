//! `VADNode` and `SileroVADNode`: voice activity on the session's audio, reported as
//! `DataBuffer{json}` events (`schema_type` "vad", `{"event", "timestamp_ms"}`) so a client (or a
//! gate downstream) knows when the user speaks.
//!
//! `SileroVADNode` is **not** the Silero model: the original ran an ONNX model that needs weights
//! downloaded at run time. Here it is accepted with the original's params so existing manifests
//! load, and runs the same WebRTC GMM VAD as `VADNode` (its `threshold` maps onto the VAD's
//! aggressiveness, see [`mode_from_threshold`]).

use std::collections::VecDeque;

use super::vad_core::{VadDetector, VadEvent, VadSettings};
use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// Detects speech and emits its boundaries; passes audio through (or only speech with `gate`).
pub struct VadNode {
    id: String,
    detector: VadDetector,
    /// Whether audio outside speech is dropped instead of passed through.
    gate: bool,
    /// Whether audio is emitted at all: false on a side branch that only feeds events to a
    /// gate, so the gate does not get the audio twice.
    pass_audio: bool,
    /// In gate mode, recent audio kept while not in speech, so the onset the detector needed
    /// `minSpeechMs` to confirm is not cut off.
    pre_roll: VecDeque<Envelope>,
    pre_roll_ms: u64,
    pre_roll_cap_ms: u64,
    events: Vec<VadEvent>,
}

/// A probability-like threshold (0..1) onto libfvad's aggressiveness 0..3: a higher threshold
/// asks for more certainty, like a higher mode. 0.5, both originals' default, is mode 2.
pub fn mode_from_threshold(threshold: f64) -> u8 {
    ((threshold * 4.0).floor() as i64).clamp(0, 3) as u8
}

fn checked_threshold(params: &Params<'_>, name: &str) -> Result<Option<f64>, NodeError> {
    match params.get::<f64>(name)? {
        Some(t) if !(0.0..=1.0).contains(&t) => {
            Err(params.error(name, format!("must be between 0 and 1, got {t}")))
        }
        t => Ok(t),
    }
}

fn checked_ms(params: &Params<'_>, name: &str, default: u64) -> Result<u64, NodeError> {
    let ms: u64 = params.get_or(name, default)?;
    if ms > 600_000 {
        return Err(params.error(name, format!("must be at most 600000 ms, got {ms}")));
    }
    Ok(ms)
}

impl VadNode {
    /// `VADNode{threshold | mode (0..3, default 2), minSpeechMs 250, minSilenceMs 300, padMs 30,
    /// gate false, passAudio true}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param when one is mistyped or out of range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let mode = match params.get::<u8>("mode")? {
            Some(m) if m > 3 => return Err(params.error("mode", format!("must be 0..=3, got {m}"))),
            Some(m) => m,
            None => checked_threshold(params, "threshold")?.map_or(2, mode_from_threshold),
        };
        let settings = VadSettings {
            mode,
            min_speech_ms: checked_ms(params, "minSpeechMs", 250)?,
            min_silence_ms: checked_ms(params, "minSilenceMs", 300)?,
            pad_ms: checked_ms(params, "padMs", 30)?,
        };
        Self::build(params, settings)
    }

    /// `SileroVADNode{threshold 0.5, samplingRate 16000, minSpeechDurationMs 250,
    /// minSilenceDurationMs 100, speechPadMs 30}` on the WebRTC VAD. `samplingRate` is checked
    /// but not needed: the detector takes each frame's own rate.
    ///
    /// # Errors
    /// As [`VadNode::new`].
    pub fn silero(params: &Params<'_>) -> Result<Self, NodeError> {
        let rate: u32 = params.get_or("samplingRate", 16_000)?;
        if rate == 0 || rate > 768_000 {
            return Err(params.error("samplingRate", format!("must be 1..=768000, got {rate}")));
        }
        let settings = VadSettings {
            mode: mode_from_threshold(checked_threshold(params, "threshold")?.unwrap_or(0.5)),
            min_speech_ms: checked_ms(params, "minSpeechDurationMs", 250)?,
            min_silence_ms: checked_ms(params, "minSilenceDurationMs", 100)?,
            pad_ms: checked_ms(params, "speechPadMs", 30)?,
        };
        Self::build(params, settings)
    }

    fn build(params: &Params<'_>, settings: VadSettings) -> Result<Self, NodeError> {
        Ok(Self {
            id: params.id().to_owned(),
            detector: VadDetector::new(settings),
            gate: params.get_or("gate", false)?,
            pass_audio: params.get_or("passAudio", true)?,
            pre_roll: VecDeque::new(),
            pre_roll_ms: 0,
            pre_roll_cap_ms: settings.min_speech_ms + settings.pad_ms + 20,
            events: Vec::new(),
        })
    }

    /// Gate mode: forwards speech, keeps a bounded pre-roll of the rest.
    fn gate_audio(
        &mut self,
        input: Envelope,
        frame_ms: u64,
        started: bool,
        out: &mut Vec<Envelope>,
    ) {
        if started {
            out.extend(self.pre_roll.drain(..));
            self.pre_roll_ms = 0;
        }
        if self.detector.in_speech()
            || started
            || self
                .events
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechEnd(_)))
        {
            out.push(input);
            return;
        }
        self.pre_roll.push_back(input);
        self.pre_roll_ms += frame_ms;
        while self.pre_roll_ms > self.pre_roll_cap_ms && self.pre_roll.len() > 1 {
            if let Some(Envelope {
                data: RuntimeData::Audio(f),
                ..
            }) = self.pre_roll.pop_front()
            {
                self.pre_roll_ms = self.pre_roll_ms.saturating_sub(frame_ms_of(&f));
            }
        }
    }
}

fn frame_ms_of(f: &crate::pipeline::data::AudioFrame) -> u64 {
    let per_channel = f.samples.len() / usize::from(f.channels.max(1));
    (per_channel as u64 * 1000) / u64::from(f.sample_rate.max(1))
}

impl Node for VadNode {
    fn wants_audio(&self) -> bool {
        true
    }

    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Audio(_))
    }

    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let RuntimeData::Audio(frame) = &input.data else {
            return Ok(());
        };
        self.events.clear();
        self.detector
            .push(
                &frame.samples,
                frame.sample_rate,
                frame.channels,
                &mut self.events,
            )
            .map_err(|e| NodeError::Input(format!("node `{}`: {e}", self.id)))?;
        let started = self
            .events
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechStart(_)));
        if !self.pass_audio {
            // Events only.
        } else if self.gate {
            let ms = frame_ms_of(frame);
            self.gate_audio(input, ms, started, out);
        } else {
            out.push(input);
        }
        out.extend(self.events.iter().map(|e| e.to_envelope()));
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let mut events = Vec::new();
        self.detector.finish(&mut events);
        out.extend(events.into_iter().map(VadEvent::to_envelope));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::data::AudioFrame;
    use crate::pipeline::nodes::vad_core::tests::voice;
    use serde_json::json;

    fn feed(node: &mut VadNode, audio: &[f32]) -> (usize, Vec<String>) {
        let mut out = Vec::new();
        for part in audio.chunks(960) {
            let f = AudioFrame {
                samples: part.to_vec(),
                sample_rate: 48_000,
                channels: 1,
            };
            node.process(Envelope::new(RuntimeData::Audio(f)), &mut out)
                .unwrap();
        }
        node.finish(&mut out).unwrap();
        let mut audio_samples = 0;
        let mut events = Vec::new();
        for e in out {
            match e.data {
                RuntimeData::Audio(f) => audio_samples += f.samples.len(),
                RuntimeData::Json {
                    payload,
                    schema_type,
                } => {
                    assert_eq!(schema_type, "vad");
                    let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
                    events.push(v["event"].as_str().unwrap().to_owned());
                }
                other => panic!("{other:?}"),
            }
        }
        (audio_samples, events)
    }

    fn clip() -> Vec<f32> {
        let mut a = vec![0.0; 48_000];
        a.extend(voice(48_000, 800));
        a.extend(vec![0.0; 48_000]);
        a
    }

    #[test]
    fn passes_audio_and_reports_one_segment() {
        let p = json!({"threshold": 0.5, "minSpeechMs": 100, "minSilenceMs": 200});
        let mut node = VadNode::new(&Params::new("vad", &p).unwrap()).unwrap();
        let input = clip();
        let (samples, events) = feed(&mut node, &input);
        assert_eq!(samples, input.len());
        assert_eq!(events, ["speech_start", "speech_end"]);
    }

    #[test]
    fn gate_keeps_speech_and_drops_silence() {
        let p = json!({"min_speech_ms": 100, "min_silence_ms": 200, "gate": true});
        let mut node = VadNode::new(&Params::new("vad", &p).unwrap()).unwrap();
        let (samples, events) = feed(&mut node, &clip());
        assert_eq!(events, ["speech_start", "speech_end"]);
        // 800 ms of speech plus pre-roll and the trailing minSilenceMs, well under the 2.8 s.
        assert!((38_400..=60_000).contains(&samples), "{samples}");
    }

    #[test]
    fn silero_params_are_accepted_and_checked() {
        let p = json!({"threshold": 0.5, "samplingRate": 16000, "minSpeechDurationMs": 250,
            "minSilenceDurationMs": 100, "speechPadMs": 30});
        assert!(VadNode::silero(&Params::new("s", &p).unwrap()).is_ok());
        let bad = json!({"threshold": 2.0});
        let err = VadNode::silero(&Params::new("s", &bad).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("node `s`: params.threshold"), "{err}");
        let bad = json!({"mode": 7});
        assert!(VadNode::new(&Params::new("v", &bad).unwrap()).is_err());
        assert_eq!(mode_from_threshold(0.0), 0);
        assert_eq!(mode_from_threshold(0.5), 2);
        assert_eq!(mode_from_threshold(1.0), 3);
    }
}
