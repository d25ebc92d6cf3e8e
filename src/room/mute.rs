//! When a publisher stops or resumes sending a track, for the room channel's `muted` message.
//!
//! A track is muted once no packet arrived for [`MUTE_AFTER`] and unmuted by its next packet.
//! Opus DTX still sends a packet every 400 ms in silence and a disabled browser track still
//! sends silence or black frames, so a gap this long means the sender stopped (replaceTrack
//! with null, a removed camera, a stalled client).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::track::ProducerId;

/// Silence after which a track counts as muted.
pub const MUTE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Seen {
    last_packet: Instant,
    muted: bool,
}

/// Watches the room's published tracks for starts and stops.
#[derive(Debug, Default)]
pub struct MuteDetector {
    tracks: BTreeMap<ProducerId, Seen>,
}

impl MuteDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A packet of `producer` arrived. Returns `Some(false)` when it was muted (tell the
    /// room: [`super::Room::set_muted`]).
    pub fn on_packet(&mut self, producer: ProducerId, now: Instant) -> Option<bool> {
        let seen = self.tracks.entry(producer).or_insert(Seen {
            last_packet: now,
            muted: false,
        });
        seen.last_packet = now;
        if seen.muted {
            seen.muted = false;
            return Some(false);
        }
        None
    }

    /// Forgets an unpublished track.
    pub fn remove(&mut self, producer: ProducerId) {
        self.tracks.remove(&producer);
    }

    /// The tracks that went silent by `now` (each reported once per silence).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ProducerId> {
        let mut muted = Vec::new();
        for (producer, seen) in &mut self.tracks {
            if !seen.muted && now.saturating_duration_since(seen.last_packet) >= MUTE_AFTER {
                seen.muted = true;
                muted.push(*producer);
            }
        }
        muted
    }

    /// When the next track may go silent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tracks
            .values()
            .filter(|seen| !seen.muted)
            .map(|seen| seen.last_packet + MUTE_AFTER)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_mutes_once_and_the_next_packet_unmutes() {
        let t0 = Instant::now();
        let (a, b) = (ProducerId(1), ProducerId(2));
        let mut d = MuteDetector::new();
        assert_eq!(d.on_packet(a, t0), None, "a new track is not muted");
        assert_eq!(d.on_packet(b, t0 + Duration::from_secs(1)), None);
        assert_eq!(d.poll_timeout(), Some(t0 + MUTE_AFTER));
        // DTX-paced packets keep a track unmuted.
        for i in 1..=5u32 {
            d.on_packet(a, t0 + Duration::from_millis(400) * i);
            assert_eq!(
                d.handle_timeout(t0 + Duration::from_millis(400) * i),
                vec![]
            );
        }
        assert_eq!(d.handle_timeout(t0 + Duration::from_millis(2999)), vec![]);
        assert_eq!(d.handle_timeout(t0 + Duration::from_secs(3)), vec![b]);
        assert_eq!(
            d.handle_timeout(t0 + Duration::from_secs(4)),
            vec![a],
            "b is reported once; a has now been silent 2 s too"
        );
        assert_eq!(d.on_packet(b, t0 + Duration::from_secs(5)), Some(false));
        assert_eq!(d.on_packet(b, t0 + Duration::from_secs(5)), None);
        d.remove(a);
        d.remove(b);
        assert_eq!(d.poll_timeout(), None);
    }
}
