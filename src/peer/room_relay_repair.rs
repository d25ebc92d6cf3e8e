//! Loss on a relay link, repaired over it (#16). A subscriber's NACK is answered by its own
//! worker B from the send buffer of its line (`nack.rs`) where B has the packet; a packet
//! lost between the workers B never had. So B watches each relayed stream for gaps and NACKs
//! them over the link's back channel at once ([`GapDetector`]), and A answers from a short
//! history of what it relayed on that link ([`RelayHistory`]); the resent packet reaches B's
//! subscribers late but in their stream's sequence (their NACKs for it, if any, are then
//! answered by B).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::{
    nack_pairs_from_sequence_numbers, TransportLayerNack,
};
use webrtc::rtp::header::Header;
use webrtc::util::{Marshal, Unmarshal};

use crate::room::seq_before;

/// Packets kept per relayed stream on a link: about 2.5 s of a 2 Mbit/s layer, several relay
/// round trips.
const HISTORY_PACKETS: usize = 512;
/// A gap longer than this is not NACKed (a stream that restarted, or a burst a NACK would
/// not repair in time); the next packet starts afresh.
const MAX_GAP: u16 = 64;
/// A stream that relayed nothing this long is forgotten (its track left the link).
const IDLE_STREAM: Duration = Duration::from_secs(5);

/// What a publishing worker relayed on one link, per relay SSRC: the last
/// [`HISTORY_PACKETS`] packets of each stream, as sent (marshalled, before SRTP). Bounded by
/// the link's tracks and their layers: a stream idle for [`IDLE_STREAM`] is forgotten.
#[derive(Default)]
pub(crate) struct RelayHistory {
    streams: HashMap<u32, Stream>,
}

struct Stream {
    slots: Vec<Option<(u16, Bytes)>>,
    last: Instant,
}

impl RelayHistory {
    /// Keeps a relayed packet (anything that is no RTP is ignored).
    pub fn record(&mut self, packet: &Bytes, now: Instant) {
        let Ok(header) = Header::unmarshal(&mut packet.as_ref()) else {
            return;
        };
        let stream = self.streams.entry(header.ssrc).or_insert_with(|| Stream {
            slots: vec![None; HISTORY_PACKETS],
            last: now,
        });
        stream.last = now;
        let index = usize::from(header.sequence_number) % HISTORY_PACKETS;
        stream.slots[index] = Some((header.sequence_number, packet.clone()));
    }

    /// Forgets the streams that relayed nothing for [`IDLE_STREAM`] up to `now`.
    pub fn forget_idle(&mut self, now: Instant) {
        self.streams
            .retain(|_, stream| now.saturating_duration_since(stream.last) < IDLE_STREAM);
    }

    /// The packets the receiving worker's NACKs in `rtcp` ask for that are still kept, in
    /// the order asked.
    pub fn nacked(&self, rtcp: &[u8]) -> Vec<Bytes> {
        let Ok(packets) = webrtc::rtcp::packet::unmarshal(&mut &rtcp[..]) else {
            return Vec::new();
        };
        let mut resend = Vec::new();
        for packet in &packets {
            let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                continue;
            };
            let Some(Stream { slots, .. }) = self.streams.get(&nack.media_ssrc) else {
                continue;
            };
            for pair in &nack.nacks {
                for sequence_number in pair.packet_list() {
                    let index = usize::from(sequence_number) % HISTORY_PACKETS;
                    if let Some((kept, bytes)) = &slots[index] {
                        if *kept == sequence_number {
                            resend.push(bytes.clone());
                        }
                    }
                }
            }
        }
        resend
    }
}

/// The receiving side's view of each relayed stream on a link: the next sequence number
/// expected, so that a gap is NACKed as soon as the packet after it arrives.
#[derive(Default)]
pub(crate) struct GapDetector {
    next: HashMap<u32, u16>,
}

