//! The cluster's metric families: the worker's load and drain, the frontend's placements, the
//! controller, Redis errors (DESIGN.md §7). Registered in the process registry of
//! [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::metrics::{counter, counter_vec, defined, float_gauge, gauge, gauge_vec};

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
    "room_tracks",
    "room_read",
    "room_follow",
];

/// The cluster's families.
pub struct ClusterMetrics {
    /// `--capacity` of this worker.
    pub worker_capacity: IntGauge,
    /// 1 while this worker drains.
    pub worker_draining: IntGauge,
    /// Process CPU per core over the last heartbeat interval.
    pub worker_cpu_load: Gauge,
    /// Sessions placed by this frontend, by worker id (bounded by the worker count).
    pub placements: IntCounterVec,
    /// Workers this frontend may place on.
    pub workers_available: IntGauge,
    /// Failed Redis commands by operation.
    pub redis_errors: IntCounterVec,
    /// 1 while this controller leads.
    pub controller_leader: IntGauge,
    /// Workers by state, as the controller sees them.
    pub controller_workers: IntGaugeVec,
    /// Sessions on every worker, as the controller sees them.
    pub controller_sessions: IntGauge,
    /// Placement tables published.
    pub controller_table_writes: IntCounter,
}

impl ClusterMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
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
        };
        // Fixed label sets show at zero from the start; `placements` (by worker id) appears
        // as it happens.
        for operation in REDIS_OPERATIONS {
            metrics.redis_errors.with_label_values(&[operation]);
        }
        for state in ["ready", "draining", "full"] {
            metrics.controller_workers.with_label_values(&[state]);
        }
        Ok(metrics)
    }
}

/// The cluster's families, registered on first use.
pub fn metrics() -> &'static ClusterMetrics {
    static METRICS: LazyLock<ClusterMetrics> = LazyLock::new(|| defined(ClusterMetrics::new()));
    &METRICS
}
