//! The peer's metric families: sessions, RTP, jitter buffers, Opus, the shared UDP port and
//! data channels (DESIGN.md §7). Registered in the process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

use super::{CloseReason, UdpDropReason};
use crate::metrics::{
    counter, counter_vec, defined, gauge, histogram, histogram_vec, SETUP_BUCKETS, WORK_BUCKETS,
};

/// Why a data-channel message was dropped (the `reason` label of
/// `remotemedia_media_datachannel_dropped_total`).
pub const DATACHANNEL_DROP_REASONS: [&str; 5] = [
    // Inbound, above `--max-datachannel-message-bytes` (also a limit hit).
    "too_large",
    // Inbound, not a DataBuffer (or text that is not UTF-8, or a DataBuffer that is invalid).
    "malformed",
    // Outbound, larger than the client accepts (its SDP `max-message-size`).
    "too_large_for_client",
    // Outbound, no data channel open to send it on.
    "no_channel",
    // Outbound, the session's send queue full (also a limit hit).
    "send_queue_full",
];

/// The peer's families.
pub struct PeerMetrics {
    /// Server sessions alive on this process.
    pub sessions_active: IntGauge,
    /// Server sessions created on this process (a counter).
    pub sessions_created: IntCounter,
    /// Sessions closed, by reason (a fixed set).
    pub sessions_closed: IntCounterVec,
    /// Offer received → ICE+DTLS connected.
    pub ice_connect_seconds: Histogram,
    /// Data-channel messages dropped, by reason (a fixed set).
    pub datachannel_dropped: IntCounterVec,
    /// Audio RTP packets by direction (`in`, `out`), counted as they flow.
    pub rtp_packets: IntCounterVec,
    /// RTP bytes (headers included, all tracks, resends too) by direction, counted as they
    /// flow.
    pub rtp_bytes: IntCounterVec,
    /// What the inbound jitter buffers did with packets and slots, counted as it happens:
    /// `lost`, `late`, `duplicate`, `concealed` (PLC), `fec_recovered`, `discarded`.
    pub jitter_events: IntCounterVec,
    /// Packets NACKed by receivers of the server's RTP, by outcome: resent as `rtx`, resent
    /// on the `same_ssrc`, or `not_buffered` (no longer, or never, in the send buffer).
    pub retransmissions: IntCounterVec,
    /// Inbound jitter buffer delay at session close.
    pub jitter_buffer_delay_seconds: Histogram,
    /// Round-trip time from RTCP at session close.
    pub rtt_seconds: Histogram,
    /// Datagrams the shared UDP port dropped before the ICE mux, by reason (a fixed set).
    pub udp_dropped: IntCounterVec,
    /// Opus work per 20 ms frame, by operation (`encode`, `decode`).
    pub opus_seconds: HistogramVec,
    /// Rooms alive on this process.
    pub rooms_active: IntGauge,
    /// Participants of the rooms on this process.
    pub room_participants: IntGauge,
    /// Room pipelines running on this process (a spanning room runs its pipeline on its
    /// lead worker only).
    pub room_pipelines_running: IntGauge,
    /// RTP packets forwarded to room subscribers, by kind (`audio`, `video`): one per copy.
    pub room_forwarded_packets: IntCounterVec,
    /// Their bytes (RTP payload and header as written).
    pub room_forwarded_bytes: IntCounterVec,
    /// Server offers by result (a fixed set, [`RENEGOTIATION_RESULTS`]).
    pub room_renegotiations: IntCounterVec,
    /// Forwarded video streams paused now (last-N, `off`): negotiated, sending no RTP.
    pub room_paused_video_streams: IntGauge,
    /// Subscribers' forwarded copies that switched to another simulcast layer (at its
    /// keyframe; a subscriber's first layer is not a switch).
    pub room_layer_switches: IntCounter,
}

/// How a server offer ended (the `result` label of `remotemedia_room_renegotiations_total`).
pub const RENEGOTIATION_RESULTS: [&str; 4] = [
    // The client answered it.
    "answered",
    // An answer was refused (stale offer id, nothing pending, bad SDP); the offer stays.
    "refused", // No answer after the offer was sent twice: the session was closed.
    "timeout", // The server could not create it (a closing connection).
    "failed",
];

