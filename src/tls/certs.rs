//! Certificates from PEM files, and the resolver that swaps in a renewed pair without a
//! restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use super::metrics::metrics;
use super::TlsError;

/// ALPN of a gRPC listener: HTTP/2 only (tonic clients refuse anything else).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listener: HTTP/1.1, where browsers' WebSocket upgrade works.
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The ring provider, installed as the process default the first time it is asked for, so
/// every rustls user in the process (tonic's client, redis) agrees on it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Arc::clone(provider);
    }
    // Losing a race to another installer is fine: whichever won is what everyone uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A certificate chain file and its private key file (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    /// The pair from its two flags (clap makes sure both or neither are set).
    pub fn from_flags(cert: Option<&Path>, key: Option<&Path>) -> Option<Self> {
        Some(Self {
            cert: cert?.to_owned(),
            key: key?.to_owned(),
        })
    }

    /// Reads and checks both files: at least one certificate, a key the provider can sign
    /// with, and a key that matches the first certificate.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file at fault.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let chain = read_certificates(&self.cert)?;
        let key_pem = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::BadKey {
            path: self.key.clone(),
            reason: err.to_string(),
        })?;
        let signing_key = crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::BadKey {
                path: self.key.clone(),
                reason: err.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(err)) => Err(TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: format!("{err:?}"),
            }),
            Err(err) => Err(TlsError::BadCertificate {
                path: self.cert.clone(),
                reason: Some(err.to_string()),
            }),
        }
    }

    /// What changes when either file is replaced (modification time and length of both).
    fn stamp(&self) -> Option<Stamp> {
        let of = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Some((of(&self.cert)?, of(&self.key)?))
    }
}

type Stamp = ((SystemTime, u64), (SystemTime, u64));

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: Some(err.to_string()),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadCertificate {
            path: path.to_owned(),
            reason: None,
        });
    }
    Ok(chain)
}

/// A CA bundle (PEM) to verify a server with (`--redis-ca-file`, `--worker-ca`): the file's
/// bytes, once it is known to hold at least one certificate.
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, TlsError> {
    read_certificates(path)?;
    read(path)
}

/// The certificate a listener presents, replaced when its files change. Handshakes in
/// flight keep the pair they started with.
#[derive(Debug)]
pub struct ReloadingCertificate {
    files: CertificateFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp at the last load attempt (a failed attempt too, so a broken file
    /// is reported once, not at every check).
    seen: Mutex<Option<Stamp>>,
}

impl ReloadingCertificate {
    /// Loads the pair once; a failure here stops the server at start.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file at fault.
    pub fn load(files: CertificateFiles) -> Result<Arc<Self>, TlsError> {
        let seen = files.stamp();
        let current = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(seen),
        }))
    }

    pub fn files(&self) -> &CertificateFiles {
        &self.files
    }

    /// Loads the pair again if either file changed since the last attempt. A broken new
    /// pair leaves the old one in service.
    ///
    /// # Errors
    /// The changed files cannot be used (the old certificate stays).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        {
            let mut seen = self.seen.lock();
            if stamp.is_none() || *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        let loaded = self.files.load()?;
        *self.current.write() = Arc::new(loaded);
        Ok(true)
    }

    /// Checks the files every `every` until `stop` (never when `every` is zero).
    pub fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        if every.is_zero() {
            return;
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match self.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        metrics().tls_reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(err) => {
                        metrics().tls_reloads.with_label_values(&["failed"]).inc();
                        tracing::warn!(%err, "TLS certificate changed but cannot be used; the previous one stays");
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

/// A server configuration presenting `certificate`, offering `alpn`.
///
/// # Errors
/// The provider rejects the default protocol versions (not with ring).
pub fn server_config(
    certificate: Arc<ReloadingCertificate>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Rustls(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
