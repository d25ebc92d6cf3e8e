//! A published track as the other workers of its room see it: an entry of `tracks:<worker>`
//! in the room's record (#16), and what a receiving worker needs to forward its relayed copy
//! (codec, header extensions) without asking the publishing worker again.

use serde::{Deserialize, Serialize};

use crate::room::MediaKind;

/// One track published on a worker, as written to the room's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedTrack {
    /// The publisher's peer id.
    pub publisher: String,
    /// Its msid track id (as subscribers see it).
    pub track_id: String,
    pub kind: MediaKind,
    /// Simulcast layer rids, lowest first; empty for a single stream.
    #[serde(default)]
    pub layers: Vec<String>,
    /// The publishing worker's producer id in its room: what a receiving worker asks for
    /// (worker API `OpenRelay`) and, through [`relay_ssrc`], how it tells the tracks of one
    /// link apart.
    pub producer: u64,
    /// The codec the publisher sends (every subscriber's line is made of it).
    pub codec: RelayedCodec,
    /// The publisher's negotiated header extensions (id, URI): relayed packets keep its ids.
    #[serde(default)]
    pub extensions: Vec<(u8, String)>,
}

/// A relayed track's codec, as SDP names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedCodec {
    pub mime_type: String,
    pub clock_rate: u32,
    #[serde(default)]
    pub channels: u16,
    #[serde(default)]
    pub fmtp: String,
}

/// The SSRC a relayed copy of producer `producer` carries on its link: the publishing
/// worker's producer id, shifted to leave four bits for a simulcast layer. Known to both
/// ends from the record alone, and unique on a link (one room, one publishing worker).
pub fn relay_ssrc(producer: u64) -> u32 {
    relay_layer_ssrc(producer, 0)
}

/// Simulcast layers a relayed track may have: the four low bits of its relay SSRCs hold
/// the layer's index plus one (never 0, so no relay SSRC is 0).
pub const MAX_RELAYED_LAYERS: usize = 15;

/// The SSRC simulcast layer `layer` (its index in the record's `layers`, lowest first as
/// announced) of producer `producer` carries on its link; layer 0 is [`relay_ssrc`], what a
/// single-stream track carries. A layer past [`MAX_RELAYED_LAYERS`] shares the last one's.
pub fn relay_layer_ssrc(producer: u64, layer: usize) -> u32 {
    // Producer ids count up from 0 per room: 2^28 of them is more than a room ever makes.
    ((producer as u32) << 4) | (layer.min(MAX_RELAYED_LAYERS - 1) as u32 + 1)
}

/// Parses a `tracks:<worker>` field; anything that is not a list of tracks reads as none.
pub fn parse_tracks(json: &str) -> Vec<RelayedTrack> {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_round_trips_through_its_record_field_and_garbage_is_no_track() {
        let track = RelayedTrack {
            publisher: "alice".into(),
            track_id: "mic".into(),
            kind: MediaKind::Audio,
            layers: vec![],
            producer: 3,
            codec: RelayedCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                fmtp: "minptime=10;useinbandfec=1".into(),
            },
            extensions: vec![(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level".into())],
        };
        let json = serde_json::to_string(&[&track]).unwrap();
        assert!(json.contains(r#""kind":"audio""#), "{json}");
        assert_eq!(parse_tracks(&json), vec![track]);
        assert!(parse_tracks("[]").is_empty());
        assert!(parse_tracks("{}").is_empty());
        assert!(parse_tracks("not json").is_empty());
    }

    #[test]
    fn relay_ssrcs_differ_per_producer_and_are_never_zero() {
        assert_ne!(relay_ssrc(0), 0);
        assert_ne!(relay_ssrc(0), relay_ssrc(1));
        assert_eq!(relay_ssrc(5) >> 4, 5);
    }

    #[test]
    fn each_layer_of_a_track_has_its_own_relay_ssrc_and_layer_0_is_the_single_streams() {
        assert_eq!(relay_layer_ssrc(5, 0), relay_ssrc(5));
        let ssrcs: std::collections::BTreeSet<u32> =
            (0..3).map(|layer| relay_layer_ssrc(5, layer)).collect();
        assert_eq!(ssrcs.len(), 3);
        assert!(ssrcs.iter().all(|ssrc| ssrc >> 4 == 5 && ssrc & 0xf != 0));
        assert_ne!(
            relay_layer_ssrc(5, 2),
            relay_ssrc(6),
            "no overlap with the next track"
        );
    }
}
