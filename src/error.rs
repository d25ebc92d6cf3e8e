//! The crate's top-level error: why the server could not start or run.

use std::net::SocketAddr;

/// Why the server failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pipelines(#[from] crate::pipeline::CatalogError),
    #[error(transparent)]
    Peer(#[from] crate::peer::PeerError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    PublicAddress(#[from] crate::public_address::PublicAddressError),
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("--mode websocket needs --signaling-url (WEBRTC_SIGNALING_URL)")]
    MissingSignalingUrl,
    #[error("--mode {0} needs --redis-url (REMOTEMEDIA_REDIS_URL): its state is in Redis")]
    MissingRedisUrl(&'static str),
    #[error("{0}")]
    Unsupported(String),
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("secret: {0}")]
    AuthSecret(#[source] std::io::Error),
    #[error("drain request to the worker at {0}")]
    Drain(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("limits: {0}")]
    Limits(String),
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
}
