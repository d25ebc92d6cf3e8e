//! TLS's metric families: handshakes and certificate reloads (DESIGN.md §7). Registered in
//! the process registry of [`crate::metrics`].

use std::sync::LazyLock;

use prometheus::IntCounterVec;

use crate::metrics::{counter_vec, defined};

/// The `listener` labels of `remotemedia_tls_handshakes_total`.
pub const TLS_LISTENERS: [&str; 3] = ["signaling", "http", "worker_api"];

/// TLS's families.
pub struct TlsMetrics {
    /// TLS handshakes on a listener (`signaling`, `http`, `worker_api`), by result (`ok`,
    /// `failed`: not TLS or refused, `timeout`).
    pub tls_handshakes: IntCounterVec,
    /// Certificate files that changed and were loaded again, by result (`ok`, `failed`: the
    /// old certificate stays).
    pub tls_reloads: IntCounterVec,
}

impl TlsMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let metrics = Self {
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
        };
        for listener in TLS_LISTENERS {
            for result in ["ok", "failed", "timeout"] {
                metrics
                    .tls_handshakes
                    .with_label_values(&[listener, result]);
            }
        }
        for result in ["ok", "failed"] {
            metrics.tls_reloads.with_label_values(&[result]);
        }
        Ok(metrics)
    }
}

/// TLS's families, registered on first use.
pub fn metrics() -> &'static TlsMetrics {
    static METRICS: LazyLock<TlsMetrics> = LazyLock::new(|| defined(TlsMetrics::new()));
    &METRICS
}
