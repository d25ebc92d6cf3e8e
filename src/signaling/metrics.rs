//! Signaling's metric families: peers, offers, authentication, slow consumers (DESIGN.md §7).
//! Registered in the process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounterVec, IntGauge};

use crate::metrics::{counter_vec, defined, gauge, histogram, SETUP_BUCKETS};

/// The `reason` labels of `remotemedia_auth_refusals_total`.
pub const AUTH_REFUSAL_REASONS: [&str; 8] = [
    "missing",
    "expired",
    "invalid",
    "wrong_peer",
    "wrong_manifest",
    "wrong_room_manifest",
    "wrong_room",
    "room_claim_required",
];

/// Signaling's families.
pub struct SignalingMetrics {
    /// Announced client peers on this process.
    pub peers_active: IntGauge,
    /// Offers by result: `answered`, `forwarded`, or an error kind.
    pub offers: IntCounterVec,
    /// Offer received → answer ready, for offers to the server.
    pub offer_answer_seconds: Histogram,
    /// Streams and announces refused by authentication, by reason (a fixed set).
    pub auth_refusals: IntCounterVec,
    /// Signaling streams ended because their client read too slowly, by transport.
    pub slow_consumers: IntCounterVec,
}

impl SignalingMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
            peers_active: gauge(
                "remotemedia_signaling_peers_active",
                "Announced client peers connected to this process",
            )?,
            offers: counter_vec(
                "remotemedia_frontend_offers_total",
                "Offers handled, by result",
                &["result"],
            )?,
            offer_answer_seconds: histogram(
                "remotemedia_signaling_offer_answer_seconds",
                "Time from an offer to remotemedia-server to its answer",
                SETUP_BUCKETS,
            )?,
            auth_refusals: counter_vec(
                "remotemedia_auth_refusals_total",
                "Streams and announces refused by authentication, by reason",
                &["reason"],
            )?,
            slow_consumers: counter_vec(
                "remotemedia_signaling_slow_consumers_total",
                "Signaling streams ended because their client stopped reading, by transport",
                &["transport"],
            )?,
        };
        // Every fixed label shows from the start, so alerts see a zero, not an absence. Only
        // the error kinds of `offers` appear as they happen.
        for result in ["answered", "forwarded"] {
            metrics.offers.with_label_values(&[result]);
        }
        for reason in AUTH_REFUSAL_REASONS {
            metrics.auth_refusals.with_label_values(&[reason]);
        }
        for transport in ["grpc", "websocket"] {
            metrics.slow_consumers.with_label_values(&[transport]);
        }
        Ok(metrics)
    }
}

/// Signaling's families, registered on first use.
pub fn metrics() -> &'static SignalingMetrics {
    static METRICS: LazyLock<SignalingMetrics> = LazyLock::new(|| defined(SignalingMetrics::new()));
    &METRICS
}