impl PeerMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
            sessions_active: gauge(
                "remotemedia_worker_sessions_active",
                "Server sessions (server peers with a pipeline) alive on this process",
            )?,
            sessions_created: counter(
                "remotemedia_worker_sessions_total",
                "Server sessions created on this process",
            )?,
            datachannel_dropped: counter_vec(
                "remotemedia_media_datachannel_dropped_total",
                "Data-channel messages dropped, by reason",
                &["reason"],
            )?,
            ice_connect_seconds: histogram(
                "remotemedia_media_ice_connect_seconds",
                "Time from an offer to the server peer being ICE and DTLS connected",
                SETUP_BUCKETS,
            )?,
            sessions_closed: counter_vec(
                "remotemedia_worker_sessions_closed_total",
                "Server sessions closed, by reason",
                &["reason"],
            )?,
            rtp_bytes: counter_vec(
                "remotemedia_media_rtp_bytes_total",
                "RTP bytes, headers included, all tracks, by direction",
                &["direction"],
            )?,
            rtp_packets: counter_vec(
                "remotemedia_media_rtp_packets_total",
                "Audio RTP packets, by direction",
                &["direction"],
            )?,
            jitter_events: counter_vec(
                "remotemedia_media_jitter_buffer_events_total",
                "Inbound jitter buffer outcomes",
                &["event"],
            )?,
            retransmissions: counter_vec(
                "remotemedia_media_retransmissions_total",
                "Packets NACKed by receivers of the server's RTP, by outcome",
                &["outcome"],
            )?,
            jitter_buffer_delay_seconds: histogram(
                "remotemedia_media_jitter_buffer_delay_seconds",
                "Inbound jitter buffer delay at session close",
                SETUP_BUCKETS,
            )?,
            rtt_seconds: histogram(
                "remotemedia_media_rtt_seconds",
                "Round-trip time from RTCP at session close",
                SETUP_BUCKETS,
            )?,
            udp_dropped: counter_vec(
                "remotemedia_media_udp_dropped_total",
                "Datagrams the shared ICE UDP port dropped before the mux, by reason",
                &["reason"],
            )?,
            opus_seconds: histogram_vec(
                "remotemedia_media_opus_seconds",
                "Opus work per 20 ms frame, by operation",
                WORK_BUCKETS,
                &["operation"],
            )?,
            rooms_active: gauge("remotemedia_rooms_active", "Rooms alive on this process")?,
            room_pipelines_running: gauge(
                "remotemedia_room_pipelines_running",
                "Room pipelines running on this process (a spanning room's on its lead worker)",
            )?,
            room_participants: gauge(
                "remotemedia_room_participants",
                "Participants of the rooms on this process",
            )?,
            room_forwarded_packets: counter_vec(
                "remotemedia_room_forwarded_packets_total",
                "RTP packets forwarded to room subscribers (one per copy), by kind",
                &["kind"],
            )?,
            room_forwarded_bytes: counter_vec(
                "remotemedia_room_forwarded_bytes_total",
                "RTP bytes forwarded to room subscribers, by kind",
                &["kind"],
            )?,
            room_renegotiations: counter_vec(
                "remotemedia_room_renegotiations_total",
                "Server offers to room participants, by result",
                &["result"],
            )?,
            room_paused_video_streams: gauge(
                "remotemedia_room_paused_video_streams",
                "Forwarded video streams paused now (last-N or a subscriber's off)",
            )?,
            room_layer_switches: counter(
                "remotemedia_room_layer_switches_total",
                "Forwarded video copies switched to another simulcast layer (loss, REMB, max_height)",
            )?,
        };
        metrics.initialise_labels();
        Ok(metrics)
    }

    /// Creates every series whose label values are a fixed set, at zero (see
    /// [`crate::metrics`]: a family with no series is not exported at all).
    fn initialise_labels(&self) {
        for reason in DATACHANNEL_DROP_REASONS {
            self.datachannel_dropped.with_label_values(&[reason]);
        }
        for reason in CloseReason::ALL {
            self.sessions_closed.with_label_values(&[reason.label()]);
        }
        for direction in ["in", "out"] {
            self.rtp_packets.with_label_values(&[direction]);
            self.rtp_bytes.with_label_values(&[direction]);
        }
        for event in [
            "lost",
            "late",
            "duplicate",
            "concealed",
            "fec_recovered",
            "discarded",
        ] {
            self.jitter_events.with_label_values(&[event]);
        }
        for outcome in ["rtx", "same_ssrc", "not_buffered"] {
            self.retransmissions.with_label_values(&[outcome]);
        }
        for reason in UdpDropReason::ALL {
            self.udp_dropped.with_label_values(&[reason.label()]);
        }
        for operation in ["encode", "decode"] {
            self.opus_seconds.with_label_values(&[operation]);
        }
        for kind in ["audio", "video"] {
            self.room_forwarded_packets.with_label_values(&[kind]);
            self.room_forwarded_bytes.with_label_values(&[kind]);
        }
        for result in RENEGOTIATION_RESULTS {
            self.room_renegotiations.with_label_values(&[result]);
        }
    }
}

/// The peer's families, registered on first use.
pub fn metrics() -> &'static PeerMetrics {
    static METRICS: LazyLock<PeerMetrics> = LazyLock::new(|| defined(PeerMetrics::new()));
    &METRICS
}
