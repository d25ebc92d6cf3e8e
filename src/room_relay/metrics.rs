//! The relay's metric families (labels bounded: no room or link ids). Registered in the
//! process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge};

use crate::metrics::{counter_vec, defined, gauge};

/// Why a relay datagram was dropped (the `reason` label of
/// `remotemedia_relay_packets_dropped_total`).
pub const DROP_REASONS: [&str; 6] = [
    // Shorter than a link id and an RTP/RTCP header.
    "malformed",
    // A link id no link here has.
    "unknown_link",
    // From an address that is not the link's worker.
    "unknown_source",
    // The SRTP/SRTCP authentication tag does not verify (or a replay).
    "auth",
    // The link's receiver is behind: its queue is full.
    "queue_full",
    // Sending side: the link's sending task is behind (its queue is full).
    "send_queue_full",
];

/// The relay's families.
pub struct RelayMetrics {
    /// Relay links open on this worker (inbound).
    pub links_active: IntGauge,
    /// Relayed packets by direction (`in`, `out`).
    pub packets: IntCounterVec,
    /// Relayed bytes (SRTP, link id included) by direction.
    pub bytes: IntCounterVec,
    /// Relay datagrams dropped, by reason ([`DROP_REASONS`]).
    pub dropped: IntCounterVec,
}

impl RelayMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
            links_active: gauge(
                "remotemedia_relay_links_active",
                "Relay links from other workers open on this worker",
            )?,
            packets: counter_vec(
                "remotemedia_relay_packets_total",
                "RTP and RTCP packets relayed between workers, by direction",
                &["direction"],
            )?,
            bytes: counter_vec(
                "remotemedia_relay_bytes_total",
                "Bytes of relay datagrams between workers, by direction",
                &["direction"],
            )?,
            dropped: counter_vec(
                "remotemedia_relay_packets_dropped_total",
                "Relay datagrams dropped, by reason",
                &["reason"],
            )?,
        };
        for direction in ["in", "out"] {
            metrics.packets.with_label_values(&[direction]);
            metrics.bytes.with_label_values(&[direction]);
        }
        for reason in DROP_REASONS {
            metrics.dropped.with_label_values(&[reason]);
        }
        Ok(metrics)
    }
}

/// The relay's families, registered on first use.
pub fn metrics() -> &'static RelayMetrics {
    static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| defined(RelayMetrics::new()));
    &METRICS
}
