//! Signal generation and measurement for tests and benchmarks.

use std::f64::consts::TAU;

use rustfft::{num_complex::Complex64, FftPlanner};

/// A phase-continuous sine source, so audio generated in chunks has no discontinuities.
#[derive(Debug, Clone)]
pub struct SineGenerator {
    /// Current phase in radians, kept in `[0, TAU)` so precision does not decay over time.
    phase: f64,
    /// Phase advance per sample.
    step: f64,
    amplitude: f32,
}

impl SineGenerator {
    /// A sine of `freq_hz` at `sample_rate`, peak `amplitude` (1.0 = full scale).
    pub fn new(freq_hz: f32, sample_rate: u32, amplitude: f32) -> Self {
        Self {
            phase: 0.0,
            step: TAU * f64::from(freq_hz) / f64::from(sample_rate.max(1)),
            amplitude,
        }
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [f32]) {
        for s in out {
            *s = self.amplitude * self.phase.sin() as f32;
            self.phase = (self.phase + self.step) % TAU;
        }
    }

    /// The next `samples` samples as a new vector.
    pub fn generate(&mut self, samples: usize) -> Vec<f32> {
        let mut out = vec![0.0; samples];
        self.fill(&mut out);
        out
    }
}

/// `samples` of a sine at `freq_hz`, starting at phase zero.
pub fn sine(freq_hz: f32, sample_rate: u32, samples: usize, amplitude: f32) -> Vec<f32> {
    SineGenerator::new(freq_hz, sample_rate, amplitude).generate(samples)
}

/// Root mean square level (0 for an empty slice).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

/// RMS level in dB relative to full scale (a full-scale sine is about -3 dBFS).
/// Silence gives negative infinity.
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    20.0 * rms(samples).log10()
}

/// Frequency of the strongest spectral peak, in Hz (0 for fewer than 2 samples).
///
/// Hann window, zero-padded FFT, then Gaussian (log-parabolic) interpolation of the peak,
/// which is near exact for a Hann-windowed tone: a 440 Hz tone over 1 s at 48 kHz resolves
/// well within 1 Hz.
pub fn dominant_frequency(samples: &[f32], sample_rate: u32) -> f32 {
    let n = samples.len();
    if n < 2 {
        return 0.0;
    }
    // Pad to at least twice the length: finer bins make the interpolation more accurate.
    let size = (2 * n).next_power_of_two();
    let mut spectrum = vec![Complex64::default(); size];
    for (i, (&s, bin)) in samples.iter().zip(spectrum.iter_mut()).enumerate() {
        let w = 0.5 - 0.5 * (TAU * i as f64 / (n - 1) as f64).cos();
        bin.re = f64::from(s) * w;
    }
    FftPlanner::new()
        .plan_fft_forward(size)
        .process(&mut spectrum);
    let mag: Vec<f64> = spectrum[..size / 2].iter().map(|c| c.norm()).collect();
    // Skip DC: an offset must not win over the tone.
    let Some((peak, _)) = mag
        .iter()
        .enumerate()
        .skip(1)
        .max_by(|a, b| a.1.total_cmp(b.1))
    else {
        return 0.0;
    };
    let offset = if peak + 1 < mag.len() && mag[peak - 1] > 0.0 && mag[peak + 1] > 0.0 {
        let (a, b, c) = (mag[peak - 1].ln(), mag[peak].ln(), mag[peak + 1].ln());
        let denom = a - 2.0 * b + c;
        if denom.abs() > f64::EPSILON {
            0.5 * (a - c) / denom
        } else {
            0.0
        }
    } else {
        0.0
    };
    ((peak as f64 + offset) * f64::from(sample_rate) / size as f64) as f32
}

/// The share of the signal's energy between `low` and `high` Hz (0 for silence): how much of
/// a recording is speech band (300–3400 Hz, the telephone band) rather than hum or hiss.
pub fn band_energy_ratio(samples: &[f32], sample_rate: u32, low: f32, high: f32) -> f32 {
    let size = samples.len().next_power_of_two();
    if size < 2 || sample_rate == 0 {
        return 0.0;
    }
    let mut spectrum: Vec<Complex64> = samples
        .iter()
        .map(|&s| Complex64::new(f64::from(s), 0.0))
        .collect();
    spectrum.resize(size, Complex64::default());
    FftPlanner::new()
        .plan_fft_forward(size)
        .process(&mut spectrum);
    let hz_per_bin = f64::from(sample_rate) / size as f64;
    let (mut band, mut total) = (0.0, 0.0);
    for (bin, c) in spectrum[1..size / 2].iter().enumerate() {
        let hz = (bin + 1) as f64 * hz_per_bin;
        let energy = c.norm_sqr();
        total += energy;
        if (f64::from(low)..=f64::from(high)).contains(&hz) {
            band += energy;
        }
    }
    if total > 0.0 {
        (band / total) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_energy_ratio_finds_a_tone_in_its_band() {
        let tone = sine(1000.0, 48_000, 48_000, 0.5);
        assert!(band_energy_ratio(&tone, 48_000, 300.0, 3400.0) > 0.99);
        let hum = sine(100.0, 48_000, 48_000, 0.5);
        assert!(band_energy_ratio(&hum, 48_000, 300.0, 3400.0) < 0.01);
        assert_eq!(band_energy_ratio(&[0.0; 480], 48_000, 300.0, 3400.0), 0.0);
    }

    #[test]
    fn resolves_440_hz_within_1_hz() {
        let f = dominant_frequency(&sine(440.0, 48_000, 48_000, 0.5), 48_000);
        assert!((f - 440.0).abs() < 1.0, "got {f}");
        let f = dominant_frequency(&sine(1234.5, 48_000, 48_000, 0.5), 48_000);
        assert!((f - 1234.5).abs() < 1.0, "got {f}");
    }

    #[test]
    fn generator_is_phase_continuous() {
        let mut g = SineGenerator::new(440.0, 48_000, 1.0);
        let mut chunked = g.generate(100);
        chunked.extend(g.generate(333));
        let whole = sine(440.0, 48_000, 433, 1.0);
        for (a, b) in chunked.iter().zip(&whole) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn levels() {
        let s = sine(1000.0, 48_000, 48_000, 1.0);
        assert!((rms(&s) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-3);
        assert!((rms_dbfs(&s) + 3.01).abs() < 0.05);
        assert_eq!(rms(&[]), 0.0);
    }
}
