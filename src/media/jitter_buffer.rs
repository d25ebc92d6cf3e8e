//! Inbound Opus jitter buffer: reorders packets, schedules their playout a little after the
//! network's jitter, and says what to do when a packet is missing at its playout time.
//!
//! Sans-IO: the caller passes `now` to [`JitterBuffer::push`] and [`JitterBuffer::pop`] and
//! drains `pop` on its own ticker. Time inside is in microseconds relative to an anchor
//! (the arrival of the first packet), RTP time in 48 kHz samples.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{opus_packet_samples, FRAME_SAMPLES, MAX_PACKET_SAMPLES, SAMPLE_RATE};

/// Transit times remembered for the delay estimate (2 s of 20 ms packets): long enough to
/// see a jitter pattern, short enough that the delay shrinks soon after jitter stops.
const WINDOW: usize = 100;
/// The delay covers this share of recent packets; the rest arrive late and are concealed.
const PERCENTILE: f64 = 0.98;
/// Added to the measured jitter so a packet at the percentile is not right at the edge.
const MARGIN_US: i64 = 5_000;
/// Lowest delay on a clean path. Playout wakes when a frame is due (no ticker phase to
/// cover), so a path without jitter or loss needs only the margin.
const MIN_DELAY_US: i64 = MARGIN_US;
/// Lowest delay once packets go missing: one 20 ms packet, so the packet after a lost one is
/// here by the lost one's slot and its in-band FEC can rebuild it (else only PLC can).
const LOSS_MIN_DELAY_US: i64 = 20_000;
/// Played slots the loss floor holds after the last missing packet (10 s of 20 ms packets).
const LOSS_MEMORY: u64 = 500;
/// Slots a concealed slot's packet may still arrive late before it counts as lost (100 ms):
/// late packets are jitter, which the delay target covers, not loss.
const LOSS_LAG: u32 = 5;
/// The delay shrinks only when it is this much above the target (no flapping).
const SHRINK_HYSTERESIS_US: i64 = 5_000;
/// Audio dropped by one shrink step: small, so a step never leaves a gap a listener or the
/// outbound pacing would notice (a whole 20 ms packet did).
const SHRINK_STEP_SAMPLES: usize = GRANULE;
/// Packets played between two shrink steps (100 ms: the delay shrinks by 25 ms a second).
const SHRINK_EVERY: u64 = 5;
/// Concealment after the last packet before the stream counts as paused (DTX, mute, end).
const MAX_TAIL_CONCEAL_SAMPLES: usize = FRAME_SAMPLES * 5;
/// A packet this far ahead of playout means the sender restarted: the buffer resets.
const MAX_SPAN: u64 = 250;
/// Concealment lengths are whole 2.5 ms units (libopus' frame granularity).
const GRANULE: usize = 120;

/// What the decoder should produce next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JitterOutput {
    /// Decode this packet of `samples` samples and play all but its first `skip` (a delay
    /// shrink of less than a packet: see [`JitterBuffer::pop`]).
    Decode {
        payload: Bytes,
        samples: usize,
        skip: usize,
    },
    /// Produce `samples` of packet loss concealment (a lost or late packet, or a delay increase).
    Conceal { samples: usize },
    /// Rebuild a lost packet of `samples` from the in-band FEC of the packet after it.
    Fec { next_payload: Bytes, samples: usize },
}

/// Counters and the current delay, for metrics and the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Delay between the fastest recent packet's arrival and its playout.
    pub delay: Duration,
    /// Delay the buffer is adapting towards.
    pub target_delay: Duration,
    /// RFC 3550 interarrival jitter estimate.
    pub jitter: Duration,
    /// Packets pushed, duplicates and late ones included.
    pub received: u64,
    /// Sequence numbers never received (RFC 3550 cumulative loss; late arrivals count as received).
    pub lost: u64,
    /// Packets that arrived after their playout slot and were dropped.
    pub late: u64,
    /// Packets received twice.
    pub duplicate: u64,
    /// Slots played with Opus PLC because their packet was missing.
    pub concealed: u64,
    /// Slots rebuilt from the next packet's in-band FEC.
    pub fec_recovered: u64,
    /// Shrink steps: the start of a packet (or a whole short one) dropped on purpose to
    /// shrink the delay after jitter stopped.
    pub discarded: u64,
}

struct Entry {
    ts: i64,
    payload: Bytes,
    samples: usize,
}

