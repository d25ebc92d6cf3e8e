//! Keyframe requests across the relay (#16): a subscriber on the receiving worker B that
//! needs a keyframe of a relayed video track (it was just added, switches layer, or its
//! decoder lost one: PLI/FIR) reaches the publisher on worker A.
//!
//! B sends a PLI over the link's back channel, its media SSRC the relay SSRC of the track's
//! layer ([`keyframe_request`]); A reads the relay SSRCs asked for ([`requested_ssrcs`]),
//! finds the producer and layer they name ([`relayed_layer`]) and asks the publisher as its
//! own subscribers' requests do, at most one per source per
//! [`KEYFRAME_REQUEST_INTERVAL`] ([`KeyframeThrottle`]): B's subscribers together cannot make
//! the publisher send keyframes faster than A's own could.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::util::Marshal;

use super::video::KEYFRAME_REQUEST_INTERVAL;

/// The PLI B sends back for the relayed stream `relay_ssrc`.
pub(crate) fn keyframe_request(relay_ssrc: u32) -> Option<Bytes> {
    PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: relay_ssrc,
    }
    .marshal()
    .ok()
}

/// The relay SSRCs a compound RTCP packet from B asks keyframes of (PLI, FIR); anything
/// else in it is not a keyframe request. Unparsable: none.
pub(crate) fn requested_ssrcs(rtcp: &[u8]) -> Vec<u32> {
    let Ok(packets) = webrtc::rtcp::packet::unmarshal(&mut &rtcp[..]) else {
        return Vec::new();
    };
    let mut ssrcs = Vec::new();
    for packet in &packets {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            ssrcs.push(pli.media_ssrc);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            ssrcs.extend(fir.fir.iter().map(|entry| entry.ssrc));
        }
    }
    ssrcs.sort_unstable();
    ssrcs.dedup();
    ssrcs
}

/// The producer id and layer index a relay SSRC names (inverse of
/// [`crate::room_relay::relay_layer_ssrc`]); `None` for one no relay SSRC is (low bits 0).
pub(crate) fn relayed_layer(relay_ssrc: u32) -> Option<(u64, usize)> {
    let layer = (relay_ssrc & 0xf).checked_sub(1)?;
    Some((u64::from(relay_ssrc >> 4), layer as usize))
}

/// At most one keyframe request per source SSRC per [`KEYFRAME_REQUEST_INTERVAL`], for the
/// requests that come over the relay. Its entries are the sources asked for within the last
/// interval (older ones go at each check), so it stays as small as the room's tracks.
#[derive(Debug, Default)]
pub(crate) struct KeyframeThrottle {
    last: HashMap<u32, Instant>,
}

impl KeyframeThrottle {
    /// Whether to pass a request for source `ssrc` on now (then counted as the last one).
    pub fn allow(&mut self, ssrc: u32, now: Instant) -> bool {
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < KEYFRAME_REQUEST_INTERVAL);
        if self.last.contains_key(&ssrc) {
            return false;
        }
        self.last.insert(ssrc, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use webrtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;
    use webrtc::rtcp::receiver_report::ReceiverReport;

    use super::*;
    use crate::room_relay::relay_layer_ssrc;

    #[test]
    fn the_keyframe_request_b_sends_names_the_layer_a_relays_it() {
        let ssrc = relay_layer_ssrc(7, 2);
        let pli = keyframe_request(ssrc).unwrap();
        assert_eq!(requested_ssrcs(&pli), [ssrc]);
        assert_eq!(relayed_layer(ssrc), Some((7, 2)));
        assert_eq!(
            relayed_layer(crate::room_relay::relay_ssrc(7)),
            Some((7, 0))
        );
        assert_eq!(relayed_layer(7 << 4), None, "no relay SSRC has low bits 0");
    }

    #[test]
    fn firs_count_as_keyframe_requests_and_reports_do_not() {
        let packets: Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>> = vec![
            Box::new(ReceiverReport::default()),
            Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: 0x32,
                    sequence_number: 1,
                }],
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: 0x31,
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: 0x31,
            }),
        ];
        let rtcp = webrtc::rtcp::packet::marshal(&packets).unwrap();
        assert_eq!(requested_ssrcs(&rtcp), [0x31, 0x32]);
        let report: Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>> =
            vec![Box::new(ReceiverReport::default())];
        let rtcp = webrtc::rtcp::packet::marshal(&report).unwrap();
        assert!(requested_ssrcs(&rtcp).is_empty());
        assert!(requested_ssrcs(b"garbage").is_empty());
    }

    #[test]
    fn one_request_per_source_per_interval_passes_whatever_the_number_asking() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::default();
        assert!(throttle.allow(1, t0), "the first passes at once");
        assert!(throttle.allow(2, t0), "another source is not held back");
        assert!(!throttle.allow(1, t0 + Duration::from_millis(100)));
        assert!(!throttle.allow(1, t0 + KEYFRAME_REQUEST_INTERVAL - Duration::from_millis(1)));
        assert!(throttle.allow(1, t0 + KEYFRAME_REQUEST_INTERVAL));
        assert_eq!(throttle.last.len(), 1, "source 2's old entry went");
    }
}
