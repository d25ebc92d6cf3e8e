//! Prometheus metrics (DESIGN.md §7): `remotemedia_<area>_<what>_<unit>`, base units,
//! counters end in `_total`, labels bounded (never a peer id).
//!
//! One registry per process: the families are process-wide facts, and a global keeps the
//! media hot path free of handles threaded through every call. Each area owns its families
//! (`peer::metrics`, `signaling::metrics`, `pipeline::metrics`, `cluster::metrics`,
//! `tls::metrics`) and registers them here with the helpers below; this module keeps the
//! registry, the limits every area shares and the text exposition.

use std::sync::LazyLock;

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 1 ms to 10 s (signaling, ICE connect).
pub const SETUP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets from 10 µs to 100 ms (codec and pipeline work per frame).
pub const WORK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.1,
];

/// A limit that protects the process (the `limit` label of `remotemedia_limit_hits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-sdp-bytes`: an offer or answer refused.
    SdpBytes,
    /// `--max-message-bytes`: a whole signaling message (gRPC request, WebSocket frame) refused.
    SignalingMessageBytes,
    /// `--max-datachannel-message-bytes`: an inbound data-channel message dropped.
    DatachannelMessageBytes,
    /// `--signaling-rate`: a signaling request refused.
    RequestsPerSecond,
    /// `--max-ice-candidates`: a client candidate for a server session refused.
    IceCandidates,
    /// `--capacity` (or `--max-peers` in one process): a server session refused.
    Sessions,
    /// `--max-peers`: an announce refused.
    Peers,
    /// `--pipeline-queue-frames`: the oldest queued audio frame of a pipeline input dropped.
    PipelineQueue,
    /// `--datachannel-send-queue-bytes`: pipeline output for a client that does not take its
    /// data-channel messages dropped.
    DatachannelSendQueueBytes,
    /// `--max-datachannels`: a data channel over a session's limit closed.
    Datachannels,
    /// `--nack-bytes-per-second`: a NACKed packet over a session's resend budget not resent.
    NackBytesPerSecond,
    /// `--max-text-buffer-bytes`: a `TextCollectorNode`'s unfinished text sent on early.
    TextBufferBytes,
    /// `--max-utterance-bytes`: an `AudioBufferAccumulatorNode`'s utterance cut early.
    UtteranceBytes,
    /// `--pipeline-queue-bytes`: a data-channel message waited for room in a pipeline input.
    PipelineQueueBytes,
    /// `--first-message-timeout`: a signaling stream or WebSocket closed for saying nothing.
    FirstMessage,
    /// `--max-connections-per-address`: a connection (or `/ws` through a trusted proxy) refused.
    ConnectionsPerAddress,
    /// `--max-room-participants`: an announce into a full room refused.
    RoomParticipants,
    /// `--max-rooms`: an offer that would create one more room refused.
    Rooms,
}

impl Limit {
    pub const ALL: [Limit; 18] = [
        Limit::SdpBytes,
        Limit::SignalingMessageBytes,
        Limit::DatachannelMessageBytes,
        Limit::RequestsPerSecond,
        Limit::IceCandidates,
        Limit::Sessions,
        Limit::Peers,
        Limit::PipelineQueue,
        Limit::DatachannelSendQueueBytes,
        Limit::Datachannels,
        Limit::NackBytesPerSecond,
        Limit::TextBufferBytes,
        Limit::UtteranceBytes,
        Limit::PipelineQueueBytes,
        Limit::FirstMessage,
        Limit::ConnectionsPerAddress,
        Limit::RoomParticipants,
        Limit::Rooms,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::SdpBytes => "sdp_bytes",
            Self::SignalingMessageBytes => "signaling_message_bytes",
            Self::DatachannelMessageBytes => "datachannel_message_bytes",
            Self::RequestsPerSecond => "requests_per_second",
            Self::IceCandidates => "ice_candidates",
            Self::Sessions => "sessions",
            Self::Peers => "peers",
            Self::PipelineQueue => "pipeline_queue",
            Self::DatachannelSendQueueBytes => "datachannel_send_queue_bytes",
            Self::Datachannels => "datachannels",
            Self::NackBytesPerSecond => "nack_bytes_per_second",
            Self::TextBufferBytes => "text_buffer_bytes",
            Self::UtteranceBytes => "utterance_bytes",
            Self::PipelineQueueBytes => "pipeline_queue_bytes",
            Self::FirstMessage => "first_message",
            Self::ConnectionsPerAddress => "connections_per_address",
            Self::RoomParticipants => "room_participants",
            Self::Rooms => "rooms",
        }
    }
}

