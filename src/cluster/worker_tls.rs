//! TLS on the internal worker API: workers serve it with `--worker-tls-cert`/`--worker-tls-key`;
//! frontends (and `webrtc_server drain`) dial `https://` and verify the worker's certificate
//! with `--worker-ca`, against `--worker-tls-name` when all workers share one certificate.
//! The worker token stays the authentication; TLS keeps it (and the SDP) off the wire.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::Config;
use crate::tls::{self, TlsError};

/// How a frontend verifies workers; `None` in [`WorkerTlsClient::from_config`] means
/// plaintext.
#[derive(Clone)]
pub struct WorkerTlsClient {
    config: ClientTlsConfig,
}

impl WorkerTlsClient {
    /// `--worker-ca` and `--worker-tls-name`, if TLS to workers is on.
    ///
    /// # Errors
    /// The CA file cannot be read or holds no certificate.
    pub fn from_config(config: &Config) -> Result<Option<Self>, TlsError> {
        let Some(path) = &config.cluster.worker_ca else {
            return Ok(None);
        };
        tls::crypto_provider();
        let pem = tls::read_ca_bundle(path)?;
        let mut client = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &config.cluster.worker_tls_name {
            client = client.domain_name(name.clone());
        }
        Ok(Some(Self { config: client }))
    }
}

/// An endpoint for the worker API at `address` (`host:port`, or a URL): `https://` and
/// verified when `tls` is set.
///
/// # Errors
/// An address that is not a URI, or a TLS setup tonic refuses.
pub fn worker_endpoint(address: &str, tls: Option<&WorkerTlsClient>) -> Result<Endpoint, String> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{address}")
    };
    let endpoint = Endpoint::from_shared(url).map_err(|err| err.to_string())?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.config.clone())
            .map_err(|err| err.to_string()),
        None => Ok(endpoint),
    }
}
