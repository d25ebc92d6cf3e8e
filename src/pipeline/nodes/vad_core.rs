//! The voice-activity detector behind `VADNode`, `SileroVADNode` and their events: WebRTC's GMM
//! VAD (libfvad through the `webrtc-vad` crate) decides each 10 ms frame, and a small state
//! machine turns those decisions into debounced `speech_start` / `speech_end` events.

use webrtc_vad::{SampleRate, Vad, VadMode};

use crate::media::Resampler;
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;

/// The `schema_type` of every VAD event on the data channel.
pub const VAD_SCHEMA: &str = "vad";

/// Rate the VAD runs at when the input's rate is not one libfvad takes (8/16/32/48 kHz).
const FALLBACK_RATE: u32 = 16_000;

/// Decision granularity: libfvad takes 10, 20 or 30 ms; 10 ms gives the finest timestamps.
const FRAME_MS: u64 = 10;

/// Frames quieter than this (RMS, dBFS) are silence whatever the GMM says: libfvad's decision
/// hangs over for up to ~100 ms after speech, and it can fire on very faint noise; no speech
/// the VAD is meant for is this quiet.
const ENERGY_FLOOR_DBFS: f64 = -60.0;

/// Debounce settings shared by every VAD node flavour.
#[derive(Debug, Clone, Copy)]
pub struct VadSettings {
    /// libfvad aggressiveness 0 (most sensitive) ..= 3 (most restrictive).
    pub mode: u8,
    /// Voiced time needed before speech is declared, so clicks do not start an utterance.
    pub min_speech_ms: u64,
    /// Unvoiced time needed before speech is declared over, so pauses between words do not
    /// split it.
    pub min_silence_ms: u64,
    /// Moved earlier (start) / later (end) so the segment keeps soft onsets and tails.
    pub pad_ms: u64,
}

/// A speech boundary, stamped in ms since the first audio this detector saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStart(u64),
    SpeechEnd(u64),
}

impl VadEvent {
    /// The event as the `DataBuffer{json}` clients get.
    pub fn to_envelope(self) -> Envelope {
        let (event, ts) = match self {
            VadEvent::SpeechStart(ts) => ("speech_start", ts),
            VadEvent::SpeechEnd(ts) => ("speech_end", ts),
        };
        Envelope::new(RuntimeData::Json {
            payload: serde_json::json!({ "event": event, "timestamp_ms": ts }).to_string(),
            schema_type: VAD_SCHEMA.to_owned(),
        })
    }

    /// Reads a VAD event back from a JSON payload (for nodes downstream of a VAD).
    pub fn from_json(payload: &str, schema_type: &str) -> Option<VadEvent> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        if schema_type != VAD_SCHEMA && !v.get("event").is_some_and(|e| e.is_string()) {
            return None;
        }
        let ts = v.get("timestamp_ms")?.as_u64()?;
        match v.get("event")?.as_str()? {
            "speech_start" => Some(VadEvent::SpeechStart(ts)),
            "speech_end" => Some(VadEvent::SpeechEnd(ts)),
            _ => None,
        }
    }
}

/// libfvad's handle holds a raw pointer, so the crate's `Vad` is not `Send`.
struct SendVad(Vad);

// SAFETY: the fvad instance is heap state owned solely by this value (no thread-locals, no
// sharing); moving it to another thread between calls is sound, and `&mut self` on every call
// keeps access exclusive.
unsafe impl Send for SendVad {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No speech; `candidate` is (start ms, voiced ms, trailing unvoiced ms) of a possible onset.
    Silence { candidate: Option<(u64, u64, u64)> },
    /// In speech since `start`; `last_voiced_end` is the end of the last voiced frame.
    Speech { last_voiced_end: u64 },
}

/// Streaming detector: feed audio of any rate/channels, collect events.
pub struct VadDetector {
    settings: VadSettings,
    vad: Option<SendVad>,
    /// Input rate the detector is set up for, and the resampler when libfvad cannot take it.
    input_rate: u32,
    resampler: Option<Resampler>,
    frame_len: usize,
    pending: Vec<i16>,
    /// 10 ms frames decided so far: the detector's clock.
    frames: u64,
    state: State,
}

