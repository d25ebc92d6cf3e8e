//! The pipelines' metric families (DESIGN.md §7). Registered in the process registry of
//! [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::HistogramVec;

use super::NODE_TYPES;
use crate::metrics::{defined, histogram_vec, WORK_BUCKETS};

/// The pipelines' families.
pub struct PipelineMetrics {
    /// Time a pipeline node takes per input, by node type (bounded: the registry's types).
    pub node_seconds: HistogramVec,
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
        };
        for node_type in NODE_TYPES {
            metrics.node_seconds.with_label_values(&[node_type]);
        }
        Ok(metrics)
    }
}

/// The pipelines' families, registered on first use.
pub fn metrics() -> &'static PipelineMetrics {
    static METRICS: LazyLock<PipelineMetrics> = LazyLock::new(|| defined(PipelineMetrics::new()));
    &METRICS
}
