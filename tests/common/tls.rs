//! A test PKI: a CA and a server certificate for `localhost` and 127.0.0.1 (rcgen), written
//! to a temporary directory, and clients that trust only that CA: a gRPC channel, a
//! WebSocket over TLS, an HTTPS GET.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The name the server certificate is issued for (clients verify it).
pub const SERVER_NAME: &str = "localhost";

/// A CA and one server certificate signed by it, as PEM files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A fresh CA and a certificate for `localhost`, 127.0.0.1 and `extra_names`.
    pub fn new(extra_names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "remotemedia test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");

        let mut names = vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra_names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        let ca_pem = ca_cert.pem();
        Self {
            ca: write("ca.crt", &ca_pem),
            cert: write("tls.crt", &cert.pem()),
            key: write("tls.key", &key.serialize_pem()),
            ca_pem,
            dir,
        }
    }

    /// A gRPC channel to `address` over TLS, trusting this CA only.
    pub async fn grpc_channel(
        &self,
        address: SocketAddr,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://{address}"))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&self.ca_pem))
                    .domain_name(SERVER_NAME),
            )?
            .connect()
            .await
    }

    /// A rustls client configuration trusting this CA only (ALPN `alpn`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS connection to `address`, verified as [`SERVER_NAME`].
    pub async fn tls_connect(
        &self,
        address: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(address).await?;
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("server name");
        tokio_rustls::TlsConnector::from(self.client_config(&[b"http/1.1"]))
            .connect(name, tcp)
            .await
    }

    /// An HTTPS/1.0 GET; the whole response.
    pub async fn https_get(&self, address: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = self.tls_connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        // A server may close without close_notify once the response is sent.
        match stream.read_to_end(&mut response).await {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(err) => return Err(err),
        }
        Ok(String::from_utf8_lossy(&response).into_owned())
    }
}
