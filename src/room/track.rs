//! The tracks a participant publishes (mediasoup's *producers*): kind, ids and simulcast layers.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::names::ParticipantId;

/// Audio or video, as in SDP's media type and the room channel's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published track's id within its room, given at publish and never reused, so a track that
/// replaces another on the same publisher mid is a new track for every subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(pub u64);

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// One simulcast layer of a video track, as announced by `a=rid` / `a=simulcast`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The RTP stream id (`a=rid`), e.g. `q`, `h`, `f`.
    pub rid: String,
    /// Frame height read from the layer's last VP8 keyframe; `None` until one was seen.
    pub height: Option<u32>,
}

/// A track as its publisher sent it: what a subscriber's forwarded m-line is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub kind: MediaKind,
    /// The publisher's msid track id; empty when its SDP had none.
    pub track_id: String,
    /// The m-line of the publisher's own SDP that carries it.
    pub mid: String,
    /// Simulcast layers, lowest first; empty for a single-stream track.
    pub layers: Vec<Layer>,
}

impl PublishedTrack {
    /// The msid track id subscribers see: the publisher's, or `<kind>-<mid>` when it sent none
    /// (the contract's fallback), so `a=msid:<publisher> <this>` is always complete.
    pub fn msid_track(&self) -> String {
        if self.track_id.is_empty() {
            format!("{}-{}", self.kind, self.mid)
        } else {
            self.track_id.clone()
        }
    }
}

/// Where a producer's packets come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// A participant on this worker (or the room's own pipeline).
    Local,
    /// A participant on another worker of a room that spans workers (#16): its packets come
    /// over that worker's relay link, as `producer` of its room there.
    Remote { worker: String, producer: u64 },
}

/// A published track together with who published it: what one forwarded m-line carries.
/// Subscribers cannot tell a remote producer from a local one (same m-line, same msid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub id: ProducerId,
    pub publisher: ParticipantId,
    pub track: PublishedTrack,
    pub origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msid_track_falls_back_to_kind_and_mid() {
        let mut track = PublishedTrack {
            kind: MediaKind::Video,
            track_id: "cam-1".into(),
            mid: "2".into(),
            layers: vec![],
        };
        assert_eq!(track.msid_track(), "cam-1");
        track.track_id.clear();
        assert_eq!(track.msid_track(), "video-2");
    }
}
