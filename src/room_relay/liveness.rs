//! A relay link's reports and liveness, without sockets or clocks of its own (#16,
//! "Failure" and "Observability").
//!
//! The publishing worker A sends an RTCP sender report for each track a link carries every
//! [`REPORT_INTERVAL`], or one empty receiver report when it carries none, so a link is
//! never quiet while both ends live ([`SendReports`]). The receiving worker B answers each
//! with a receiver report: fraction lost, cumulative loss, jitter and LSR/DLSR per track
//! ([`ReceiveReports`]), from which A computes the relay's round trip. Either end that hears
//! nothing for long gives up on the link: B after [`RECEIVE_SILENCE`] (it opens the link
//! again, and drops the other worker's tracks if that fails), A after [`SEND_SILENCE`] (it
//! closes the link and stops copying tracks onto it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use webrtc::rtcp::packet::Packet as RtcpPacket;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::reception_report::ReceptionReport;
use webrtc::rtcp::sender_report::SenderReport;

/// How often A reports on each link.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(500);
/// B's limit: a link that brought no packet (RTP or RTCP) for this long is opened again.
pub const RECEIVE_SILENCE: Duration = Duration::from_secs(2);
/// A's limit: a link whose back channel brought nothing for this long is closed.
pub const SEND_SILENCE: Duration = Duration::from_secs(5);
/// The sender SSRC of a link's own RTCP (an empty report, B's receiver reports): no track
/// has it, since relay SSRCs end in the nibble 1 ([`super::relay_ssrc`]).
pub const LINK_SSRC: u32 = 0x10;
/// A track with no packet for this long gets no more sender reports (it left the link).
const SENDER_IDLE: Duration = Duration::from_secs(10);
/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `at` as a 64-bit NTP timestamp (RFC 3550 §4).
pub fn ntp_time(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp (LSR and the like: 1/65536 s units).
fn compact(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// What one receiver report block says about a relayed track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkQuality {
    /// The relay SSRC the block is about.
    pub ssrc: u32,
    /// A to B and back, without B's hold time; `None` until B has had a sender report.
    pub rtt: Option<Duration>,
    /// The fraction of the track's packets lost since B's previous report.
    pub fraction_lost: f64,
    /// Interarrival jitter at B.
    pub jitter: Duration,
}

/// One track's counts on the sending side.
struct Sent {
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the latest packet (the report's; a little behind real time,
    /// which nothing here relies on).
    rtp_time: u32,
    last: Instant,
}

/// The sending side's reports on one link (worker A).
#[derive(Default)]
pub struct SendReports {
    tracks: BTreeMap<u32, Sent>,
}

impl SendReports {
    /// Counts one RTP packet sent on the link.
    pub fn on_rtp(&mut self, ssrc: u32, rtp_time: u32, payload_len: usize, now: Instant) {
        let sent = self.tracks.entry(ssrc).or_insert(Sent {
            packets: 0,
            octets: 0,
            rtp_time,
            last: now,
        });
        sent.packets = sent.packets.wrapping_add(1);
        sent.octets = sent.octets.wrapping_add(payload_len as u32);
        sent.rtp_time = rtp_time;
        sent.last = now;
    }

    /// The report due now: a sender report per track that sent lately, or an empty
    /// receiver report from [`LINK_SSRC`] when none did (the link's heartbeat either way).
    pub fn report(&mut self, now: Instant, ntp: u64) -> Vec<Box<dyn RtcpPacket + Send + Sync>> {
        self.tracks
            .retain(|_, sent| now.saturating_duration_since(sent.last) < SENDER_IDLE);
        let mut packets: Vec<Box<dyn RtcpPacket + Send + Sync>> = self
            .tracks
            .iter()
            .map(|(&ssrc, sent)| {
                Box::new(SenderReport {
                    ssrc,
                    ntp_time: ntp,
                    rtp_time: sent.rtp_time,
                    packet_count: sent.packets,
                    octet_count: sent.octets,
                    ..SenderReport::default()
                }) as Box<dyn RtcpPacket + Send + Sync>
            })
            .collect();
        if packets.is_empty() {
            packets.push(Box::new(ReceiverReport {
                ssrc: LINK_SSRC,
                ..ReceiverReport::default()
            }));
        }
        packets
    }

    /// What B's report blocks say, read at A's NTP time `ntp`.
    pub fn on_receiver_report(reports: &[ReceptionReport], ntp: u64) -> Vec<LinkQuality> {
        reports
            .iter()
            .map(|block| LinkQuality {
                ssrc: block.ssrc,
                rtt: round_trip(compact(ntp), block.last_sender_report, block.delay),
                fraction_lost: f64::from(block.fraction_lost) / 256.0,
                // In 1/65536 s, not RTP units: see `ReceiveReports::report`.
                jitter: Duration::from_secs_f64(f64::from(block.jitter) / 65_536.0),
            })
            .collect()
    }
}

/// RFC 3550 §6.4.1: A's time now minus LSR minus DLSR, all in 1/65536 s; `None` without an
/// LSR, or when the clock arithmetic says it would be negative.
fn round_trip(now: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = now.wrapping_sub(lsr).wrapping_sub(dlsr);
    // More than half the range means negative (B's delay rounded up past A's clock).
    (rtt < 1 << 31).then(|| Duration::from_secs_f64(f64::from(rtt) / 65_536.0))
}

/// One track's reception on the receiving side (RFC 3550 A.1, A.3, A.8).
struct Received {
    clock_rate: u32,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter in RTP units.
    jitter: f64,
    /// The previous packet's arrival minus its RTP time, in RTP units.
    transit: Option<f64>,
    /// The latest sender report's compact NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
}

impl Received {
    fn extended_max(&self) -> u32 {
        self.cycles << 16 | u32::from(self.max_seq)
    }

    fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(u32::from(self.base_seq))
            .wrapping_add(1)
    }
}

/// The receiving side's reports on one link (worker B).
pub struct ReceiveReports {
    tracks: BTreeMap<u32, Received>,
    /// Arrival times are counted from here.
    epoch: Instant,
}

impl ReceiveReports {
    pub fn new(now: Instant) -> Self {
        Self {
            tracks: BTreeMap::new(),
            epoch: now,
        }
    }

    /// Counts one relayed RTP packet of a track with `clock_rate`.
    pub fn on_rtp(
        &mut self,
        ssrc: u32,
        sequence: u16,
        rtp_time: u32,
        clock_rate: u32,
        now: Instant,
    ) {
        let clock_rate = clock_rate.max(1);
        let arrival =
            now.saturating_duration_since(self.epoch).as_secs_f64() * f64::from(clock_rate);
        let transit = arrival - f64::from(rtp_time);
        let track = self.tracks.entry(ssrc).or_insert(Received {
            clock_rate,
            base_seq: sequence,
            max_seq: sequence,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: 0.0,
            transit: None,
            last_sr: None,
        });
        let delta = sequence.wrapping_sub(track.max_seq);
        if delta != 0 && delta < 0x8000 {
            if sequence < track.max_seq {
                track.cycles = track.cycles.wrapping_add(1);
            }
            track.max_seq = sequence;
        }
        track.received = track.received.wrapping_add(1);
        if let Some(previous) = track.transit {
            let d = (transit - previous).abs();
            // A jump of a second or more is a new stream timing (a publisher that came
            // back), not jitter.
            if d < f64::from(track.clock_rate) {
                track.jitter += (d - track.jitter) / 16.0;
            }
        }
        track.transit = Some(transit);
        track.clock_rate = clock_rate;
    }

    /// Notes a sender report about `ssrc` (for LSR/DLSR).
    pub fn on_sender_report(&mut self, ssrc: u32, ntp: u64, now: Instant) {
        if let Some(track) = self.tracks.get_mut(&ssrc) {
            track.last_sr = Some((compact(ntp), now));
        }
    }

    /// Forgets the tracks `keep` says no longer come on the link.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.tracks.retain(|&ssrc, _| keep(ssrc));
    }

    /// The receiver report due now, from [`LINK_SSRC`]: one block per track. Jitter is
    /// given in 1/65536 s (the relay's own unit, so A needs no clock rate).
    pub fn report(&mut self, now: Instant) -> ReceiverReport {
        let reports = self
            .tracks
            .iter_mut()
            .take(31)
            .map(|(&ssrc, track)| {
                let expected = track.expected();
                let expected_interval = expected.wrapping_sub(track.expected_prior);
                let received_interval = track.received.wrapping_sub(track.received_prior);
                track.expected_prior = expected;
                track.received_prior = track.received;
                let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
                let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
                    0
                } else {
                    ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
                };
                let total_lost =
                    (i64::from(expected) - i64::from(track.received)).clamp(0, 0x7f_ffff) as u32;
                let (last_sender_report, delay) = match track.last_sr {
                    Some((lsr, at)) => {
                        let held = now.saturating_duration_since(at).as_secs_f64();
                        (lsr, (held * 65_536.0) as u32)
                    }
                    None => (0, 0),
                };
                let jitter_seconds = track.jitter / f64::from(track.clock_rate);
                ReceptionReport {
                    ssrc,
                    fraction_lost,
                    total_lost,
                    last_sequence_number: track.extended_max(),
                    jitter: (jitter_seconds * 65_536.0) as u32,
                    last_sender_report,
                    delay,
                }
            })
            .collect();
        ReceiverReport {
            ssrc: LINK_SSRC,
            reports,
            ..ReceiverReport::default()
        }
    }
}

/// Marshals a compound RTCP packet (none: an empty one, never sent).
pub fn marshal(packets: &[Box<dyn RtcpPacket + Send + Sync>]) -> Bytes {
    webrtc::rtcp::packet::marshal(packets).unwrap_or_default()
}

/// When a link last brought anything, and whether it has been silent for too long.
#[derive(Debug, Clone, Copy)]
pub struct Silence {
    last: Instant,
    limit: Duration,
}

impl Silence {
    /// A link that was just heard from (opened), silent after `limit`.
    pub fn new(now: Instant, limit: Duration) -> Self {
        Self { last: now, limit }
    }

    pub fn heard(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// Whether nothing came for `limit` or more.
    pub fn is_silent(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.limit
    }

    /// When the link turns silent if nothing comes meanwhile.
    pub fn deadline(&self) -> Instant {
        self.last + self.limit
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod tests;
