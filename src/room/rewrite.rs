//! SSRC, sequence number and timestamp rewriting for one forwarded stream (one subscriber's
//! copy of one published track), LiveKit's *DownTrack* munger.
//!
//! A subscriber sees one continuous stream per forwarded track whatever happens upstream:
//! pauses (last-N, `off`), simulcast layer switches (another source SSRC with its own sequence
//! and timestamp bases) and the publisher's own restarts. Each time the forwarded source
//! changes or resumes, the mapping is re-anchored so that the next packet sent follows the
//! last one sent: sequence number + 1, timestamp advanced by the wall time in between. So the
//! subscriber never sees a gap it would NACK or a timestamp jump its jitter buffer would
//! stretch over.

use std::time::Instant;

use webrtc::rtp::header::Header;

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it (its header rewritten). `resync`: the mapping was re-anchored at this packet
    /// (start, resume, layer switch), so codec-level counters re-anchor too (VP8 picture id).
    Forward { resync: bool },
    /// Do not send it: paused, waiting for a keyframe, another layer's, or older than the
    /// current mapping.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    /// The source SSRC this mapping applies to.
    ssrc: u32,
    /// The first source sequence number of the mapping: older packets would collide.
    start_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    ts: u32,
    at: Instant,
}

/// Rewrites one forwarded stream's RTP headers.
#[derive(Debug)]
pub struct RtpRewriter {
    /// The SSRC of the subscriber's sender for this track.
    out_ssrc: u32,
    /// The codec's RTP clock (48 kHz Opus, 90 kHz video).
    clock_rate: u32,
    /// Video starts and switches only at keyframes; audio at any packet.
    video: bool,
    mapping: Option<Mapping>,
    /// The highest packet sent.
    last: Option<Sent>,
    /// The source to switch to at its next keyframe (a requested layer switch).
    switch_to: Option<u32>,
    paused: bool,
    /// Re-anchor at the next acceptable packet (resume).
    resync: bool,
}

impl RtpRewriter {
    pub fn new(out_ssrc: u32, clock_rate: u32, video: bool) -> Self {
        Self {
            out_ssrc,
            clock_rate,
            video,
            mapping: None,
            last: None,
            switch_to: None,
            paused: false,
            resync: true,
        }
    }

    /// Stops forwarding (last-N, `off`): packets are dropped until [`RtpRewriter::resume`].
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Forwards again, from the next keyframe for video.
    pub fn resume(&mut self) {
        if self.paused {
            self.paused = false;
            self.resync = true;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Asks for a layer switch to the source `ssrc`; it takes effect at that source's next
    /// keyframe (the caller asks the publisher for one). Until then the current layer flows.
    pub fn switch_to(&mut self, ssrc: u32) {
        if self.mapping.is_some_and(|m| m.ssrc == ssrc) {
            self.switch_to = None;
        } else {
            self.switch_to = Some(ssrc);
        }
    }

    /// The source currently forwarded.
    pub fn current_source(&self) -> Option<u32> {
        self.mapping.map(|m| m.ssrc)
    }

    /// Whether forwarding waits for a keyframe (start, resume or switch): ask for one.
    pub fn wants_keyframe(&self) -> bool {
        self.video && !self.paused && (self.resync || self.switch_to.is_some())
    }

    /// Rewrites `header` in place for the subscriber, or says to drop the packet.
    /// `keyframe`: the packet starts a video keyframe (see [`super::vp8`]).
    pub fn rewrite(&mut self, header: &mut Header, keyframe: bool, now: Instant) -> Verdict {
        if self.paused {
            return Verdict::Drop;
        }
        let ssrc = header.ssrc;
        // Audio may start at any packet, video only at a keyframe; at the switch target's
        // when a switch is pending, else the current source's (any source's at the start).
        let can_start = !self.video || keyframe;
        let target = self.switch_to.or(self.mapping.map(|m| m.ssrc));
        let starts_anew = can_start
            && (self.resync || self.switch_to.is_some())
            && target.is_none_or(|t| t == ssrc);
        if starts_anew {
            self.anchor(header, now);
        }
        let Some(mapping) = self.mapping.filter(|m| m.ssrc == ssrc) else {
            return Verdict::Drop;
        };
        if !starts_anew && (self.resync || seq_before(header.sequence_number, mapping.start_seq)) {
            return Verdict::Drop;
        }
        let seq = header.sequence_number.wrapping_add(mapping.seq_offset);
        let ts = header.timestamp.wrapping_add(mapping.ts_offset);
        header.ssrc = self.out_ssrc;
        header.sequence_number = seq;
        header.timestamp = ts;
        if self.last.is_none_or(|last| seq_before(last.seq, seq)) {
            self.last = Some(Sent { seq, ts, at: now });
        }
        Verdict::Forward {
            resync: starts_anew,
        }
    }

    /// Starts a mapping at this packet so that it follows the last packet sent.
    fn anchor(&mut self, header: &Header, now: Instant) {
        let (seq, ts) = match self.last {
            None => (header.sequence_number, header.timestamp),
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)).round();
                // At least one tick: two frames never share a timestamp across a switch.
                let ticks = (ticks.min(f64::from(u32::MAX / 2)) as u32).max(1);
                (last.seq.wrapping_add(1), last.ts.wrapping_add(ticks))
            }
        };
        self.mapping = Some(Mapping {
            ssrc: header.ssrc,
            start_seq: header.sequence_number,
            seq_offset: seq.wrapping_sub(header.sequence_number),
            ts_offset: ts.wrapping_sub(header.timestamp),
        });
        self.switch_to = None;
        self.resync = false;
    }
}

/// Whether sequence number `a` comes before `b` (RFC 1982 serial arithmetic on 16 bits).
pub fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
