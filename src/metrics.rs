//! Prometheus metrics (DESIGN.md §7): `remotemedia_<area>_<what>_<unit>`, base units,
//! counters end in `_total`, labels bounded (never a peer id).
//!
//! One registry per process: the families are process-wide facts, and a global keeps the
//! media hot path free of handles threaded through every call.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 1 ms to 10 s (signaling, ICE connect).
const SETUP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets from 10 µs to 100 ms (codec and pipeline work per frame).
const WORK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.1,
];

/// Every metric family of the process.
pub struct Metrics {
    pub registry: Registry,
    /// Announced client peers on this process.
    pub peers_active: IntGauge,
    /// Server sessions alive on this process.
    pub sessions_active: IntGauge,
    /// Offers by result: `answered`, `forwarded`, or an error kind.
    pub offers: IntCounterVec,
    /// Offer received → answer ready, for offers to the server.
    pub offer_answer_seconds: Histogram,
    /// Offer received → ICE+DTLS connected.
    pub ice_connect_seconds: Histogram,
    /// Sessions closed, by reason (a fixed set).
    pub sessions_closed: IntCounterVec,
    /// Audio RTP packets of closed sessions by direction (`in`, `out`).
    pub rtp_packets: IntCounterVec,
    /// What the inbound jitter buffers of closed sessions did with packets and slots:
    /// `lost`, `late`, `duplicate`, `concealed` (PLC), `fec_recovered`, `discarded`.
    pub jitter_events: IntCounterVec,
    /// Inbound jitter buffer delay at session close.
    pub jitter_buffer_delay_seconds: Histogram,
    /// Round-trip time from RTCP at session close.
    pub rtt_seconds: Histogram,
    /// Opus work per 20 ms frame, by operation (`encode`, `decode`).
    pub opus_seconds: HistogramVec,
    /// Time a pipeline node takes per input, by node type (bounded: the registry's types).
    pub pipeline_node_seconds: HistogramVec,
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let peers_active = IntGauge::new(
            "remotemedia_signaling_peers_active",
            "Announced client peers connected to this process",
        )?;
        let sessions_active = IntGauge::new(
            "remotemedia_worker_sessions_active",
            "Server sessions (server peers with a pipeline) alive on this process",
        )?;
        let offers = IntCounterVec::new(
            Opts::new(
                "remotemedia_signaling_offers_total",
                "Offers handled, by result",
            ),
            &["result"],
        )?;
        let offer_answer_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "remotemedia_signaling_offer_answer_seconds",
                "Time from an offer to remotemedia-server to its answer",
            )
            .buckets(SETUP_BUCKETS.to_vec()),
        )?;
        let ice_connect_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "remotemedia_media_ice_connect_seconds",
                "Time from an offer to the server peer being ICE and DTLS connected",
            )
            .buckets(SETUP_BUCKETS.to_vec()),
        )?;
        let sessions_closed = IntCounterVec::new(
            Opts::new(
                "remotemedia_worker_sessions_closed_total",
                "Server sessions closed, by reason",
            ),
            &["reason"],
        )?;
        let rtp_packets = IntCounterVec::new(
            Opts::new(
                "remotemedia_media_rtp_packets_total",
                "Audio RTP packets of closed sessions, by direction",
            ),
            &["direction"],
        )?;
        let jitter_events = IntCounterVec::new(
            Opts::new(
                "remotemedia_media_jitter_buffer_events_total",
                "Inbound jitter buffer outcomes of closed sessions",
            ),
            &["event"],
        )?;
        let jitter_buffer_delay_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "remotemedia_media_jitter_buffer_delay_seconds",
                "Inbound jitter buffer delay at session close",
            )
            .buckets(SETUP_BUCKETS.to_vec()),
        )?;
        let rtt_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "remotemedia_media_rtt_seconds",
                "Round-trip time from RTCP at session close",
            )
            .buckets(SETUP_BUCKETS.to_vec()),
        )?;
        let opus_seconds = HistogramVec::new(
            HistogramOpts::new(
                "remotemedia_media_opus_seconds",
                "Opus work per 20 ms frame, by operation",
            )
            .buckets(WORK_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let pipeline_node_seconds = HistogramVec::new(
            HistogramOpts::new(
                "remotemedia_pipeline_node_seconds",
                "Time a pipeline node takes per input, by node type",
            )
            .buckets(WORK_BUCKETS.to_vec()),
            &["node_type"],
        )?;
        registry.register(Box::new(pipeline_node_seconds.clone()))?;
        registry.register(Box::new(peers_active.clone()))?;
        registry.register(Box::new(sessions_active.clone()))?;
        registry.register(Box::new(offers.clone()))?;
        registry.register(Box::new(offer_answer_seconds.clone()))?;
        registry.register(Box::new(ice_connect_seconds.clone()))?;
        registry.register(Box::new(sessions_closed.clone()))?;
        registry.register(Box::new(rtp_packets.clone()))?;
        registry.register(Box::new(jitter_events.clone()))?;
        registry.register(Box::new(jitter_buffer_delay_seconds.clone()))?;
        registry.register(Box::new(rtt_seconds.clone()))?;
        registry.register(Box::new(opus_seconds.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            peers_active,
            sessions_active,
            offers,
            offer_answer_seconds,
            ice_connect_seconds,
            sessions_closed,
            rtp_packets,
            jitter_events,
            jitter_buffer_delay_seconds,
            rtt_seconds,
            opus_seconds,
            pipeline_node_seconds,
        })
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%err, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        // Names and label sets are literals checked by the test below: failing here is a
        // programming error, not something input can cause.
        #[allow(clippy::expect_used)]
        Metrics::new().expect("metric definitions are valid")
    });
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_registers_and_renders() {
        let m = metrics();
        m.offers.with_label_values(&["answered"]).inc();
        m.opus_seconds
            .with_label_values(&["encode"])
            .observe(0.0001);
        let text = m.render();
        for family in [
            "remotemedia_signaling_peers_active",
            "remotemedia_worker_sessions_active",
            "remotemedia_signaling_offers_total",
            "remotemedia_signaling_offer_answer_seconds",
            "remotemedia_media_opus_seconds",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
    }
}
