//! The test signal: a quiet tone with a loud short burst (the marker) at the start of every
//! second, encoded to Opus once and replayed; and the detector that finds the markers in the
//! audio that comes back.

use bytes::Bytes;

use crate::media::{OpusConfig, OpusDecoder, OpusEncoder, FRAME_SAMPLES, SAMPLE_RATE};

use super::error::ClientError;

/// Packets in one period of the signal (one second of 20 ms frames).
pub const PERIOD_PACKETS: usize = 50;
/// The steady tone (a whole number of cycles per second, so the period loops seamlessly).
const TONE_HZ: f32 = 440.0;
const TONE_AMPLITUDE: f32 = 0.1;
/// The marker: 10 ms of a louder 1 kHz burst at the start of each period.
const MARKER_HZ: f32 = 1_000.0;
const MARKER_AMPLITUDE: f32 = 0.8;
const MARKER_SAMPLES: usize = 480;
/// The detector's window (2.5 ms) and the window RMS that counts as the marker: well above
/// the tone's (0.07) and well below the burst's (about 0.57).
const WINDOW: usize = 120;
const THRESHOLD_RMS: f32 = 0.3;
/// Quiet windows needed before a new onset counts (the marker is at most ~15 ms long after
/// two codecs; the next one is a second away).
const REARM_WINDOWS: usize = 100;

/// One second of the test signal as Opus packets, ready to replay.
pub struct TestSignal {
    /// The period's packets; packet 0 starts with the marker.
    pub packets: Vec<Bytes>,
    /// Where the marker's onset lands when the client's own packets are decoded (the
    /// encoder's lookahead and the detector's window): subtracted from the measured delay
    /// so what remains is what the path through the server added.
    pub baseline_samples: usize,
}

impl TestSignal {
    /// Encodes two periods with the server's Opus settings and keeps the second (so the
    /// encoder state at the loop point is the steady one).
    ///
    /// # Errors
    /// [`ClientError::Media`] when libopus refuses the encoder or a frame.
    pub fn new() -> Result<Self, ClientError> {
        let pcm = pcm(2);
        let mut encoder = OpusEncoder::new(&OpusConfig::default())?;
        let mut packets = Vec::with_capacity(PERIOD_PACKETS * 2);
        for frame in pcm.chunks(FRAME_SAMPLES) {
            packets.push(encoder.encode(frame)?);
        }
        let packets = packets.split_off(PERIOD_PACKETS);
        // Decode three periods of the replayed packets: the onsets after the first period
        // are where a zero-delay path would put them.
        let mut decoder = OpusDecoder::new()?;
        let mut detector = MarkerDetector::default();
        let mut onsets = Vec::new();
        for (i, packet) in packets.iter().cycle().take(PERIOD_PACKETS * 3).enumerate() {
            let decoded = decoder.decode(packet)?;
            for onset in detector.push(decoded) {
                if i >= PERIOD_PACKETS {
                    onsets.push(onset);
                }
            }
        }
        let period = PERIOD_PACKETS * FRAME_SAMPLES;
        let baseline_samples = onsets.first().map_or(0, |&o| o as usize % period);
        Ok(Self {
            packets,
            baseline_samples,
        })
    }
}

impl TestSignal {
    /// One second of a steady tone at `frequency` (a whole number of Hz loops seamlessly)
    /// and `amplitude`, without markers: what `webrtc_server probe` sends.
    ///
    /// # Errors
    /// [`ClientError::Media`] when libopus refuses the encoder or a frame.
    pub fn tone(frequency: f32, amplitude: f32) -> Result<Self, ClientError> {
        let pcm = crate::media::sine(frequency, SAMPLE_RATE, SAMPLE_RATE as usize * 2, amplitude);
        let mut encoder = OpusEncoder::new(&OpusConfig::default())?;
        let mut packets = Vec::with_capacity(PERIOD_PACKETS * 2);
        for frame in pcm.chunks(FRAME_SAMPLES) {
            packets.push(encoder.encode(frame)?);
        }
        Ok(Self {
            packets: packets.split_off(PERIOD_PACKETS),
            baseline_samples: 0,
        })
    }
}

/// `seconds` periods of the raw test signal.
fn pcm(seconds: usize) -> Vec<f32> {
    let period = SAMPLE_RATE as usize;
    (0..period * seconds)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE as f32;
            let tone = TONE_AMPLITUDE * (2.0 * std::f32::consts::PI * TONE_HZ * t).sin();
            if i % period < MARKER_SAMPLES {
                tone + MARKER_AMPLITUDE * (2.0 * std::f32::consts::PI * MARKER_HZ * t).sin()
            } else {
                tone
            }
        })
        .collect()
}

/// Finds marker onsets in a stream of decoded samples: returns each onset's position as a
/// sample index since the first sample pushed.
#[derive(Default)]
pub struct MarkerDetector {
    /// Samples consumed so far (whole windows).
    position: u64,
    /// A partial window carried to the next push.
    pending: Vec<f32>,
    quiet_windows: usize,
}

impl MarkerDetector {
    /// Feeds samples; returns the onsets found in them.
    pub fn push(&mut self, samples: &[f32]) -> Vec<u64> {
        let mut onsets = Vec::new();
        let mut rest = samples;
        if !self.pending.is_empty() {
            let take = (WINDOW - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == WINDOW {
                let window = std::mem::take(&mut self.pending);
                self.window(&window, &mut onsets);
            }
        }
        let mut chunks = rest.chunks_exact(WINDOW);
        for window in &mut chunks {
            self.window(window, &mut onsets);
        }
        self.pending.extend_from_slice(chunks.remainder());
        onsets
    }

    fn window(&mut self, window: &[f32], onsets: &mut Vec<u64>) {
        let energy = window.iter().map(|s| s * s).sum::<f32>() / window.len() as f32;
        if energy.sqrt() >= THRESHOLD_RMS {
            if self.quiet_windows >= REARM_WINDOWS {
                onsets.push(self.position);
            }
            self.quiet_windows = 0;
        } else {
            self.quiet_windows += 1;
        }
        self.position += window.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replayed_signal_has_one_marker_per_second_at_a_fixed_place() {
        let signal = TestSignal::new().unwrap();
        assert_eq!(signal.packets.len(), PERIOD_PACKETS);
        // Opus' lookahead is a few ms; the detector's window rounds it up to 2.5 ms.
        assert!(signal.baseline_samples < 960, "{}", signal.baseline_samples);
        let mut decoder = OpusDecoder::new().unwrap();
        let mut detector = MarkerDetector::default();
        let mut onsets = Vec::new();
        for packet in signal.packets.iter().cycle().take(PERIOD_PACKETS * 4) {
            onsets.extend(detector.push(decoder.decode(packet).unwrap()));
        }
        // The first marker comes before the detector has seen a second of quiet.
        assert_eq!(onsets.len(), 3, "{onsets:?}");
        for pair in onsets.windows(2) {
            assert_eq!(pair[1] - pair[0], 48_000);
        }
    }

    #[test]
    fn odd_chunk_sizes_find_the_same_onsets() {
        let pcm = pcm(3);
        let mut whole = MarkerDetector::default();
        let mut pieces = MarkerDetector::default();
        let expected = whole.push(&pcm);
        let found: Vec<u64> = pcm.chunks(77).flat_map(|c| pieces.push(c)).collect();
        assert_eq!(found, expected);
        assert_eq!(expected, vec![48_000, 96_000]);
    }
}