/// See the module documentation.
pub struct JitterBuffer {
    max_delay_us: i64,
    min_delay_us: i64,
    /// Sequence number until which [`LOSS_MIN_DELAY_US`] is the floor (a packet went missing
    /// less than [`LOSS_MEMORY`] slots ago).
    loss_floor_until: Option<u64>,
    packets: BTreeMap<u64, Entry>,
    /// `None` until the first packet, and again after a pause (the next packet re-anchors).
    play: Option<Playout>,
    /// Highest extended sequence number and timestamp seen (for unwrapping).
    highest: Option<(u64, i64)>,
    first_seq: u64,
    /// Unique packets received since `first_seq` (for RFC 3550 loss).
    unique: u64,
    /// Recent transit offsets (µs, relative to the anchor), for the delay target.
    transits: VecDeque<i64>,
    /// Previous (arrival µs, ts) for the RFC 3550 jitter estimate, and the estimate in µs.
    last_transit: Option<i64>,
    jitter_us: f64,
    /// [`Self::base_us`] and [`Self::target_us`] as of the last change of `transits`: `pop`
    /// runs several times per packet and needs both, the window changes once per packet.
    base_us: i64,
    target_us: i64,
    /// Reused for the percentile (no allocation per packet).
    scratch: Vec<i64>,
    stats: JitterStats,
}

/// The schedule of a playing stream.
struct Playout {
    anchor: Instant,
    anchor_ts: i64,
    /// Next sequence number to play and its expected timestamp.
    next_seq: u64,
    next_ts: i64,
    /// Playout time of a timestamp = anchor + (ts - anchor_ts) + offset.
    offset_us: i64,
    /// Concealment owed to the output after the delay grew.
    stretch_samples: usize,
    last_samples: usize,
    tail_concealed: usize,
    /// Which of the 128 sequence numbers before `next_seq` were received (bit 0 = next_seq - 1).
    played: u128,
    since_shrink: u64,
    /// Slots played since this schedule started (the loss check looks [`LOSS_LAG`] back).
    slots: u64,
}

impl JitterBuffer {
    /// A buffer whose delay never exceeds `max_delay` (`--jitter-buffer-ms`).
    pub fn new(max_delay: Duration) -> Self {
        let max_delay_us = i64::try_from(max_delay.as_micros()).unwrap_or(i64::MAX);
        Self {
            max_delay_us,
            min_delay_us: MIN_DELAY_US.min(max_delay_us),
            loss_floor_until: None,
            packets: BTreeMap::new(),
            play: None,
            highest: None,
            first_seq: 0,
            unique: 0,
            transits: VecDeque::with_capacity(WINDOW),
            last_transit: None,
            jitter_us: 0.0,
            base_us: 0,
            target_us: MIN_DELAY_US.min(max_delay_us),
            scratch: Vec::with_capacity(WINDOW),
            stats: JitterStats::default(),
        }
    }