/// Counts `n` hits of `limit` (a refused request, or a dropped message or frame).
pub fn limit_hit(limit: Limit, n: u64) {
    metrics()
        .limit_hits
        .with_label_values(&[limit.label()])
        .inc_by(n);
}

/// The families every area shares, and the registry all families live in.
pub struct Metrics {
    pub registry: Registry,
    /// Requests refused and messages or frames dropped by a limit, by limit (a fixed set).
    pub limit_hits: IntCounterVec,
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let limit_hits = IntCounterVec::new(
            Opts::new(
                "remotemedia_limit_hits_total",
                "Requests refused and messages or audio frames dropped by a limit, by limit",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(limit_hits.clone()))?;
        // Every limit shows at zero before its first hit.
        for limit in Limit::ALL {
            limit_hits.with_label_values(&[limit.label()]);
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            limit_hits,
        })
    }

    /// The Prometheus text exposition of every family of every area.
    pub fn render(&self) -> String {
        // An area registers its families on first use; the exposition shows them all from
        // the start, so dashboards and alerts find each family before its first event.
        crate::register_metric_families();
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%err, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| defined(Metrics::new()));
    &METRICS
}

/// An area's families once built: their names, help texts and label sets are literals that
/// the tests render, so failing here is a programming error, not something input can cause.
pub fn defined<T>(families: Result<T, prometheus::Error>) -> T {
    #[allow(clippy::expect_used)]
    families.expect("metric definitions are valid")
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(
    metric: M,
) -> Result<M, prometheus::Error> {
    metrics().registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers an integer gauge.
///
/// # Errors
/// An invalid name or a name registered twice.
pub fn gauge(name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    registered(IntGauge::new(name, help)?)
}

/// Registers an integer gauge with labels.
///
/// # Errors
/// An invalid name or label, or a name registered twice.
pub fn gauge_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    registered(IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// Registers a floating-point gauge.
///
/// # Errors
/// An invalid name or a name registered twice.
pub fn float_gauge(name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
    registered(Gauge::new(name, help)?)
}

/// Registers a counter.
///
/// # Errors
/// An invalid name or a name registered twice.
pub fn counter(name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    registered(IntCounter::new(name, help)?)
}

/// Registers a floating-point counter (seconds of work).
///
/// # Errors
/// An invalid name or a name registered twice.
pub fn float_counter(name: &str, help: &str) -> Result<Counter, prometheus::Error> {
    registered(Counter::new(name, help)?)
}

/// Registers a counter with labels.
///
/// # Errors
/// An invalid name or label, or a name registered twice.
pub fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    registered(IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// Registers a histogram.
///
/// # Errors
/// An invalid name or buckets, or a name registered twice.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, prometheus::Error> {
    registered(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
    )?)
}

/// Registers a histogram with labels.
///
/// # Errors
/// An invalid name, label or buckets, or a name registered twice.
pub fn histogram_vec(
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Result<HistogramVec, prometheus::Error> {
    registered(HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_registers_and_renders() {
        crate::signaling::metrics::metrics()
            .offers
            .with_label_values(&["answered"])
            .inc();
        crate::peer::metrics::metrics()
            .opus_seconds
            .with_label_values(&["encode"])
            .observe(0.0001);
        let text = metrics().render();
        for family in [
            "remotemedia_signaling_peers_active",
            "remotemedia_worker_sessions_active",
            "remotemedia_frontend_offers_total",
            "remotemedia_signaling_offer_answer_seconds",
            "remotemedia_media_opus_seconds",
        ] {
            assert!(text.contains(family), "{family} missing");
        }
        // Every limit shows at zero before its first hit.
        for limit in Limit::ALL {
            let sample = format!(
                r#"remotemedia_limit_hits_total{{limit="{}"}}"#,
                limit.label()
            );
            assert!(text.contains(&sample), "{sample} missing");
        }
    }
}
