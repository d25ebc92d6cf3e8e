//! The pipelines' metric families: node latency and the offload pool (DESIGN.md §7).
//! Registered in the process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{Counter, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

use super::offload::DropReason;
use super::NODE_TYPES;
use crate::metrics::{
    counter, counter_vec, defined, float_counter, gauge, histogram, histogram_vec, SETUP_BUCKETS,
    WORK_BUCKETS,
};

/// The pipelines' families.
pub struct PipelineMetrics {
    /// Time a pipeline node takes per input, by node type (bounded: the registry's types).
    pub node_seconds: HistogramVec,
    /// Threads of the process's offload pool.
    pub offload_threads: IntGauge,
    /// Jobs waiting for a thread of the offload pool.
    pub offload_queue_depth: IntGauge,
    /// Time the offload pool's threads spent running jobs (its rate over the thread count is
    /// the pool's utilisation).
    pub offload_busy_seconds: Counter,
    /// Time a job waited in the queue before a thread took it.
    pub offload_wait_seconds: Histogram,
    /// Jobs run, by result (`ok`, `failed`).
    pub offload_jobs: IntCounterVec,
    /// Jobs dropped before they ran, by reason (a fixed set).
    pub offload_dropped: IntCounterVec,
    /// Times the user spoke over the pipeline's speech and it stopped (barge-in).
    pub interruptions: IntCounter,
    /// `HttpNode` requests, by how they ended (a fixed set).
    pub http_requests: IntCounterVec,
    /// `HttpNode` attempts retried.
    pub http_retries: IntCounter,
}

impl PipelineMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
            node_seconds: histogram_vec(
                "remotemedia_pipeline_node_seconds",
                "Time a pipeline node takes per input, by node type",
                WORK_BUCKETS,
                &["node_type"],
            )?,
            offload_threads: gauge(
                "remotemedia_pipeline_offload_threads",
                "Threads of the process's offload pool (blocking pipeline work)",
            )?,
            offload_queue_depth: gauge(
                "remotemedia_pipeline_offload_queue_depth",
                "Jobs waiting for a thread of the offload pool",
            )?,
            offload_busy_seconds: float_counter(
                "remotemedia_pipeline_offload_busy_seconds_total",
                "Time the offload pool's threads spent running jobs",
            )?,
            offload_wait_seconds: histogram(
                "remotemedia_pipeline_offload_wait_seconds",
                "Time a job waited in the offload queue before a thread took it",
                SETUP_BUCKETS,
            )?,
            offload_jobs: counter_vec(
                "remotemedia_pipeline_offload_jobs_total",
                "Offloaded jobs run, by result",
                &["result"],
            )?,
            offload_dropped: counter_vec(
                "remotemedia_pipeline_offload_dropped_total",
                "Offloaded jobs dropped before they ran (oldest utterance first), by reason",
                &["reason"],
            )?,
            interruptions: counter(
                "remotemedia_pipeline_interruptions_total",
                "Times the user spoke over the pipeline's speech and it stopped (barge-in)",
            )?,
            http_requests: counter_vec(
                "remotemedia_pipeline_http_requests_total",
                "HttpNode requests, by how they ended",
                &["result"],
            )?,
            http_retries: counter(
                "remotemedia_pipeline_http_retries_total",
                "HttpNode attempts retried (timeouts, transport errors, 5xx and 429)",
            )?,
        };
        for node_type in NODE_TYPES {
            metrics.node_seconds.with_label_values(&[node_type]);
        }
        for result in ["ok", "failed"] {
            metrics.offload_jobs.with_label_values(&[result]);
        }
        for reason in DropReason::ALL {
            metrics.offload_dropped.with_label_values(&[reason.label()]);
        }
        for result in super::HttpResult::ALL {
            metrics.http_requests.with_label_values(&[result.label()]);
        }
        Ok(metrics)
    }
}

/// The pipelines' families, registered on first use.
pub fn metrics() -> &'static PipelineMetrics {
    static METRICS: LazyLock<PipelineMetrics> = LazyLock::new(|| defined(PipelineMetrics::new()));
    &METRICS
}
