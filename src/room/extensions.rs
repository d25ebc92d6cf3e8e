//! RTP header extension re-mapping from a publisher's negotiated ids to a subscriber's.
//!
//! Extension ids are per connection (each side's `a=extmap`), so a forwarded packet must carry
//! the subscriber's ids. Only the audio level survives: the subscriber's browser uses it, and
//! the rest describes the publisher's hop (transport-cc sequence numbers, abs-send-time,
//! mid/rid of the publisher's m-lines) and would mislead the subscriber's estimators.

use webrtc::rtp::header::{Header, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE};

/// RFC 6464's client-to-mixer audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Extensions kept on forwarded packets.
const KEPT: [&str; 1] = [AUDIO_LEVEL_URI];

/// One publisher → subscriber id map for forwarded packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionMap {
    /// (publisher id, subscriber id) of each kept extension both sides negotiated.
    ids: Vec<(u8, u8)>,
}

impl ExtensionMap {
    /// Builds the map from both sides' negotiated `(id, uri)` pairs.
    pub fn new(publisher: &[(u8, &str)], subscriber: &[(u8, &str)]) -> Self {
        let ids = KEPT
            .iter()
            .filter_map(|uri| {
                let from = publisher.iter().find(|(_, u)| u == uri)?.0;
                let to = subscriber.iter().find(|(_, u)| u == uri)?.0;
                Some((from, to))
            })
            .collect();
        Self { ids }
    }

    /// Keeps the mapped extensions under the subscriber's ids and strips the rest.
    pub fn apply(&self, header: &mut Header) {
        header.extensions.retain_mut(|ext| {
            match self.ids.iter().find(|(from, _)| *from == ext.id) {
                Some((_, to)) => {
                    ext.id = *to;
                    true
                }
                None => false,
            }
        });
        header.extensions_padding = 0;
        header.extension = !header.extensions.is_empty();
        if header.extension {
            // RFC 8285: ids above 14 or payloads above 16 bytes need the two-byte form.
            let two_byte = header
                .extensions
                .iter()
                .any(|e| e.id > 14 || e.payload.is_empty() || e.payload.len() > 16);
            header.extension_profile = if two_byte {
                EXTENSION_PROFILE_TWO_BYTE
            } else {
                EXTENSION_PROFILE_ONE_BYTE
            };
        } else {
            header.extension_profile = 0;
        }
    }
}

/// The id a side negotiated for `uri` (e.g. where speaker detection reads a publisher's audio
/// level).
pub fn extension_id(negotiated: &[(u8, &str)], uri: &str) -> Option<u8> {
    negotiated
        .iter()
        .find(|(_, u)| *u == uri)
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use webrtc::rtp::header::Extension;
    use webrtc::rtp::packet::Packet;
    use webrtc::util::{Marshal, Unmarshal};

    use super::*;

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

    fn published() -> Header {
        Header {
            version: 2,
            extension: true,
            extension_profile: EXTENSION_PROFILE_ONE_BYTE,
            extensions: vec![
                Extension {
                    id: 4,
                    payload: Bytes::from_static(&[0x80 | 30]),
                },
                Extension {
                    id: 3,
                    payload: Bytes::from_static(&[0, 7]),
                },
                Extension {
                    id: 9,
                    payload: Bytes::from_static(b"0"),
                },
            ],
            ..Header::default()
        }
    }

    #[test]
    fn audio_level_is_kept_under_the_subscribers_id_and_the_rest_stripped() {
        let map = ExtensionMap::new(
            &[(4, AUDIO_LEVEL_URI), (3, TWCC), (9, MID)],
            &[(1, AUDIO_LEVEL_URI), (5, TWCC)],
        );
        let mut header = published();
        map.apply(&mut header);
        assert_eq!(
            header.extensions,
            vec![Extension {
                id: 1,
                payload: Bytes::from_static(&[0x80 | 30])
            }]
        );
        // It survives the wire: a receiver reads the level under id 1.
        let packet = Packet {
            header,
            payload: Bytes::from_static(&[1, 2, 3]),
        };
        let raw = packet.marshal().expect("marshal");
        let parsed = Packet::unmarshal(&mut raw.clone()).expect("unmarshal");
        assert_eq!(
            parsed.header.get_extension(1),
            Some(Bytes::from_static(&[0x80 | 30]))
        );
        assert_eq!(
            parsed.header.get_extension(3),
            None,
            "transport-cc stripped"
        );
        assert_eq!(parsed.payload, Bytes::from_static(&[1, 2, 3]));
        assert_eq!(
            extension_id(&[(4, AUDIO_LEVEL_URI)], AUDIO_LEVEL_URI),
            Some(4)
        );
    }

    #[test]
    fn nothing_kept_means_no_extension_block() {
        let map = ExtensionMap::new(&[(4, AUDIO_LEVEL_URI)], &[(5, TWCC)]);
        let mut header = published();
        map.apply(&mut header);
        assert!(!header.extension);
        assert!(header.extensions.is_empty());
        let packet = Packet {
            header,
            payload: Bytes::from_static(&[9]),
        };
        let raw = packet.marshal().expect("marshal");
        assert_eq!(raw.len(), 12 + 1, "a bare 12-byte header");
    }

    #[test]
    fn a_subscriber_id_above_14_uses_the_two_byte_form() {
        let map = ExtensionMap::new(&[(4, AUDIO_LEVEL_URI)], &[(20, AUDIO_LEVEL_URI)]);
        let mut header = published();
        map.apply(&mut header);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        let packet = Packet {
            header,
            payload: Bytes::from_static(&[9]),
        };
        let raw = packet.marshal().expect("marshal");
        let parsed = Packet::unmarshal(&mut raw.clone()).expect("unmarshal");
        assert_eq!(
            parsed.header.get_extension(20),
            Some(Bytes::from_static(&[0x80 | 30]))
        );
    }
}