    /// Current counters and delays.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        if let Some((highest, _)) = self.highest {
            stats.lost = (highest + 1 - self.first_seq).saturating_sub(self.unique);
        }
        stats.jitter = Duration::from_micros(self.jitter_us as u64);
        stats.target_delay = us(self.target_us());
        if let Some(play) = &self.play {
            stats.delay = us(play.offset_us - self.base_us());
        }
        stats
    }

    /// Takes one RTP packet's sequence number, timestamp and Opus payload, arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, rtp_timestamp: u32, payload: Bytes) {
        self.stats.received += 1;
        let (seq, ts) = self.extend(seq, rtp_timestamp);
        let samples = opus_packet_samples(&payload).unwrap_or(FRAME_SAMPLES);
        let Some(play) = &self.play else {
            self.start(now, seq, ts);
            return self.store(seq, ts, payload, samples);
        };
        let next_seq = play.next_seq;
        if seq < next_seq {
            let back = next_seq - seq - 1;
            if back < 128 && play.played & (1u128 << back) != 0 {
                self.stats.duplicate += 1;
                return;
            }
            // Late packets are the jitter the delay must learn to cover. Marked as arrived,
            // so their slot does not count as a loss (see `Playout::advance`).
            if let Some(play) = self.play.as_mut() {
                if back < 128 {
                    play.played |= 1u128 << back;
                }
            }
            self.stats.late += 1;
            self.unique += 1;
            return self.measure(now, ts);
        }
        if seq >= next_seq + MAX_SPAN {
            self.packets.clear();
            self.start(now, seq, ts);
        } else if !self.packets.contains_key(&seq) {
            self.measure(now, ts);
        }
        self.store(seq, ts, payload, samples);
    }

    /// When [`Self::pop`] will next have something to play (in the past when it has now);
    /// `None` while no stream is playing (the next push starts one). Lets the caller sleep
    /// until exactly then instead of polling on a ticker whose phase adds up to a frame of
    /// delay.
    pub fn next_due(&self) -> Option<Instant> {
        let play = self.play.as_ref()?;
        if growth_samples(self.base_us + self.target_us, play.offset_us) > 0
            || play.stretch_samples > 0
        {
            return Some(play.anchor);
        }
        let slot_ts = match self.packets.first_key_value() {
            Some((&seq, entry)) if seq == play.next_seq => entry.ts,
            _ => play.next_ts,
        };
        let due_us = ts_us(slot_ts - play.anchor_ts) + play.offset_us;
        Some(play.anchor + us(due_us))
    }

    /// The next thing to play if its time has come at `now`; call until `None` on every tick.
    pub fn pop(&mut self, now: Instant) -> Option<JitterOutput> {
        let target = self.base_us() + self.target_us();
        let play = self.play.as_mut()?;
        let grow = growth_samples(target, play.offset_us);
        if grow > 0 {
            // Delay grows at once: the gap it opens is filled with concealment.
            play.offset_us += ts_us(grow as i64);
            play.stretch_samples += grow;
        }
        if play.stretch_samples > 0 {
            let samples = play.stretch_samples.min(MAX_PACKET_SAMPLES);
            play.stretch_samples -= samples;
            return Some(JitterOutput::Conceal { samples });
        }
        let now_us = micros(now.saturating_duration_since(play.anchor));
        let next = self.packets.first_key_value().map(|(&s, e)| (s, e.ts));
        let slot_ts = match next {
            Some((seq, ts)) if seq == play.next_seq => ts,
            _ => play.next_ts,
        };
        if now_us < ts_us(slot_ts - play.anchor_ts) + play.offset_us {
            return None;
        }
        match next {
            Some((seq, _)) if seq == play.next_seq => {
                let entry = self.packets.remove(&seq)?;
                // Shrinking drops the start of this packet, a step at a time (the whole packet
                // only when it is that short).
                let excess = play.offset_us - target;
                let skip = if excess >= SHRINK_HYSTERESIS_US && play.since_shrink >= SHRINK_EVERY {
                    SHRINK_STEP_SAMPLES.min(entry.samples)
                } else {
                    0
                };
                let lost = play.advance(seq, entry.ts, entry.samples, true);
                if lost {
                    self.note_loss(seq);
                }
                let play = self.play.as_mut()?;
                if skip > 0 {
                    play.since_shrink = 0;
                    play.offset_us -= ts_us(skip as i64);
                    self.stats.discarded += 1;
                    if skip == entry.samples {
                        return self.pop(now);
                    }
                }
                Some(JitterOutput::Decode {
                    payload: entry.payload,
                    samples: entry.samples,
                    skip,
                })
            }
            Some((seq, ts)) => {
                // `next_seq` is missing but a later packet is here: split the gap evenly.
                let missing = seq - play.next_seq;
                let span = usize::try_from(ts - play.next_ts).unwrap_or(0) / missing as usize;
                let samples = clamp_samples(if span == 0 { play.last_samples } else { span });
                let lost_seq = play.next_seq;
                if play.advance(lost_seq, play.next_ts, samples, false) {
                    self.note_loss(lost_seq);
                }
                if missing == 1 {
                    self.stats.fec_recovered += 1;
                    let next_payload = self.packets.get(&seq)?.payload.clone();
                    return Some(JitterOutput::Fec {
                        next_payload,
                        samples,
                    });
                }
                self.stats.concealed += 1;
                Some(JitterOutput::Conceal { samples })
            }
            None if play.tail_concealed >= MAX_TAIL_CONCEAL_SAMPLES => {
                // The sender paused or stopped: wait for the next packet to re-anchor.
                self.stats.delay = us(play.offset_us - self.base_us());
                self.play = None;
                None
            }
            None => {
                let samples = play.last_samples;
                play.tail_concealed += samples;
                let lost_seq = play.next_seq;
                if play.advance(lost_seq, play.next_ts, samples, false) {
                    self.note_loss(lost_seq);
                }
                self.stats.concealed += 1;
                Some(JitterOutput::Conceal { samples })
            }
        }
    }

    /// A packet was missing at its slot: the floor rises to one packet for a while so the
    /// next loss can be rebuilt from FEC.
    fn note_loss(&mut self, seq: u64) {
        let until = seq + LOSS_MEMORY;
        if self.loss_floor_until.is_some_and(|u| u >= until) {
            return;
        }
        let raised = self.loss_floor_until.is_none_or(|u| u <= seq);
        self.loss_floor_until = Some(until);
        if raised {
            self.update_target();
        }
    }

    /// The delay's lower bound now: [`LOSS_MIN_DELAY_US`] while a recent loss is remembered,
    /// else [`MIN_DELAY_US`].
    fn floor_us(&self) -> i64 {
        let seq = match (&self.play, self.highest) {
            (Some(play), _) => play.next_seq,
            (None, Some((highest, _))) => highest,
            (None, None) => return self.min_delay_us,
        };
        match self.loss_floor_until {
            Some(until) if seq < until => LOSS_MIN_DELAY_US.min(self.max_delay_us),
            _ => self.min_delay_us,
        }
    }

    fn start(&mut self, now: Instant, seq: u64, ts: i64) {
        let floor = self.floor_us();
        let offset_us = self.play.as_ref().map_or(floor, |p| {
            p.offset_us - self.transits.iter().min().copied().unwrap_or(0)
        });
        self.transits.clear();
        self.transits.push_back(0);
        self.last_transit = None;
        self.update_target();
        self.play = Some(Playout {
            anchor: now,
            anchor_ts: ts,
            next_seq: seq,
            next_ts: ts,
            offset_us: offset_us.clamp(floor, self.max_delay_us),
            stretch_samples: 0,
            last_samples: FRAME_SAMPLES,
            tail_concealed: 0,
            played: 0,
            since_shrink: 0,
            slots: 0,
        });
    }

    fn store(&mut self, seq: u64, ts: i64, payload: Bytes, samples: usize) {
        if self.packets.contains_key(&seq) {
            self.stats.duplicate += 1;
            return;
        }
        self.unique += 1;
        self.packets.insert(
            seq,
            Entry {
                ts,
                payload,
                samples,
            },
        );
    }

    /// Records the packet's transit time for the delay target and the RFC 3550 jitter.
    fn measure(&mut self, now: Instant, ts: i64) {
        let Some(play) = &self.play else { return };
        let transit =
            micros(now.saturating_duration_since(play.anchor)) - ts_us(ts - play.anchor_ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
        if self.transits.len() == WINDOW {
            self.transits.pop_front();
        }
        self.transits.push_back(transit);
        self.update_target();
    }

    /// The fastest recent transit: playout offsets are relative to it.
    fn base_us(&self) -> i64 {
        self.base_us
    }

    /// Delay that covers [`PERCENTILE`] of recent packets, within the configured bounds.
    fn target_us(&self) -> i64 {
        self.target_us
    }

    /// Recomputes the base and the target after `transits` changed: a partial selection
    /// (O(n)) instead of a sort.
    fn update_target(&mut self) {
        let base = self.transits.iter().min().copied().unwrap_or(0);
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().map(|t| t - base));
        let index = ((self.scratch.len().saturating_sub(1)) as f64 * PERCENTILE).round() as usize;
        let jitter = if index < self.scratch.len() {
            *self.scratch.select_nth_unstable(index).1
        } else {
            0
        };
        self.base_us = base;
        self.target_us = (jitter + MARGIN_US).clamp(self.floor_us(), self.max_delay_us);
    }

    /// 16-bit sequence and 32-bit timestamp to monotonic 64-bit ones, relative to the highest seen.
    fn extend(&mut self, seq: u16, ts: u32) -> (u64, i64) {
        let Some((high_seq, high_ts)) = self.highest else {
            // Start high so sequence numbers just below the first one still fit.
            let ext = (1u64 << 32) + u64::from(seq);
            self.highest = Some((ext, i64::from(ts)));
            self.first_seq = ext;
            return (ext, i64::from(ts));
        };
        let ds = i64::from(seq.wrapping_sub(high_seq as u16) as i16);
        let dt = i64::from(ts.wrapping_sub(high_ts as u32) as i32);
        let ext = high_seq.saturating_add_signed(ds);
        let ext_ts = high_ts + dt;
        if ds > 0 {
            self.highest = Some((ext, ext_ts));
        }
        (ext, ext_ts)
    }
}

