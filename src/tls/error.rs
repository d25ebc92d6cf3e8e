//! Why a certificate, key or CA file could not be used.

use std::path::PathBuf;

/// A TLS configuration that cannot be used; every variant names the file at fault. Each
/// message is whole (no `source` chain to repeat it).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read it: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: no PEM certificate in it{}", path.display(), detail(reason))]
    BadCertificate {
        path: PathBuf,
        reason: Option<String>,
    },
    #[error("{}: no usable PEM private key in it (PKCS#8, PKCS#1 or SEC1): {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{}: this key does not belong to the certificate {}: {reason}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(String),
}

fn detail(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|reason| format!(" ({reason})"))
        .unwrap_or_default()
}
