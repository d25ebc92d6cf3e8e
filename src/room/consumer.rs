//! One forwarded stream on the packet path: one subscriber's copy of one published track
//! (mediasoup's *Consumer*). It puts the header rewriting, the VP8 descriptor rewriting and
//! the extension re-mapping in the order a packet needs them, so `peer/` makes one call per
//! packet and per subscriber, and applies the room's decisions (pause, resume, layer switch)
//! through [`Consumer::rtp`].

use std::time::Instant;

use bytes::BytesMut;
use webrtc::rtp::packet::Packet;

use super::extensions::ExtensionMap;
use super::rewrite::{RtpRewriter, Verdict};
use super::vp8::{Vp8Descriptor, Vp8Rewriter};

/// How a subscriber's copy of a track is sent.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The SSRC of the subscriber's sender for this track.
    pub out_ssrc: u32,
    /// The codec's RTP clock rate.
    pub clock_rate: u32,
    pub video: bool,
    /// VP8: picture ids and TL0PICIDX are rewritten and keyframes found in the payload.
    pub vp8: bool,
    pub extensions: ExtensionMap,
}

/// One subscriber's forwarded copy of one track.
#[derive(Debug)]
pub struct Consumer {
    rtp: RtpRewriter,
    vp8: Option<Vp8Rewriter>,
    extensions: ExtensionMap,
}

impl Consumer {
    pub fn new(config: ConsumerConfig) -> Self {
        Self {
            rtp: RtpRewriter::new(config.out_ssrc, config.clock_rate, config.video),
            vp8: config.vp8.then(Vp8Rewriter::new),
            extensions: config.extensions,
        }
    }

    /// The subscriber's line now carries another publisher's track (a recycled m-line): its
    /// extensions are mapped anew; the RTP mapping goes on (see [`RtpRewriter::switch_to`]).
    pub fn set_extensions(&mut self, extensions: ExtensionMap) {
        self.extensions = extensions;
    }

    /// Pause, resume and layer switches.
    pub fn rtp(&mut self) -> &mut RtpRewriter {
        &mut self.rtp
    }

    /// The subscriber's copy of a publisher's packet, or `None` when it is not to be sent
    /// (paused, another layer's, waiting for a keyframe, a malformed VP8 descriptor).
    pub fn forward(&mut self, packet: &Packet, now: Instant) -> Option<Packet> {
        let keyframe = self.vp8.is_some()
            && Vp8Descriptor::parse(&packet.payload)
                .is_some_and(|d| d.is_keyframe(&packet.payload));
        let mut header = packet.header.clone();
        let Verdict::Forward { resync } = self.rtp.rewrite(&mut header, keyframe, now) else {
            return None;
        };
        let payload = match self.vp8.as_mut() {
            Some(vp8) => {
                let mut payload = BytesMut::from(&packet.payload[..]);
                if !vp8.rewrite(&mut payload, resync) {
                    return None;
                }
                payload.freeze()
            }
            None => packet.payload.clone(),
        };
        self.extensions.apply(&mut header);
        Some(Packet { header, payload })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use webrtc::rtp::header::{Extension, Header, EXTENSION_PROFILE_ONE_BYTE};

    use super::super::extensions::AUDIO_LEVEL_URI;
    use super::*;

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    /// A VP8 packet of source `ssrc` with a 15-bit picture id, carrying a transport-cc
    /// extension under the publisher's id 3.
    fn vp8(ssrc: u32, seq: u16, ts: u32, picture_id: u16, keyframe: bool) -> Packet {
        let [high, low] = picture_id.to_be_bytes();
        let mut payload = vec![
            0x90,
            0x80,
            0x80 | high,
            low,
            if keyframe { 0x10 } else { 0x11 },
        ];
        payload.extend_from_slice(&[0; 12]);
        Packet {
            header: Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                timestamp: ts,
                extension: true,
                extension_profile: EXTENSION_PROFILE_ONE_BYTE,
                extensions: vec![Extension {
                    id: 3,
                    payload: Bytes::from_static(&[0, 1]),
                }],
                ..Header::default()
            },
            payload: Bytes::from(payload),
        }
    }

    fn picture_id(packet: &Packet) -> u16 {
        Vp8Descriptor::parse(&packet.payload)
            .and_then(|d| d.picture_id)
            .expect("picture id")
            .0
    }

    #[test]
    fn a_simulcast_switch_reaches_the_subscriber_as_one_stream() {
        let t0 = Instant::now();
        let (low, high) = (11, 22);
        let mut consumer = Consumer::new(ConsumerConfig {
            out_ssrc: 99,
            clock_rate: 90_000,
            video: true,
            vp8: true,
            extensions: ExtensionMap::new(&[(3, TWCC)], &[(5, AUDIO_LEVEL_URI)]),
        });
        consumer.rtp().switch_to(low);
        let mut sent = Vec::new();
        let input = [
            (low, 100, 0, 500, true, 0),
            (high, 7000, 50_000, 9000, true, 0),
            (low, 101, 3000, 501, false, 33),
            (high, 7001, 53_000, 9001, false, 33),
        ];
        for (ssrc, seq, ts, pid, key, at) in input {
            sent.extend(consumer.forward(
                &vp8(ssrc, seq, ts, pid, key),
                t0 + Duration::from_millis(at),
            ));
        }
        consumer.rtp().switch_to(high);
        let input = [
            (low, 102, 6000, 502, false, 66),
            (high, 7002, 56_000, 9002, false, 66),
            (high, 7003, 59_000, 9003, true, 100),
            (low, 103, 9000, 503, false, 100),
            (high, 7004, 62_000, 9004, false, 133),
        ];
        for (ssrc, seq, ts, pid, key, at) in input {
            sent.extend(consumer.forward(
                &vp8(ssrc, seq, ts, pid, key),
                t0 + Duration::from_millis(at),
            ));
        }
        let seen: Vec<(u32, u16, u16)> = sent
            .iter()
            .map(|p| (p.header.ssrc, p.header.sequence_number, picture_id(p)))
            .collect();
        assert_eq!(
            seen,
            vec![
                (99, 100, 500),
                (99, 101, 501),
                (99, 102, 502),
                (99, 103, 503),
                (99, 104, 504),
            ]
        );
        assert!(
            sent.iter().all(|p| !p.header.extension),
            "the publisher's transport-cc is not forwarded"
        );
    }

    #[test]
    fn a_paused_consumer_sends_nothing() {
        let t0 = Instant::now();
        let mut consumer = Consumer::new(ConsumerConfig {
            out_ssrc: 5,
            clock_rate: 48_000,
            video: false,
            vp8: false,
            extensions: ExtensionMap::default(),
        });
        let packet = Packet {
            header: Header {
                version: 2,
                ssrc: 1,
                sequence_number: 1,
                ..Header::default()
            },
            payload: Bytes::from_static(&[0xfc, 1, 2]),
        };
        let out = consumer.forward(&packet, t0).expect("audio flows");
        assert_eq!(out.payload, packet.payload, "audio payloads pass untouched");
        consumer.rtp().pause();
        assert!(consumer.forward(&packet, t0).is_none());
    }
}