impl Playout {
    /// Moves past slot `seq`; true when the slot [`LOSS_LAG`] slots back never got its
    /// packet, not even late: that packet was lost (late arrivals are jitter, not loss).
    fn advance(&mut self, seq: u64, ts: i64, samples: usize, received: bool) -> bool {
        self.next_seq = seq + 1;
        self.next_ts = ts + samples as i64;
        self.played = (self.played << 1) | u128::from(received);
        self.slots += 1;
        let lost = self.slots > u64::from(LOSS_LAG) && (self.played >> LOSS_LAG) & 1 == 0;
        if received {
            self.last_samples = samples;
            self.tail_concealed = 0;
            self.since_shrink += 1;
        }
        lost
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn us(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

/// RTP time (48 kHz samples) to microseconds.
fn ts_us(samples: i64) -> i64 {
    samples * 1_000_000 / i64::from(SAMPLE_RATE)
}

/// Concealment that grows the playout offset towards `target_us`, in whole granules: a
/// target less than a granule above the offset is no growth (and nothing due now, so the
/// playout does not spin on it).
fn growth_samples(target_us: i64, offset_us: i64) -> usize {
    usize::try_from(target_us - offset_us).map_or(0, |us| round_down(us * 48 / 1000))
}

fn round_down(samples: usize) -> usize {
    samples / GRANULE * GRANULE
}

fn clamp_samples(samples: usize) -> usize {
    round_down(samples).clamp(GRANULE, MAX_PACKET_SAMPLES)
}

#[cfg(test)]
#[path = "jitter_buffer_tests.rs"]
mod tests;
