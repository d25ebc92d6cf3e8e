//! TLS on the listeners clients reach (`--tls-cert`/`--tls-key`) and on the worker API
//! (`--worker-tls-cert`/`--worker-tls-key`): certificates from PEM files, read again when the
//! files change (cert-manager renews them in place). The handshakes are done beside the
//! accept loop ([`crate::admission::Incoming`]), so a slow or plaintext client holds up
//! nobody. rustls with the ring provider only.

mod certs;
mod error;
pub mod metrics;

pub use certs::{
    crypto_provider, read_ca_bundle, server_config, CertificateFiles, ReloadingCertificate,
    ALPN_GRPC, ALPN_HTTP1,
};
pub use error::TlsError;