impl GapDetector {
    /// A relayed RTP packet arrived: the NACK (marshalled) for the packets it shows missing,
    /// if any. A late or resent packet moves nothing.
    pub fn on_rtp(&mut self, packet: &[u8]) -> Option<Bytes> {
        let header = Header::unmarshal(&mut &packet[..]).ok()?;
        let sequence_number = header.sequence_number;
        let next = self.next.entry(header.ssrc).or_insert(sequence_number);
        if seq_before(sequence_number, *next) {
            return None;
        }
        let gap = sequence_number.wrapping_sub(*next);
        let missing: Vec<u16> = (0..gap).map(|i| next.wrapping_add(i)).collect();
        *next = sequence_number.wrapping_add(1);
        if missing.is_empty() || gap > MAX_GAP {
            return None;
        }
        TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: header.ssrc,
            nacks: nack_pairs_from_sequence_numbers(&missing),
        }
        .marshal()
        .ok()
    }

    /// Forgets the streams a link no longer carries.
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.next.retain(|ssrc, _| keep(*ssrc));
    }
}

#[cfg(test)]
mod tests {
    use webrtc::rtp::packet::Packet;

    use super::*;

    fn rtp(ssrc: u32, sequence_number: u16) -> Bytes {
        Packet {
            header: Header {
                version: 2,
                payload_type: 96,
                sequence_number,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(vec![sequence_number as u8; 20]),
        }
        .marshal()
        .unwrap()
    }

    fn sequence_numbers(packets: &[Bytes]) -> Vec<u16> {
        packets
            .iter()
            .map(|p| Header::unmarshal(&mut p.as_ref()).unwrap().sequence_number)
            .collect()
    }

    #[test]
    fn a_gap_on_the_link_is_nacked_by_b_and_resent_by_a_from_what_it_relayed() {
        let mut history = RelayHistory::default();
        let mut gaps = GapDetector::default();
        let sent: Vec<Bytes> = (65_530..=65_535)
            .chain(0..4)
            .map(|seq| rtp(0x31, seq))
            .collect();
        let now = Instant::now();
        for packet in &sent {
            history.record(packet, now);
        }
        history.record(&rtp(0x32, 9), now);
        // B gets them all but 65534, 65535 and 2 (the wrap included).
        let mut nacks = Vec::new();
        for packet in &sent {
            let seq = Header::unmarshal(&mut packet.as_ref())
                .unwrap()
                .sequence_number;
            if [65_534, 65_535, 2].contains(&seq) {
                continue;
            }
            nacks.extend(gaps.on_rtp(packet));
        }
        assert_eq!(nacks.len(), 2, "one NACK per gap, sent when the gap shows");
        let resent: Vec<u16> = nacks
            .iter()
            .flat_map(|nack| sequence_numbers(&history.nacked(nack)))
            .collect();
        assert_eq!(resent, [65_534, 65_535, 2]);
        // The resent packets arriving late NACK nothing more.
        for packet in nacks.iter().flat_map(|nack| history.nacked(nack)) {
            assert!(gaps.on_rtp(&packet).is_none());
        }
        assert!(gaps.on_rtp(&sent[5]).is_none(), "a duplicate NACKs nothing");
    }

    #[test]
    fn what_a_does_not_keep_is_not_resent_and_a_long_gap_is_not_nacked() {
        let mut history = RelayHistory::default();
        let t0 = Instant::now();
        for seq in 0..(HISTORY_PACKETS as u16 + 10) {
            history.record(&rtp(0x31, seq), t0);
        }
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: 0x31,
            nacks: nack_pairs_from_sequence_numbers(&[3, HISTORY_PACKETS as u16 + 5]),
        }
        .marshal()
        .unwrap();
        assert_eq!(
            sequence_numbers(&history.nacked(&nack)),
            [HISTORY_PACKETS as u16 + 5],
            "3 was overwritten long ago"
        );
        let mut gaps = GapDetector::default();
        assert!(gaps.on_rtp(&rtp(0x31, 100)).is_none());
        assert!(
            gaps.on_rtp(&rtp(0x31, 100 + MAX_GAP + 2)).is_none(),
            "too long a gap"
        );
        assert!(
            gaps.on_rtp(&rtp(0x31, 100 + MAX_GAP + 4)).is_some(),
            "afresh from there"
        );
        history.forget_idle(t0 + IDLE_STREAM - Duration::from_millis(1));
        assert!(!history.nacked(&nack).is_empty(), "still relaying");
        history.forget_idle(t0 + IDLE_STREAM);
        assert!(history.nacked(&nack).is_empty(), "its track left the link");
    }
}
