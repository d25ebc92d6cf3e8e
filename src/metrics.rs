//! Prometheus metrics (DESIGN.md §7): `remotemedia_<area>_<what>_<unit>`, base units,
//! counters end in `_total`, labels bounded (never a peer id).
//!
//! One registry per process: the families are process-wide facts, and a global keeps the
//! media hot path free of handles threaded through every call.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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

/// The `reason` labels of `remotemedia_auth_refusals_total`.
pub const AUTH_REFUSAL_REASONS: [&str; 5] = [
    "missing",
    "expired",
    "invalid",
    "wrong_peer",
    "wrong_manifest",
];

/// The `listener` labels of `remotemedia_tls_handshakes_total`.
pub const TLS_LISTENERS: [&str; 3] = ["signaling", "http", "worker_api"];
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
}

impl Limit {
    pub const ALL: [Limit; 16] = [
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

/// Every Redis operation whose failures are counted (`operation` label of
/// `remotemedia_cluster_redis_errors_total`).
pub const REDIS_OPERATIONS: &[&str] = &[
    "heartbeat",
    "forget_session",
    "read_heartbeats",
    "read_table",
    "reap",
    "publish_table",
    "drain_request",
    "leader_lock",
    "get_session",
    "remember_session",
    "room_place",
    "room_forget",
    "room_reap",
    "room_refresh",
];

/// Every metric family of the process.
pub struct Metrics {
    pub registry: Registry,
    /// Announced client peers on this process.
    pub peers_active: IntGauge,
    /// Server sessions alive on this process.
    pub sessions_active: IntGauge,
    /// Server sessions created on this process (a counter).
    pub sessions_created: IntCounter,
    /// `--capacity` of this worker.
    pub worker_capacity: IntGauge,
    /// 1 while this worker drains.
    pub worker_draining: IntGauge,
    /// Process CPU per core over the last heartbeat interval.
    pub worker_cpu_load: Gauge,
    /// Offers by result: `answered`, `forwarded`, or an error kind.
    pub offers: IntCounterVec,
    /// Sessions placed by this frontend, by worker id (bounded by the worker count).
    pub placements: IntCounterVec,
    /// Workers this frontend may place on.
    pub workers_available: IntGauge,
    /// Failed Redis commands by operation.
    pub redis_errors: IntCounterVec,
    /// Streams and announces refused by authentication, by reason (a fixed set).
    pub auth_refusals: IntCounterVec,
    /// Requests refused and messages or frames dropped by a limit, by limit (a fixed set).
    pub limit_hits: IntCounterVec,
    /// Data-channel messages dropped, by reason (a fixed set).
    pub datachannel_dropped: IntCounterVec,
    /// 1 while this controller leads.
    pub controller_leader: IntGauge,
    /// Workers by state, as the controller sees them.
    pub controller_workers: IntGaugeVec,
    /// Sessions on every worker, as the controller sees them.
    pub controller_sessions: IntGauge,
    /// Placement tables published.
    pub controller_table_writes: IntCounter,
    /// Offer received → answer ready, for offers to the server.
    pub offer_answer_seconds: Histogram,
    /// Offer received → ICE+DTLS connected.
    pub ice_connect_seconds: Histogram,
    /// Sessions closed, by reason (a fixed set).
    pub sessions_closed: IntCounterVec,
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
    /// Signaling streams ended because their client read too slowly, by transport.
    pub slow_consumers: IntCounterVec,
    /// Datagrams the shared UDP port dropped before the ICE mux, by reason (a fixed set).
    pub udp_dropped: IntCounterVec,
    /// Opus work per 20 ms frame, by operation (`encode`, `decode`).
    pub opus_seconds: HistogramVec,
    /// Time a pipeline node takes per input, by node type (bounded: the registry's types).
    pub pipeline_node_seconds: HistogramVec,
    /// TLS handshakes on a listener (`signaling`, `http`, `worker_api`), by result (`ok`,
    /// `failed`: not TLS or refused, `timeout`).
    pub tls_handshakes: IntCounterVec,
    /// Certificate files that changed and were loaded again, by result (`ok`, `failed`: the
    /// old certificate stays).
    pub tls_reloads: IntCounterVec,
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let float_gauge = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let metric = Gauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram, prometheus::Error> {
                let metric =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram_vec = |name: &str,
                             help: &str,
                             buckets: &[f64],
                             labels: &[&str]|
         -> Result<HistogramVec, prometheus::Error> {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let metrics = Self {
            peers_active: gauge(
                "remotemedia_signaling_peers_active",
                "Announced client peers connected to this process",
            )?,
            sessions_active: gauge(
                "remotemedia_worker_sessions_active",
                "Server sessions (server peers with a pipeline) alive on this process",
            )?,
            sessions_created: counter(
                "remotemedia_worker_sessions_total",
                "Server sessions created on this process",
            )?,
            worker_capacity: gauge(
                "remotemedia_worker_capacity_sessions",
                "Server sessions this worker carries at most",
            )?,
            worker_draining: gauge(
                "remotemedia_worker_draining",
                "1 while this worker drains (takes no new sessions)",
            )?,
            worker_cpu_load: float_gauge(
                "remotemedia_worker_cpu_load_ratio",
                "Process CPU time over wall time in the last heartbeat interval, per core",
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
            placements: counter_vec(
                "remotemedia_frontend_placements_total",
                "Server sessions placed on a worker, by worker id",
                &["worker"],
            )?,
            workers_available: gauge(
                "remotemedia_frontend_workers_available",
                "Workers this frontend may place sessions on (fresh, ready, not draining)",
            )?,
            redis_errors: counter_vec(
                "remotemedia_cluster_redis_errors_total",
                "Redis commands that failed, by operation",
                &["operation"],
            )?,
            auth_refusals: {
                let refusals = counter_vec(
                    "remotemedia_auth_refusals_total",
                    "Streams and announces refused by authentication, by reason",
                    &["reason"],
                )?;
                // Every reason shows from the start, so alerts see a zero, not an absence.
                for reason in AUTH_REFUSAL_REASONS {
                    refusals.with_label_values(&[reason]);
                }
                refusals
            },
            limit_hits: counter_vec(
                "remotemedia_limit_hits_total",
                "Requests refused and messages or audio frames dropped by a limit, by limit",
                &["limit"],
            )?,
            datachannel_dropped: counter_vec(
                "remotemedia_media_datachannel_dropped_total",
                "Data-channel messages dropped, by reason",
                &["reason"],
            )?,
            controller_leader: gauge(
                "remotemedia_controller_leader",
                "1 while this controller holds the leader lock",
            )?,
            controller_workers: gauge_vec(
                "remotemedia_controller_workers",
                "Workers the controller sees, by state (ready, draining, full)",
                &["state"],
            )?,
            controller_sessions: gauge(
                "remotemedia_controller_sessions_active",
                "Server sessions on every worker of the cluster",
            )?,
            controller_table_writes: counter(
                "remotemedia_controller_placement_writes_total",
                "Placement tables this controller published",
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
            slow_consumers: counter_vec(
                "remotemedia_signaling_slow_consumers_total",
                "Signaling streams ended because their client stopped reading, by transport",
                &["transport"],
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
            pipeline_node_seconds: histogram_vec(
                "remotemedia_pipeline_node_seconds",
                "Time a pipeline node takes per input, by node type",
                WORK_BUCKETS,
                &["node_type"],
            )?,
            tls_handshakes: counter_vec(
                "remotemedia_tls_handshakes_total",
                "TLS handshakes on a listener, by listener and result",
                &["listener", "result"],
            )?,
            tls_reloads: counter_vec(
                "remotemedia_tls_certificate_reloads_total",
                "Changed certificate files loaded again, by result",
                &["result"],
            )?,
            registry: registry.clone(),
        };
        metrics.initialise_labels();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Creates every labelled series whose label values are a fixed set, at zero: a family
    /// with no series is not exported at all, and dashboards and alerts must find each family
    /// before its first event (`rate()` of a series that appears at 1 also misses that 1).
    /// Only `placements` (by worker id) and the error kinds of `offers` appear as they happen.
    fn initialise_labels(&self) {
        for result in ["answered", "forwarded"] {
            self.offers.with_label_values(&[result]);
        }
        for operation in REDIS_OPERATIONS {
            self.redis_errors.with_label_values(&[operation]);
        }
        for limit in Limit::ALL {
            self.limit_hits.with_label_values(&[limit.label()]);
        }
        for reason in DATACHANNEL_DROP_REASONS {
            self.datachannel_dropped.with_label_values(&[reason]);
        }
        for state in ["ready", "draining", "full"] {
            self.controller_workers.with_label_values(&[state]);
        }
        for reason in crate::peer::CloseReason::ALL {
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
        for transport in ["grpc", "websocket"] {
            self.slow_consumers.with_label_values(&[transport]);
        }
        for reason in crate::peer::UdpDropReason::ALL {
            self.udp_dropped.with_label_values(&[reason.label()]);
        }
        for operation in ["encode", "decode"] {
            self.opus_seconds.with_label_values(&[operation]);
        }
        for node_type in crate::pipeline::NODE_TYPES {
            self.pipeline_node_seconds.with_label_values(&[node_type]);
        }
        for listener in TLS_LISTENERS {
            for result in ["ok", "failed", "timeout"] {
                self.tls_handshakes.with_label_values(&[listener, result]);
            }
        }
        for result in ["ok", "failed"] {
            self.tls_reloads.with_label_values(&[result]);
        }
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
