//! Active speakers from RFC 6464 audio levels: who is speaking now, loudest first.
//!
//! The level comes from each forwarded audio packet's `ssrc-audio-level` header extension, so
//! nothing is decoded. The contract: participants whose level was at least −50 dBov within
//! the last 300 ms, loudest first, at most 5, sent when the list changes and at most 5 times a
//! second.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::names::ParticipantId;

/// Loudest level that still counts as silence boundary: −50 dBov (levels are −dBov, so lower
/// numbers are louder).
pub const SPEAKING_DBOV: u8 = 50;
/// How long a loud packet keeps its sender among the speakers.
pub const SPEAKING_WINDOW: Duration = Duration::from_millis(300);
/// Longest list sent.
pub const MAX_SPEAKERS: usize = 5;
/// Least time between two lists sent: at most 5 a second.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Loud packets kept per participant: 300 ms of 2.5 ms packets would be 120, 20 ms ones 15.
const MAX_KEPT: usize = 128;

/// One packet's RFC 6464 audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The level in −dBov: 0 is the loudest, 127 silence.
    pub dbov: u8,
    /// The sender's voice activity flag (informational; the contract ranks by level only).
    pub voice: bool,
}

impl AudioLevel {
    /// Reads the extension's payload (one byte: V flag and 7-bit level). `None` for an empty
    /// payload; longer payloads (two-byte form padding) use their first byte.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let byte = *payload.first()?;
        Some(Self {
            dbov: byte & 0x7f,
            voice: byte & 0x80 != 0,
        })
    }
}

/// Turns audio levels into the active speaker list.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    /// Each participant's loud packets within the window: (arrival, level), oldest first.
    loud: BTreeMap<ParticipantId, VecDeque<(Instant, u8)>>,
    /// The list last returned by [`SpeakerDetector::poll`].
    current: Vec<ParticipantId>,
    last_sent: Option<Instant>,
    /// A changed list is waiting for the rate limit.
    pending: bool,
}