impl VadDetector {
    pub fn new(settings: VadSettings) -> Self {
        Self {
            settings,
            vad: None,
            input_rate: 0,
            resampler: None,
            frame_len: 0,
            pending: Vec::new(),
            frames: 0,
            state: State::Silence { candidate: None },
        }
    }

    /// Whether the detector is inside a speech segment now.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Ms of audio decided so far.
    pub fn now_ms(&self) -> u64 {
        self.frames * FRAME_MS
    }

    fn setup(&mut self, rate: u32) -> Result<(), NodeError> {
        let (vad_rate, native) = match rate {
            8_000 => (rate, SampleRate::Rate8kHz),
            16_000 => (rate, SampleRate::Rate16kHz),
            32_000 => (rate, SampleRate::Rate32kHz),
            48_000 => (rate, SampleRate::Rate48kHz),
            _ => (FALLBACK_RATE, SampleRate::Rate16kHz),
        };
        self.resampler = if vad_rate == rate {
            None
        } else {
            Some(
                Resampler::new(rate, vad_rate)
                    .map_err(|e| NodeError::Input(format!("VAD resampler: {e}")))?,
            )
        };
        let mode = match self.settings.mode {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            _ => VadMode::VeryAggressive,
        };
        self.vad = Some(SendVad(Vad::new_with_rate_and_mode(native, mode)));
        self.frame_len = (vad_rate as usize) * FRAME_MS as usize / 1000;
        self.pending.clear();
        self.input_rate = rate;
        Ok(())
    }

    /// Feeds interleaved audio; pushes any events it completes to `events`.
    ///
    /// # Errors
    /// [`NodeError::Input`] for a rate the resampler rejects.
    pub fn push(
        &mut self,
        samples: &[f32],
        rate: u32,
        channels: u16,
        events: &mut Vec<VadEvent>,
    ) -> Result<(), NodeError> {
        if rate != self.input_rate || self.vad.is_none() {
            self.setup(rate)?;
        }
        let channels = usize::from(channels.max(1));
        let mono: Vec<f32> = samples
            .chunks(channels)
            .map(|c| c.iter().sum::<f32>() / c.len() as f32)
            .collect();
        let resampled;
        let mono = match self.resampler.as_mut() {
            Some(r) => {
                let mut out = Vec::with_capacity(mono.len());
                r.process(&mono, &mut out)
                    .map_err(|e| NodeError::Input(format!("VAD resampler: {e}")))?;
                resampled = out;
                &resampled
            }
            None => &mono,
        };
        self.pending
            .extend(mono.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16));
        let mut start = 0;
        while self.pending.len() - start >= self.frame_len {
            let frame = &self.pending[start..start + self.frame_len];
            start += self.frame_len;
            let voiced = loud_enough(frame)
                && match self.vad.as_mut() {
                    Some(vad) => vad.0.is_voice_segment(frame).unwrap_or(false),
                    None => false,
                };
            self.decide(voiced, events);
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Advances the state machine by one 10 ms decision.
    fn decide(&mut self, voiced: bool, events: &mut Vec<VadEvent>) {
        let s = self.settings;
        let frame_start = self.frames * FRAME_MS;
        self.frames += 1;
        let frame_end = self.frames * FRAME_MS;
        self.state = match self.state {
            State::Silence { candidate } => {
                let (start, voiced_ms, gap) = match (candidate, voiced) {
                    (None, false) => return,
                    (None, true) => (frame_start, FRAME_MS, 0),
                    (Some((st, v, _)), true) => (st, v + FRAME_MS, 0),
                    (Some((st, v, g)), false) => (st, v, g + FRAME_MS),
                };
                if gap >= s.min_silence_ms.max(FRAME_MS) {
                    State::Silence { candidate: None }
                } else if voiced_ms >= s.min_speech_ms {
                    events.push(VadEvent::SpeechStart(start.saturating_sub(s.pad_ms)));
                    State::Speech {
                        last_voiced_end: frame_end,
                    }
                } else {
                    State::Silence {
                        candidate: Some((start, voiced_ms, gap)),
                    }
                }
            }
            State::Speech { last_voiced_end } if voiced => State::Speech {
                last_voiced_end: frame_end.max(last_voiced_end),
            },
            State::Speech { last_voiced_end } => {
                if frame_end - last_voiced_end >= s.min_silence_ms.max(FRAME_MS) {
                    events.push(VadEvent::SpeechEnd(last_voiced_end + s.pad_ms));
                    State::Silence { candidate: None }
                } else {
                    State::Speech { last_voiced_end }
                }
            }
        };
    }

    /// End of stream: closes an open segment at the last voiced frame.
    pub fn finish(&mut self, events: &mut Vec<VadEvent>) {
        if let State::Speech { last_voiced_end } = self.state {
            events.push(VadEvent::SpeechEnd(
                (last_voiced_end + self.settings.pad_ms).min(self.now_ms()),
            ));
        }
        self.state = State::Silence { candidate: None };
    }
}

/// Whether `frame`'s RMS is above [`ENERGY_FLOOR_DBFS`].
fn loud_enough(frame: &[i16]) -> bool {
    if frame.is_empty() {
        return false;
    }
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / frame.len() as f64).sqrt() / 32768.0;
    20.0 * rms.max(1e-12).log10() > ENERGY_FLOOR_DBFS
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::sine;

