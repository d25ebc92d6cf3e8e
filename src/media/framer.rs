//! Cuts a stream of arbitrary-sized sample chunks into 20 ms frames for the encoder.

use std::collections::VecDeque;

use super::FRAME_SAMPLES;

/// Sans-IO re-chunker: push any number of samples, pop whole [`FRAME_SAMPLES`] frames.
///
/// Optionally bounded: when the producer outruns the pacer, the oldest audio is dropped
/// (and counted) so latency stays bounded instead of growing without limit.
#[derive(Debug, Default)]
pub struct Framer {
    buf: VecDeque<f32>,
    /// Most samples held at once; `None` means unbounded.
    max_buffered: Option<usize>,
    /// Samples discarded to respect `max_buffered`, for metrics.
    dropped: u64,
}

impl Framer {
    /// An unbounded framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer holding at most `samples` samples (raised to one frame, so a frame can
    /// always complete). Pushing beyond it drops the oldest samples.
    pub fn with_max_buffered(samples: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            max_buffered: Some(samples.max(FRAME_SAMPLES)),
            dropped: 0,
        }
    }

    /// Appends samples, dropping the oldest if the bound is exceeded.
    pub fn push(&mut self, samples: &[f32]) {
        let samples = match self.max_buffered {
            Some(max) if samples.len() > max => {
                // Everything buffered and the head of `samples` would be dropped anyway.
                let skip = samples.len() - max;
                self.dropped += (self.buf.len() + skip) as u64;
                self.buf.clear();
                &samples[skip..]
            }
            _ => samples,
        };
        if let Some(max) = self.max_buffered {
            let excess = (self.buf.len() + samples.len()).saturating_sub(max);
            if excess > 0 {
                self.buf.drain(..excess);
                self.dropped += excess as u64;
            }
        }
        self.buf.extend(samples.iter().copied());
    }

    /// The next full frame, if one is buffered.
    pub fn pop(&mut self) -> Option<Vec<f32>> {
        if self.buf.len() < FRAME_SAMPLES {
            return None;
        }
        let mut frame = vec![0.0; FRAME_SAMPLES];
        let (head, tail) = self.buf.as_slices();
        let from_head = head.len().min(FRAME_SAMPLES);
        frame[..from_head].copy_from_slice(&head[..from_head]);
        frame[from_head..].copy_from_slice(&tail[..FRAME_SAMPLES - from_head]);
        self.buf.drain(..FRAME_SAMPLES);
        Some(frame)
    }

    /// Like [`Self::pop`] into a caller's buffer, to avoid an allocation per frame.
    /// Returns false (leaving `frame` untouched) if no full frame is buffered.
    pub fn pop_into(&mut self, frame: &mut [f32; FRAME_SAMPLES]) -> bool {
        if self.buf.len() < FRAME_SAMPLES {
            return false;
        }
        // The ring's front is at most two slices: two memcpys, no per-sample iteration.
        let (head, tail) = self.buf.as_slices();
        let from_head = head.len().min(FRAME_SAMPLES);
        frame[..from_head].copy_from_slice(&head[..from_head]);
        frame[from_head..].copy_from_slice(&tail[..FRAME_SAMPLES - from_head]);
        self.buf.drain(..FRAME_SAMPLES);
        true
    }

    /// At end of stream: the remaining samples zero-padded to a full frame, or `None` if
    /// nothing is left. Only ever pads the last frame.
    pub fn flush(&mut self) -> Option<Vec<f32>> {
        if let Some(frame) = self.pop() {
            return Some(frame);
        }
        if self.buf.is_empty() {
            return None;
        }
        let mut frame: Vec<f32> = self.buf.drain(..).collect();
        frame.resize(FRAME_SAMPLES, 0.0);
        Some(frame)
    }

    /// Drops everything held (not counted as dropped: the caller asked).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Samples currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Total samples dropped to respect the bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_exact_and_in_order() {
        let mut f = Framer::new();
        let input: Vec<f32> = (0..FRAME_SAMPLES * 3 + 17).map(|i| i as f32).collect();
        // Odd chunk sizes to cross frame boundaries in every way.
        for chunk in input.chunks(7) {
            f.push(chunk);
        }
        let mut out = Vec::new();
        while let Some(frame) = f.pop() {
            assert_eq!(frame.len(), FRAME_SAMPLES);
            out.extend(frame);
        }
        assert_eq!(out, input[..FRAME_SAMPLES * 3]);
        assert_eq!(f.buffered(), 17);
        let last = f.flush().unwrap();
        assert_eq!(last.len(), FRAME_SAMPLES);
        assert_eq!(last[..17], input[FRAME_SAMPLES * 3..]);
        assert!(last[17..].iter().all(|&s| s == 0.0));
        assert!(f.flush().is_none());
        assert_eq!(f.dropped(), 0);
    }

    #[test]
    fn pop_into_matches_pop() {
        let mut f = Framer::new();
        let input: Vec<f32> = (0..FRAME_SAMPLES * 2).map(|i| i as f32).collect();
        f.push(&input);
        let mut frame = [0.0; FRAME_SAMPLES];
        assert!(f.pop_into(&mut frame));
        assert_eq!(frame[..], input[..FRAME_SAMPLES]);
        assert_eq!(f.pop().unwrap(), input[FRAME_SAMPLES..]);
        assert!(!f.pop_into(&mut frame));
    }

    #[test]
    fn bound_drops_oldest() {
        let max = FRAME_SAMPLES * 2;
        let mut f = Framer::with_max_buffered(max);
        let input: Vec<f32> = (0..max + 100).map(|i| i as f32).collect();
        for chunk in input.chunks(50) {
            f.push(chunk);
        }
        assert_eq!(f.buffered(), max);
        assert_eq!(f.dropped(), 100);
        assert_eq!(f.pop().unwrap()[0], 100.0);

        // One push larger than the bound keeps only its newest samples.
        let big: Vec<f32> = (0..max * 3).map(|i| i as f32).collect();
        f.push(&big);
        assert_eq!(f.buffered(), max);
        assert_eq!(f.dropped(), 100 + FRAME_SAMPLES as u64 + (max * 2) as u64);
        assert_eq!(f.pop().unwrap()[0], (max * 2) as f32);
    }

    #[test]
    fn bound_is_at_least_one_frame() {
        let mut f = Framer::with_max_buffered(10);
        f.push(&[0.5; FRAME_SAMPLES]);
        assert!(f.pop().is_some());
    }
}
