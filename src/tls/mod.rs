//! TLS on the listeners clients reach (`--tls-cert`/`--tls-key`) and on the worker API
//! (`--worker-tls-cert`/`--worker-tls-key`): certificates from PEM files, read again when the
//! files change (cert-manager renews them in place), and handshakes done beside the accept
//! loop so a slow or plaintext client holds up nobody. rustls with the ring provider only.

mod acceptor;
mod certs;
mod error;
pub mod metrics;

pub use acceptor::TlsIncoming;
pub use certs::{
    crypto_provider, read_ca_bundle, server_config, CertificateFiles, ReloadingCertificate,
    ALPN_GRPC, ALPN_HTTP1,
};
pub use error::TlsError;