    fn settings() -> VadSettings {
        VadSettings {
            mode: 2,
            min_speech_ms: 100,
            min_silence_ms: 200,
            pad_ms: 30,
        }
    }

    /// A buzzy voice-like signal (harmonics of 150 Hz with a syllable envelope): the GMM
    /// models speech spectra, so a pure sine is not reliably "speech".
    pub(crate) fn voice(rate: u32, ms: usize) -> Vec<f32> {
        let n = rate as usize * ms / 1000;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
                let v: f32 = (1..=12)
                    .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                0.25 * env * v
            })
            .collect()
    }

    fn run(rate: u32, audio: &[f32]) -> Vec<VadEvent> {
        let mut d = VadDetector::new(settings());
        let mut events = Vec::new();
        for part in audio.chunks(rate as usize / 50) {
            d.push(part, rate, 1, &mut events).unwrap();
        }
        d.finish(&mut events);
        events
    }

    fn silence_voice_silence(rate: u32) -> Vec<f32> {
        let mut a = vec![0.0; rate as usize];
        a.extend(voice(rate, 1000));
        a.extend(vec![0.0; rate as usize]);
        a
    }

    #[test]
    fn one_segment_at_the_right_times_48k_and_44k1() {
        for rate in [48_000, 16_000, 44_100] {
            let events = run(rate, &silence_voice_silence(rate));
            let [VadEvent::SpeechStart(s), VadEvent::SpeechEnd(e)] = events[..] else {
                panic!("{rate}: {events:?}")
            };
            assert!(s.abs_diff(1000) <= 60, "{rate}: start {s}");
            assert!(e.abs_diff(2000) <= 100, "{rate}: end {e}");
        }
    }

    #[test]
    fn silence_and_a_click_give_nothing() {
        let mut a = vec![0.0; 48_000];
        a.extend(voice(48_000, 30));
        a.extend(vec![0.0; 48_000]);
        assert_eq!(run(48_000, &a), []);
        assert_eq!(run(48_000, &sine(440.0, 48_000, 480, 0.0)), []);
    }

    #[test]
    fn events_round_trip_through_json() {
        for ev in [VadEvent::SpeechStart(120), VadEvent::SpeechEnd(2030)] {
            let RuntimeData::Json {
                payload,
                schema_type,
            } = ev.to_envelope().data
            else {
                panic!()
            };
            assert_eq!(schema_type, "vad");
            assert_eq!(VadEvent::from_json(&payload, &schema_type), Some(ev));
        }
        assert_eq!(VadEvent::from_json("{\"result\":1}", ""), None);
        assert_eq!(VadEvent::from_json("not json", "vad"), None);
    }
}
