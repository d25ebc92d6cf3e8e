//! Per-session quality: the inbound jitter buffer's counters, what we sent, and the RTCP
//! figures of the peer connection, combined into the call record written at session close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::stats::StatsReportType;

use super::traffic::JitterCounted;
use crate::media::JitterStats;

/// Counters the media tasks of one session update and the session manager reads.
#[derive(Default)]
pub(crate) struct MediaCounters {
    /// Latest snapshot of the inbound jitter buffer (updated every playout tick).
    pub jitter: Mutex<JitterStats>,
    /// Opus packets written to the outbound track.
    pub packets_out: AtomicU64,
    /// What of `jitter` the process metrics already count.
    counted: JitterCounted,
}

impl MediaCounters {
    /// Keeps the inbound jitter buffer's latest snapshot and adds what grew since the last
    /// one to the process counters (they move during the call, not at its end).
    pub(crate) fn update_jitter(&self, stats: JitterStats) {
        self.counted.add(&stats);
        *self.jitter.lock() = stats;
    }

    /// One audio packet written to the client.
    pub(crate) fn packet_sent(&self) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        super::traffic::audio_packet_sent();
    }
}

/// Figures the peer connection derives from RTCP (webrtc 0.17.2 fills only these).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    /// Round-trip time from the client's receiver reports, if one arrived yet.
    pub rtt: Option<Duration>,
    /// Fraction (0..1) of our packets the client reported lost in its last report.
    pub remote_fraction_lost: f64,
    /// Our packets the client reported lost in total.
    pub remote_packets_lost: i64,
    /// RTP packets the stack received from the client (all tracks).
    pub packets_received: u64,
    /// RTP payload and header bytes received from the client (all tracks).
    pub bytes_received: u64,
    /// RTP payload and header bytes sent to the client (all tracks).
    pub bytes_sent: u64,
}

/// Quality of one session so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionStats {
    /// Inbound audio: delay, jitter, losses and how they were concealed.
    pub jitter: JitterStats,
    /// Audio packets sent to the client.
    pub packets_out: u64,
    pub rtcp: RtcpStats,
}

/// What the log line at session close says, kept for tests and diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub peer_id: String,
    pub session: u64,
    pub duration: Duration,
    pub reason: String,
    pub stats: SessionStats,
}

impl CallRecord {
    /// Writes the one call-record line (DESIGN.md §3).
    pub(crate) fn log(&self) {
        let s = &self.stats;
        tracing::info!(
            peer_id = %self.peer_id,
            session = self.session,
            duration_s = self.duration.as_secs_f64(),
            packets_in = s.jitter.received,
            packets_out = s.packets_out,
            lost = s.jitter.lost,
            late = s.jitter.late,
            concealed = s.jitter.concealed,
            fec_recovered = s.jitter.fec_recovered,
            jitter_ms = s.jitter.jitter.as_secs_f64() * 1000.0,
            jitter_buffer_ms = s.jitter.delay.as_secs_f64() * 1000.0,
            rtt_ms = s.rtcp.rtt.map(|d| d.as_secs_f64() * 1000.0),
            remote_fraction_lost = s.rtcp.remote_fraction_lost,
            reason = %self.reason,
            "call record"
        );
    }
}

/// Reads the session's counters and asks the peer connection for its RTCP figures.
pub(crate) async fn collect(pc: &RTCPeerConnection, counters: &MediaCounters) -> SessionStats {
    let mut rtcp = RtcpStats::default();
    for report in pc.get_stats().await.reports.into_values() {
        match report {
            StatsReportType::RemoteInboundRTP(remote) if remote.kind == "audio" => {
                rtcp.rtt = remote
                    .round_trip_time
                    .filter(|rtt| rtt.is_finite() && *rtt >= 0.0)
                    .map(Duration::from_secs_f64);
                rtcp.remote_fraction_lost = remote.fraction_lost;
                rtcp.remote_packets_lost = remote.packets_lost;
            }
            StatsReportType::InboundRTP(inbound) => {
                rtcp.packets_received += inbound.packets_received;
                rtcp.bytes_received += inbound.bytes_received + inbound.header_bytes_received;
            }
            StatsReportType::OutboundRTP(outbound) => {
                rtcp.bytes_sent += outbound.bytes_sent + outbound.header_bytes_sent;
            }
            _ => {}
        }
    }
    SessionStats {
        jitter: *counters.jitter.lock(),
        packets_out: counters.packets_out.load(Ordering::Relaxed),
        rtcp,
    }
}

/// Adds a closed session's end-of-call figures to the process metrics (its packets, bytes
/// and jitter-buffer events were counted as they happened, in `traffic`).
pub(crate) fn export(stats: &SessionStats) {
    let m = super::metrics::metrics();
    let jitter = &stats.jitter;
    if jitter.received > 0 {
        m.jitter_buffer_delay_seconds
            .observe(jitter.delay.as_secs_f64());
    }
    if let Some(rtt) = stats.rtcp.rtt {
        m.rtt_seconds.observe(rtt.as_secs_f64());
    }
}
