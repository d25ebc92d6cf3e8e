//! End-to-end latency without decoding: every packet's send time rides in the Opus packet's own
//! padding (RFC 6716 §3.2.5, code 3 with the padding flag; decoders ignore padding bytes), so
//! both servers forward it untouched and the generator reads it back on each forwarded stream.
//! The [`Meter`] counts what was sent and received over the measured window and keeps a
//! histogram of the delays.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;

/// Bytes of the stamp (microseconds since [`epoch`], big endian) at the end of the packet.
pub const STAMP_LEN: usize = 8;
/// Histogram resolution and range: 0.1 ms buckets up to 2 s (later ones count as 2 s).
const BUCKET_US: u64 = 100;
const BUCKETS: usize = 20_000;

/// The process-wide clock origin the stamps count from (senders and receivers are one process).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// `packet` (one Opus frame, code 0) rewritten as a code 3 packet with one frame and
/// [`STAMP_LEN`] bytes of padding, zeroed; `None` for packets of another shape.
pub fn with_stamp_room(packet: &[u8]) -> Option<Bytes> {
    let (&toc, frame) = packet.split_first()?;
    if toc & 0b11 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(packet.len() + 2 + STAMP_LEN);
    // TOC with code 3; frame count byte: CBR, padding flag, one frame; padding length.
    out.extend_from_slice(&[toc | 0b11, 0x40 | 1, STAMP_LEN as u8]);
    out.extend_from_slice(frame);
    out.extend_from_slice(&[0; STAMP_LEN]);
    Some(Bytes::from(out))
}

/// Writes `stamp_us` into a packet made by [`with_stamp_room`].
pub fn write_stamp(packet: &mut [u8], stamp_us: u64) {
    if let Some(at) = packet.len().checked_sub(STAMP_LEN) {
        packet[at..].copy_from_slice(&stamp_us.to_be_bytes());
    }
}

/// The stamp of a packet made by [`with_stamp_room`]; `None` for any other payload.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let header = payload.get(..3)?;
    if header[0] & 0b11 != 0b11 || header[1] & 0x40 == 0 || usize::from(header[2]) != STAMP_LEN {
        return None;
    }
    let tail = payload.len().checked_sub(STAMP_LEN).filter(|&at| at >= 3)?;
    let bytes: [u8; STAMP_LEN] = payload[tail..].try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// What the run measures, shared by every sender and receiver: only packets stamped inside
/// the window count, on both sides, so the window's edges cut no stream short.
pub struct Meter {
    start_us: AtomicU64,
    end_us: AtomicU64,
    /// Packets that should arrive: each stamped packet once per participant it is forwarded to.
    expected: AtomicU64,
    received: AtomicU64,
    buckets: Box<[AtomicU32]>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            start_us: AtomicU64::new(u64::MAX),
            end_us: AtomicU64::new(u64::MAX),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl Meter {
    /// Packets stamped from now on count.
    pub fn open(&self) {
        self.start_us.store(now_us(), Ordering::SeqCst);
    }

    /// Packets stamped from now on no longer count.
    pub fn close(&self) {
        self.end_us.store(now_us(), Ordering::SeqCst);
    }

    fn counts(&self, stamp_us: u64) -> bool {
        stamp_us >= self.start_us.load(Ordering::Relaxed)
            && stamp_us < self.end_us.load(Ordering::Relaxed)
    }

    /// A packet stamped `stamp_us` was sent to `copies` receivers.
    pub fn sent(&self, stamp_us: u64, copies: u64) {
        if self.counts(stamp_us) {
            self.expected.fetch_add(copies, Ordering::Relaxed);
        }
    }

    /// A packet stamped `stamp_us` arrived at `now_us`.
    pub fn received(&self, stamp_us: u64, now_us: u64) {
        if !self.counts(stamp_us) {
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        let bucket = (now_us.saturating_sub(stamp_us) / BUCKET_US) as usize;
        self.buckets[bucket.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Relaxed)
    }

    pub fn received_count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The delay (ms, the upper edge of its bucket) below which a share `q` (0..=1) of the
    /// received packets arrived; 0 when none did.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        (BUCKETS as u64 * BUCKET_US) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remotemedia_webrtc::media::{OpusConfig, OpusDecoder, OpusEncoder, FRAME_SAMPLES};

    #[test]
    fn a_stamped_packet_still_decodes_and_gives_its_stamp_back() {
        let mut encoder = OpusEncoder::new(&OpusConfig::default()).unwrap();
        let pcm = vec![0.1f32; FRAME_SAMPLES];
        let plain = encoder.encode(&pcm).unwrap();
        let mut stamped = with_stamp_room(&plain).unwrap().to_vec();
        write_stamp(&mut stamped, 123_456_789);
        assert_eq!(read_stamp(&stamped), Some(123_456_789));
        assert_eq!(read_stamp(&plain), None);
        let mut decoder = OpusDecoder::new().unwrap();
        assert_eq!(decoder.decode(&stamped).unwrap().len(), FRAME_SAMPLES);
    }

    #[test]
    fn only_packets_stamped_inside_the_window_count() {
        let meter = Meter::default();
        meter.sent(now_us(), 4);
        meter.open();
        let inside = now_us();
        meter.sent(inside, 4);
        meter.received(inside, inside + 1_500);
        meter.received(inside, inside + 20_000);
        // The window's end is exclusive: let the clock move past `inside`.
        std::thread::sleep(std::time::Duration::from_millis(2));
        meter.close();
        meter.sent(now_us() + 1, 4);
        assert_eq!((meter.expected(), meter.received_count()), (4, 2));
        assert_eq!(meter.percentile_ms(0.5), 1.6);
        assert_eq!(meter.percentile_ms(0.99), 20.1);
    }
}
