//! The short history of RTP packets a sender keeps to answer NACKs, and the RTX form
//! (RFC 4588) of a retransmission. No I/O and no clock: the interceptor in `nack.rs` feeds
//! it the packets it sends and asks it for the ones a receiver lost.

use bytes::{BufMut, BytesMut};
use webrtc::rtp::packet::Packet;

/// Packets kept per outbound video stream. At about 200 packets/s (2 Mbit/s of video) that is
/// 2.5 s of history, several round trips more than a NACK needs, for at most about 600 KB of
/// forwarded video per stream.
pub(crate) const SEND_BUFFER_PACKETS: usize = 512;

/// The last [`SEND_BUFFER_PACKETS`] packets of one stream by sequence number.
///
/// Forwarded video is sent in the order it arrived from the client, so a packet that was
/// reordered on the way in, or retransmitted to the server, is sent after newer ones. Such a
/// packet is kept in its own slot and moves nothing; the history always ends at the newest
/// sequence number sent. (webrtc-rs 0.17's own responder buffer made a late packet the
/// newest, and the next packet then erased every slot in between.)
pub(crate) struct SendBuffer {
    slots: Box<[Option<Packet>]>,
    /// The newest sequence number stored, in RTP's wrapping order.
    newest: Option<u16>,
}

impl SendBuffer {
    /// A history of `capacity` packets, rounded up to a power of two (at most 32768) so that
    /// slots stay put across the sequence number wrap.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 15).next_power_of_two();
        Self {
            slots: vec![None; capacity].into_boxed_slice(),
            newest: None,
        }
    }

    /// Records a packet as it is sent. A packet older than the whole history is not kept.
    pub(crate) fn insert(&mut self, packet: &Packet) {
        let sequence_number = packet.header.sequence_number;
        match self.newest {
            Some(newest) if is_older(sequence_number, newest) => {
                if usize::from(newest.wrapping_sub(sequence_number)) >= self.slots.len() {
                    return;
                }
            }
            Some(newest) => {
                // Newer: slots of sequence numbers never sent must not answer for them.
                let skipped = usize::from(sequence_number.wrapping_sub(newest));
                if skipped >= self.slots.len() {
                    self.slots.iter_mut().for_each(|slot| *slot = None);
                } else {
                    for gap in 1..skipped {
                        let slot = self.slot(newest.wrapping_add(gap as u16));
                        self.slots[slot] = None;
                    }
                }
                self.newest = Some(sequence_number);
            }
            None => self.newest = Some(sequence_number),
        }
        let slot = self.slot(sequence_number);
        self.slots[slot] = Some(packet.clone());
    }

    /// The packet sent with `sequence_number`, while it is in the history.
    pub(crate) fn get(&self, sequence_number: u16) -> Option<&Packet> {
        let newest = self.newest?;
        if is_older(newest, sequence_number)
            || usize::from(newest.wrapping_sub(sequence_number)) >= self.slots.len()
        {
            return None;
        }
        self.slots[self.slot(sequence_number)]
            .as_ref()
            .filter(|p| p.header.sequence_number == sequence_number)
    }

    fn slot(&self, sequence_number: u16) -> usize {
        usize::from(sequence_number) & (self.slots.len() - 1)
    }
}

/// `a` comes before `b` in RTP's wrapping sequence order.
fn is_older(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

/// The RTX form of `original` (RFC 4588 §4): sent on the repair stream's SSRC and payload
/// type with the repair stream's own sequence number; the payload starts with the original
/// sequence number (OSN, big-endian) followed by the original payload. Timestamp, marker,
/// CSRCs and header extensions stay the original's; padding is not carried over.
pub(crate) fn rtx_packet(
    original: &Packet,
    ssrc: u32,
    payload_type: u8,
    sequence_number: u16,
) -> Packet {
    let mut payload = BytesMut::with_capacity(2 + original.payload.len());
    payload.put_u16(original.header.sequence_number);
    payload.put_slice(&original.payload);
    let mut header = original.header.clone();
    header.ssrc = ssrc;
    header.payload_type = payload_type;
    header.sequence_number = sequence_number;
    header.padding = false;
    Packet {
        header,
        payload: payload.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use webrtc::rtp::header::Header;

    fn packet(sequence_number: u16) -> Packet {
        Packet {
            header: Header {
                version: 2,
                payload_type: 96,
                sequence_number,
                timestamp: u32::from(sequence_number) * 3000,
                ssrc: 42,
                ..Default::default()
            },
            payload: Bytes::from(sequence_number.to_be_bytes().to_vec()),
        }
    }

    fn kept(buffer: &SendBuffer, sequence_number: u16) -> bool {
        buffer
            .get(sequence_number)
            .is_some_and(|p| p.payload == packet(sequence_number).payload)
    }

    #[test]
    fn keeps_the_last_capacity_packets() {
        let mut buffer = SendBuffer::new(8);
        (0..20).for_each(|s| buffer.insert(&packet(s)));
        assert!((12..20).all(|s| kept(&buffer, s)));
        assert!((0..12).all(|s| buffer.get(s).is_none()));
        assert!(buffer.get(20).is_none(), "nothing newer than sent");
    }

    #[test]
    fn a_late_packet_fills_its_slot_and_erases_nothing() {
        let mut buffer = SendBuffer::new(16);
        for s in [0, 1, 2, 4, 5, 3, 6, 7] {
            buffer.insert(&packet(s));
        }
        assert!((0..8).all(|s| kept(&buffer, s)), "3 came late, all kept");
        // A retransmission from upstream, long after: still no gap opens.
        buffer.insert(&packet(2));
        buffer.insert(&packet(8));
        assert!((0..9).all(|s| kept(&buffer, s)));
    }

    #[test]
    fn gaps_and_packets_older_than_the_history_are_not_kept() {
        let mut buffer = SendBuffer::new(8);
        (0..8).for_each(|s| buffer.insert(&packet(s)));
        buffer.insert(&packet(11));
        assert!((8..11).all(|s| buffer.get(s).is_none()), "never sent");
        assert!(kept(&buffer, 11) && kept(&buffer, 4));
        buffer.insert(&packet(2));
        assert!(buffer.get(2).is_none(), "older than the history");
        buffer.insert(&packet(1000));
        assert!(
            (4..12).all(|s| buffer.get(s).is_none()),
            "a jump empties it"
        );
        assert!(kept(&buffer, 1000));
    }

    #[test]
    fn works_across_the_sequence_number_wrap() {
        let mut buffer = SendBuffer::new(8);
        for s in [65532, 65533, 65535, 0, 65534, 1, 2] {
            buffer.insert(&packet(s));
        }
        assert!([65532, 65533, 65534, 65535, 0, 1, 2]
            .iter()
            .all(|&s| kept(&buffer, s)));
        assert!(buffer.get(3).is_none() && buffer.get(65531).is_none());
    }

    #[test]
    fn rtx_carries_the_original_sequence_number_then_the_payload() {
        let mut original = packet(0xBEEF);
        original.header.marker = true;
        original.header.padding = true;
        original.payload = Bytes::from_static(b"\x10vp8");
        let rtx = rtx_packet(&original, 7, 97, 5);
        assert_eq!(
            (
                rtx.header.ssrc,
                rtx.header.payload_type,
                rtx.header.sequence_number
            ),
            (7, 97, 5)
        );
        assert_eq!(rtx.header.timestamp, original.header.timestamp);
        assert!(rtx.header.marker && !rtx.header.padding);
        assert_eq!(&rtx.payload[..], b"\xBE\xEF\x10vp8");
    }
}
