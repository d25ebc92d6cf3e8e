//! VP8 RTP payloads (RFC 7741): what a forwarder needs without decoding. The payload
//! descriptor (keyframe start, picture id, TL0PICIDX), the keyframe's frame size (a simulcast
//! layer's height), and picture id / TL0PICIDX rewriting so that a subscriber's decoder sees
//! one continuous sequence across layer switches and pauses.
//!
//! Hand-written because the `rtp` crate's VP8 depacketizer reads these fields but does not
//! say where they are, and rewriting needs their offsets. Nothing here panics on a malformed
//! payload: it comes from the network.

/// Picture ids are 15 bits (or 7 in the short form).
const PICTURE_ID_MODULO: u16 = 0x8000;

/// The fields of a VP8 payload descriptor a forwarder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_id: u8,
    /// The picture id and whether it is the 15-bit form.
    pub picture_id: Option<(u16, bool)>,
    pub tl0picidx: Option<u8>,
    /// TID: the temporal layer.
    pub temporal_id: Option<u8>,
    /// Where the VP8 payload (after the descriptor) starts.
    pub payload_offset: usize,
    picture_id_at: Option<usize>,
    tl0picidx_at: Option<usize>,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of an RTP payload; `None` when it is truncated.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut at = 1;
        let mut desc = Self {
            start_of_partition: first & 0x10 != 0,
            partition_id: first & 0x07,
            picture_id: None,
            tl0picidx: None,
            temporal_id: None,
            payload_offset: 0,
            picture_id_at: None,
            tl0picidx_at: None,
        };
        if first & 0x80 != 0 {
            let ext = *payload.get(at)?;
            at += 1;
            if ext & 0x80 != 0 {
                let b = *payload.get(at)?;
                desc.picture_id_at = Some(at);
                if b & 0x80 != 0 {
                    let low = *payload.get(at + 1)?;
                    desc.picture_id = Some(((u16::from(b & 0x7f) << 8) | u16::from(low), true));
                    at += 2;
                } else {
                    desc.picture_id = Some((u16::from(b), false));
                    at += 1;
                }
            }
            if ext & 0x40 != 0 {
                desc.tl0picidx = Some(*payload.get(at)?);
                desc.tl0picidx_at = Some(at);
                at += 1;
            }
            if ext & 0x30 != 0 {
                let b = *payload.get(at)?;
                if ext & 0x20 != 0 {
                    desc.temporal_id = Some(b >> 6);
                }
                at += 1;
            }
        }
        if at > payload.len() {
            return None;
        }
        desc.payload_offset = at;
        Some(desc)
    }

    /// Whether this packet starts a keyframe: the first partition's start, with the frame
    /// tag's P bit clear.
    pub fn is_keyframe(&self, payload: &[u8]) -> bool {
        self.start_of_partition
            && self.partition_id == 0
            && payload
                .get(self.payload_offset)
                .is_some_and(|tag| tag & 0x01 == 0)
    }

    /// A keyframe's width and height in pixels, from its frame header (RFC 6386 §9.1: the
    /// 3-byte tag, the start code 9d 01 2a, then 14-bit width and height).
    pub fn keyframe_size(&self, payload: &[u8]) -> Option<(u16, u16)> {
        if !self.is_keyframe(payload) {
            return None;
        }
        let frame = payload.get(self.payload_offset..)?;
        if frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let width = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
        let height = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
        Some((width, height))
    }
}

/// Rewrites one forwarded VP8 stream's picture ids and TL0PICIDX.
#[derive(Debug, Default)]
pub struct Vp8Rewriter {
    picture_id_offset: u16,
    tl0_offset: u8,
    /// The newest picture id and TL0PICIDX sent.
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Rewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rewrites the descriptor of a packet being forwarded, in place. `resync`: the RTP
    /// rewriter re-anchored at this packet (a switch or resume at a keyframe), so the counters
    /// re-anchor here to follow the last ones sent. Returns `false` for a truncated descriptor
    /// (the packet should be dropped).
    pub fn rewrite(&mut self, payload: &mut [u8], resync: bool) -> bool {
        let Some(desc) = Vp8Descriptor::parse(payload) else {
            return false;
        };
        // Indexing below is in bounds: `parse` read every byte at these offsets.
        if let (Some((picture_id, long)), Some(at)) = (desc.picture_id, desc.picture_id_at) {
            // Arithmetic modulo the field's size, so the short form wraps at 128 as it should.
            let modulo = if long { PICTURE_ID_MODULO } else { 0x80 };
            if resync {
                if let Some(last) = self.last_picture_id {
                    self.picture_id_offset = (last + 1).wrapping_sub(picture_id) % modulo;
                }
            }
            let out = picture_id.wrapping_add(self.picture_id_offset) % modulo;
            if long {
                let [high, low] = out.to_be_bytes();
                payload[at] = 0x80 | high;
                payload[at + 1] = low;
            } else {
                payload[at] = out as u8;
            }
            if self
                .last_picture_id
                .is_none_or(|last| picture_id_before(last % modulo, out, modulo))
            {
                self.last_picture_id = Some(out);
            }
        }
        if let (Some(tl0), Some(at)) = (desc.tl0picidx, desc.tl0picidx_at) {
            if resync {
                if let Some(last) = self.last_tl0 {
                    self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
                }
            }
            let out = tl0.wrapping_add(self.tl0_offset);
            payload[at] = out;
            if self
                .last_tl0
                .is_none_or(|last| last != out && out.wrapping_sub(last) < 0x80)
            {
                self.last_tl0 = Some(out);
            }
        }
        true
    }
}

/// Serial comparison of picture ids modulo 2^7 or 2^15.
fn picture_id_before(a: u16, b: u16, modulo: u16) -> bool {
    let diff = b.wrapping_sub(a) % modulo;
    diff != 0 && diff < modulo / 2
}

#[cfg(test)]
#[path = "vp8_tests.rs"]
mod tests;
