//! The relay's metric families (labels bounded: no room or link ids). Registered in the
//! process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::metrics::{counter, counter_vec, defined, gauge, gauge_vec, histogram};

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

/// Which end found a link silent (the `side` label of
/// `remotemedia_relay_links_silent_total`): `receiving` heard no RTP or RTCP for 2 s and
/// opened the link again, `sending` heard no RTCP back for 5 s and closed it.
pub const SILENT_SIDES: [&str; 2] = ["receiving", "sending"];

/// The `workers` label of `remotemedia_rooms_by_hosting_workers`.
pub const HOSTING_WORKERS: [&str; 3] = ["1", "2", "3+"];

/// The relay's families.
pub struct RelayMetrics {
    /// Relay links open on this worker (inbound).
    pub links_active: IntGauge,
    /// Back channels open on this worker: of the links it sends on (inbound RTCP).
    pub back_channels_active: IntGauge,
    /// Links this worker sends on (outbound).
    pub links_sending: IntGauge,
    /// Relayed packets by direction (`in`, `out`).
    pub packets: IntCounterVec,
    /// Relayed bytes (SRTP, link id included) by direction.
    pub bytes: IntCounterVec,
    /// Relay datagrams dropped, by reason ([`DROP_REASONS`]).
    pub dropped: IntCounterVec,
    /// Round trips of the relay (A's sender report to B's receiver report, less B's hold).
    pub rtt: Histogram,
    /// The fraction of a relayed track's packets lost between two receiver reports.
    pub loss: Histogram,
    /// Interarrival jitter of relayed tracks at the receiving worker.
    pub jitter: Histogram,
    /// Links found silent, by which end found it ([`SILENT_SIDES`]).
    pub silent: IntCounterVec,
    /// Times a receiving worker dropped another worker's tracks from a room (its link went
    /// silent and could not be opened again).
    pub workers_lost: IntCounter,
    /// Rooms on this worker by how many workers host them ([`HOSTING_WORKERS`]), as the
    /// rooms' records say (re-read every 2 s; counted on workers with a relay socket).
    pub rooms_by_workers: IntGaugeVec,
}

impl RelayMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
            links_active: gauge(
                "remotemedia_relay_links_active",
                "Relay links from other workers open on this worker",
            )?,
            back_channels_active: gauge(
                "remotemedia_relay_back_channels_active",
                "Back channels (RTCP from the receiving worker) of the relay links this worker sends on",
            )?,
            links_sending: gauge(
                "remotemedia_relay_links_sending",
                "Relay links this worker sends tracks on to other workers",
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
            rtt: histogram(
                "remotemedia_relay_rtt_seconds",
                "Round-trip time of relay links between workers (RTCP LSR/DLSR)",
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            )?,
            loss: histogram(
                "remotemedia_relay_loss_ratio",
                "Fraction of a relayed track's packets lost between two receiver reports",
                &[0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            )?,
            jitter: histogram(
                "remotemedia_relay_jitter_seconds",
                "Interarrival jitter of relayed tracks at the receiving worker",
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1],
            )?,
            silent: counter_vec(
                "remotemedia_relay_links_silent_total",
                "Relay links found silent, by the end that found it",
                &["side"],
            )?,
            workers_lost: counter(
                "remotemedia_relay_workers_lost_total",
                "Times a room here dropped another worker's relayed tracks (silent, unreachable)",
            )?,
            rooms_by_workers: gauge_vec(
                "remotemedia_rooms_by_hosting_workers",
                "Rooms with participants here, by the number of workers hosting them",
                &["workers"],
            )?,
        };
        for side in SILENT_SIDES {
            metrics.silent.with_label_values(&[side]);
        }
        for workers in HOSTING_WORKERS {
            metrics.rooms_by_workers.with_label_values(&[workers]);
        }
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
