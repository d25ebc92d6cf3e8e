//! One step of the capacity sweep: what `sweep` measures and `plot` draws (its own module,
//! so neither of the two imports the other).

/// One step of the sweep.
#[derive(Debug, Clone, Default)]
pub struct SweepRow {
    pub peers: usize,
    pub connected: usize,
    pub server_cpu_pct: f64,
    pub rss_mb: f64,
    /// (RSS - the idle server's RSS) / peers.
    pub mb_per_peer: f64,
    pub loss_pct: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub answer_p50_ms: f64,
    pub connected_p50_ms: f64,
    pub loadgen_cpu_pct: f64,
    pub valid: bool,
}
