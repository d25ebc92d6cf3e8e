//! Streaming sample-rate conversion of mono audio (pipeline rate <-> 48 kHz).

use rubato::audioadapter_buffers::direct::SequentialSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use super::MediaError;

/// Target processing chunk, in ms of input. Rubato's FFT resampler delays output by half a
/// chunk (5 ms here), and input that is not chunk-aligned waits for up to one more chunk;
/// 20 ms pipeline frames are aligned, so they only see the 5 ms.
const CHUNK_MS: u32 = 10;

/// Resamples a mono `f32` stream between two fixed rates.
///
/// Streaming: feed any chunk sizes; output is appended as it becomes available and is
/// aligned to the input (the resampler's start-up delay is trimmed), so after
/// [`Self::flush`] the total output length is `ceil(input_len * to / from)`.
pub struct Resampler {
    /// `None` when the rates are equal: input is appended unchanged.
    fft: Option<Box<FftStream>>,
}

/// State of a real conversion.
struct FftStream {
    fft: Fft<f32>,
    from: u32,
    to: u32,
    chunk_in: usize,
    /// Input waiting for a full chunk.
    pending: Vec<f32>,
    /// Output of one chunk, reused.
    out_buf: Vec<f32>,
    /// Leading output still to discard: the resampler's delay.
    to_skip: usize,
    total_in: u64,
    total_out: u64,
}

impl Resampler {
    /// A resampler from `from_rate` to `to_rate` Hz.
    ///
    /// # Errors
    /// [`MediaError::ResamplerCreate`] for a zero rate or one rubato rejects.
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Self, MediaError> {
        Self::with_chunk_ms(from_rate, to_rate, CHUNK_MS)
    }

    /// A resampler processing `chunk_ms` of input at a time. Rubato's FFT filter length
    /// follows the chunk, so a longer chunk gives a steeper anti-aliasing filter at the cost of
    /// more delay (half a chunk) and latency for unaligned input; pipelines choose it by quality.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_chunk_ms(from_rate: u32, to_rate: u32, chunk_ms: u32) -> Result<Self, MediaError> {
        let create_err = |source| MediaError::ResamplerCreate {
            from: from_rate,
            to: to_rate,
            source,
        };
        if from_rate == 0 || to_rate == 0 {
            return Err(create_err(None));
        }
        if from_rate == to_rate {
            return Ok(Self { fft: None });
        }
        let hint = (u64::from(from_rate) * u64::from(chunk_ms.max(1)) / 1000).max(1) as usize;
        let fft = Fft::<f32>::new(
            from_rate as usize,
            to_rate as usize,
            hint,
            1,
            FixedSync::Both,
        )
        .map_err(|e| create_err(Some(e)))?;
        let chunk_in = fft.input_frames_next();
        let chunk_out = fft.output_frames_next();
        let to_skip = fft.output_delay();
        Ok(Self {
            fft: Some(Box::new(FftStream {
                fft,
                from: from_rate,
                to: to_rate,
                chunk_in,
                pending: Vec::with_capacity(chunk_in),
                out_buf: vec![0.0; chunk_out],
                to_skip,
                total_in: 0,
                total_out: 0,
            })),
        })
    }

    /// Resamples `input` and appends whatever output is ready to `out`.
    ///
    /// # Errors
    /// [`MediaError::Resample`] only if a buffer-size invariant is broken (a bug).
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), MediaError> {
        let Some(s) = self.fft.as_deref_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        s.total_in += input.len() as u64;
        let mut rest = input;
        if !s.pending.is_empty() {
            let take = (s.chunk_in - s.pending.len()).min(rest.len());
            s.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if s.pending.len() < s.chunk_in {
                return Ok(());
            }
            let pending = std::mem::take(&mut s.pending);
            let res = s.run_chunk(&pending, out);
            s.pending = pending;
            s.pending.clear();
            res?;
        }
        let mut chunks = rest.chunks_exact(s.chunk_in);
        for chunk in &mut chunks {
            s.run_chunk(chunk, out)?;
        }
        s.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    /// Ends the stream: appends the remaining output (the buffered input and the filter's
    /// tail) and resets, ready for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) {
        let Some(s) = self.fft.as_deref_mut() else {
            return;
        };
        let expected = (u128::from(s.total_in) * u128::from(s.to)).div_ceil(u128::from(s.from));
        let expected = u64::try_from(expected).unwrap_or(u64::MAX);
        let start = out.len();
        let needed = expected.saturating_sub(s.total_out);
        let mut zeros = std::mem::take(&mut s.pending);
        while s.total_out < expected {
            zeros.resize(s.chunk_in, 0.0);
            if let Err(e) = s.run_chunk(&zeros, out) {
                tracing::warn!(error = %e, "resampler flush failed; output truncated");
                break;
            }
            zeros.clear();
        }
        // The last chunk overshoots into padding; keep exactly what the input accounts for.
        let keep = usize::try_from(needed).unwrap_or(usize::MAX);
        out.truncate(start.saturating_add(keep));
        s.fft.reset();
        s.pending = zeros;
        s.pending.clear();
        s.to_skip = s.fft.output_delay();
        s.total_in = 0;
        s.total_out = 0;
    }
}

