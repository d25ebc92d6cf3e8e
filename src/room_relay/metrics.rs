//! The relay's metric families (labels bounded: no room or link ids). Registered in the
//! process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge};

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
    /// RTP packets handed to links by the publishing worker, by simulcast layer index (0 for
    /// a single stream; at most [`super::MAX_RELAYED_LAYERS`] values): what shows that a
    /// link carries only the layers its worker's subscribers need.
    layer_packets: Vec<IntCounter>,
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
            // Looked up once here, not per packet.
            layer_packets: {
                let family = counter_vec(
                    "remotemedia_relay_layer_packets_total",
                    "RTP packets relayed to other workers, by simulcast layer (0: a single stream)",
                    &["layer"],
                )?;
                LAYER_LABELS
                    .iter()
                    .map(|layer| family.with_label_values(&[layer]))
                    .collect()
            },
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

impl RelayMetrics {
    /// The relayed-packet counter of simulcast layer `layer`.
    pub fn layer_packets(&self, layer: u8) -> &IntCounter {
        let last = self.layer_packets.len().saturating_sub(1);
        &self.layer_packets[usize::from(layer).min(last)]
    }
}

/// The `layer` label's values (bounded: a relay SSRC tells at most
/// [`super::MAX_RELAYED_LAYERS`] layers apart).
const LAYER_LABELS: [&str; super::MAX_RELAYED_LAYERS] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14",
];

/// The relay's families, registered on first use.
pub fn metrics() -> &'static RelayMetrics {
    static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| defined(RelayMetrics::new()));
    &METRICS
}