impl SpeakerDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// One audio packet's level from `who`, received at `now`.
    pub fn observe(&mut self, who: &ParticipantId, level: AudioLevel, now: Instant) {
        if level.dbov > SPEAKING_DBOV {
            return;
        }
        let kept = self.loud.entry(who.clone()).or_default();
        if kept.len() == MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back((now, level.dbov));
    }

    /// Forgets a participant that left (it drops out of the next list).
    pub fn remove(&mut self, who: &ParticipantId) {
        self.loud.remove(who);
    }

    /// The new list when it changed and the rate limit allows sending it.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<ParticipantId>> {
        let list = self.speakers(now);
        if list == self.current {
            self.pending = false;
            return None;
        }
        if self.last_sent.is_some_and(|at| now < at + MIN_INTERVAL) {
            self.pending = true;
            return None;
        }
        self.pending = false;
        self.last_sent = Some(now);
        self.current = list.clone();
        Some(list)
    }

    /// When to call [`SpeakerDetector::poll`] next even without new packets: when a loud
    /// packet leaves the window, or when a held-back change may be sent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .loud
            .values()
            .filter_map(|kept| kept.front().map(|(at, _)| *at + SPEAKING_WINDOW))
            .min();
        let held = self
            .pending
            .then_some(self.last_sent.map(|at| at + MIN_INTERVAL))
            .flatten();
        match (expiry, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Speakers at `now`, loudest first (ties: the most recently loud first, then by id).
    fn speakers(&mut self, now: Instant) -> Vec<ParticipantId> {
        let mut ranked = Vec::new();
        self.loud.retain(|who, kept| {
            while kept
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= SPEAKING_WINDOW)
            {
                kept.pop_front();
            }
            let loudest = kept.iter().map(|(_, level)| *level).min();
            let latest = kept.back().map(|(at, _)| *at);
            if let (Some(loudest), Some(latest)) = (loudest, latest) {
                ranked.push((loudest, std::cmp::Reverse(latest), who.clone()));
            }
            !kept.is_empty()
        });
        ranked.sort();
        ranked
            .into_iter()
            .take(MAX_SPEAKERS)
            .map(|(_, _, who)| who)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).expect("valid test id")
    }

    fn level(dbov: u8) -> AudioLevel {
        AudioLevel { dbov, voice: true }
    }

    fn ids(list: &[&str]) -> Option<Vec<ParticipantId>> {
        Some(list.iter().map(|s| id(s)).collect())
    }

    #[test]
    fn parses_the_rfc_6464_byte() {
        assert_eq!(
            AudioLevel::parse(&[0x80 | 30]),
            Some(AudioLevel {
                dbov: 30,
                voice: true
            })
        );
        assert_eq!(
            AudioLevel::parse(&[127]),
            Some(AudioLevel {
                dbov: 127,
                voice: false
            })
        );
        assert_eq!(AudioLevel::parse(&[]), None);
    }

    #[test]
    fn only_levels_of_at_least_minus_50_dbov_count_loudest_first() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new();
        d.observe(&id("quiet"), level(51), t0);
        d.observe(&id("bob"), level(20), t0);
        d.observe(&id("alice"), level(50), t0);
        assert_eq!(d.poll(t0), ids(&["bob", "alice"]));
    }

    #[test]
    fn a_speaker_drops_out_300_ms_after_its_last_loud_packet() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new();
        d.observe(&id("bob"), level(10), t0);
        assert_eq!(d.poll(t0), ids(&["bob"]));
        assert_eq!(d.poll_timeout(), Some(t0 + SPEAKING_WINDOW));
        assert_eq!(d.poll(t0 + Duration::from_millis(299)), None);
        assert_eq!(d.poll(t0 + SPEAKING_WINDOW), ids(&[]));
        assert_eq!(d.poll_timeout(), None, "nothing left to expire");
    }

    #[test]
    fn ranking_uses_the_loudest_packet_within_the_window() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new();
        d.observe(&id("alice"), level(5), t0);
        d.observe(&id("bob"), level(20), t0 + Duration::from_millis(150));
        d.observe(&id("alice"), level(40), t0 + Duration::from_millis(200));
        assert_eq!(
            d.poll(t0 + Duration::from_millis(200)),
            ids(&["alice", "bob"])
        );
        // alice's 5 dBov packet leaves the window; her 40 is now quieter than bob's 20.
        assert_eq!(
            d.poll(t0 + Duration::from_millis(400)),
            ids(&["bob", "alice"])
        );
    }

    #[test]
    fn at_most_five_speakers() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new();
        for (i, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            d.observe(&id(name), level(i as u8), t0);
        }
        assert_eq!(d.poll(t0), ids(&["a", "b", "c", "d", "e"]));
    }

    #[test]
    fn sent_only_on_change_and_at_most_five_times_a_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = SpeakerDetector::new();
        d.observe(&id("a"), level(10), t0);
        assert_eq!(d.poll(t0), ids(&["a"]));
        // Same list: nothing to send.
        d.observe(&id("a"), level(10), t0 + ms(20));
        assert_eq!(d.poll(t0 + ms(20)), None);
        // A change 50 ms after the last list waits until 200 ms have passed.
        d.observe(&id("b"), level(5), t0 + ms(50));
        assert_eq!(d.poll(t0 + ms(50)), None);
        assert_eq!(d.poll_timeout(), Some(t0 + ms(200)));
        assert_eq!(d.poll(t0 + ms(199)), None);
        assert_eq!(d.poll(t0 + ms(200)), ids(&["b", "a"]));

        // Packets every 20 ms alternating loudness for a second: at most 5 lists.
        let mut sent = 0;
        for i in 0..50u32 {
            let now = t0 + ms(1000) + ms(20) * i;
            let (loud, quiet) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
            d.observe(&id(loud), level(1), now);
            d.observe(&id(quiet), level(30), now);
            sent += usize::from(d.poll(now).is_some());
        }
        assert!(sent <= 5, "{sent} lists in one second");
        assert!(sent >= 1);
    }

    #[test]
    fn a_participant_that_leaves_drops_out() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new();
        d.observe(&id("a"), level(10), t0);
        d.observe(&id("b"), level(10), t0);
        assert!(d.poll(t0).is_some());
        d.remove(&id("a"));
        assert_eq!(d.poll(t0 + MIN_INTERVAL), ids(&["b"]));
    }
}