impl FftStream {
    /// Resamples one chunk of exactly `chunk_in` samples and appends the output past the
    /// start-up delay.
    fn run_chunk(&mut self, chunk: &[f32], out: &mut Vec<f32>) -> Result<(), MediaError> {
        let input =
            SequentialSlice::new(chunk, 1, chunk.len()).map_err(MediaError::ResampleBuffer)?;
        let frames_out = self.out_buf.len();
        let mut output = SequentialSlice::new_mut(&mut self.out_buf, 1, frames_out)
            .map_err(MediaError::ResampleBuffer)?;
        let (_, written) = self
            .fft
            .process_into_buffer(&input, &mut output, None)
            .map_err(MediaError::Resample)?;
        let skip = self.to_skip.min(written);
        self.to_skip -= skip;
        out.extend_from_slice(&self.out_buf[skip..written]);
        self.total_out += (written - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{dominant_frequency, rms, sine};

    /// Resamples one second of 440 Hz fed in uneven chunks; checks pitch, level and length.
    fn check(from: u32, to: u32) {
        let input = sine(440.0, from, from as usize, 0.5);
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(333) {
            r.process(chunk, &mut out).unwrap();
        }
        r.flush(&mut out);
        let expected = input.len() * to as usize / from as usize;
        assert!(
            out.len().abs_diff(expected) <= 2,
            "{from}->{to}: {} samples, expected {expected}",
            out.len()
        );
        let f = dominant_frequency(&out, to);
        assert!((f - 440.0).abs() < 1.0, "{from}->{to}: {f} Hz");
        let steady = &out[out.len() / 4..out.len() * 3 / 4];
        let ratio = rms(steady) / rms(&input);
        assert!(
            (ratio - 1.0).abs() < 0.05,
            "{from}->{to}: level ratio {ratio}"
        );
    }

    #[test]
    fn up_16k_to_48k() {
        check(16_000, 48_000);
    }

    #[test]
    fn down_48k_to_16k() {
        check(48_000, 16_000);
    }

    #[test]
    fn odd_ratio_44k1_to_48k() {
        check(44_100, 48_000);
    }

    #[test]
    fn output_is_aligned_with_input() {
        // A delayed output would correlate best at a non-zero lag; trimming makes it zero.
        let input = sine(440.0, 16_000, 16_000, 0.5);
        let mut r = Resampler::new(16_000, 48_000).unwrap();
        let mut out = Vec::new();
        r.process(&input, &mut out).unwrap();
        r.flush(&mut out);
        let reference = sine(440.0, 48_000, out.len(), 0.5);
        let err: f32 = out[4800..43200]
            .iter()
            .zip(&reference[4800..43200])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.01, "max error {err}");
    }

    #[test]
    fn identity_passes_through_and_flush_resets() {
        let mut r = Resampler::new(48_000, 48_000).unwrap();
        let mut out = vec![9.0];
        r.process(&[1.0, 2.0], &mut out).unwrap();
        r.flush(&mut out);
        assert_eq!(out, [9.0, 1.0, 2.0]);

        let mut r = Resampler::new(16_000, 48_000).unwrap();
        let mut first = Vec::new();
        r.process(&sine(440.0, 16_000, 1000, 0.5), &mut first)
            .unwrap();
        r.flush(&mut first);
        let mut second = Vec::new();
        r.process(&sine(440.0, 16_000, 1000, 0.5), &mut second)
            .unwrap();
        r.flush(&mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn rejects_zero_rate() {
        assert!(Resampler::new(0, 48_000).is_err());
    }
}
