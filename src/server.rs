//! `--mode grpc`: signaling, session manager and pipelines in one process, state in memory.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::{non_empty, Config};
use crate::error::Error;
use crate::http::{self, Readiness};
use crate::peer::{SessionManager, SessionSettings, WebRtcStack};
use crate::pipeline::{Manifest, Pipeline};
use crate::proto::signaling::web_rtc_signaling_server::WebRtcSignalingServer;
use crate::signaling::{
    GrpcSignaling, InMemoryBus, InMemoryRegistry, OriginPolicy, SignalingCore, SignalingLimits,
    WebSocketSignaling,
};

/// Session events queued between the session manager and signaling.
const SESSION_EVENT_QUEUE: usize = 1024;

/// A bound, not yet running, single-process server.
pub struct Server {
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    core: Arc<SignalingCore>,
    sessions: Arc<SessionManager>,
    events: mpsc::Receiver<crate::signaling::SessionEvent>,
    origins: OriginPolicy,
}

/// Loads the manifest (none: loopback) and builds its pipeline once, so a broken manifest
/// stops the server at start with the file and the problem named.
///
/// # Errors
/// `Error::Manifest`.
pub fn load_pipeline(config: &Config) -> Result<Pipeline, Error> {
    let (manifest, path) = match &config.manifest {
        Some(path) => (Manifest::load(path), path.display().to_string()),
        None => (Ok(Manifest::loopback()), "(built-in loopback)".to_owned()),
    };
    manifest
        .map_err(Into::into)
        .and_then(Pipeline::new)
        .map_err(|source| Error::Manifest { path, source })
}

/// Loads the pipeline and starts the WebRTC stack: the session host of `grpc` and
/// `websocket` mode, and the events it reports for signaling to deliver.
///
/// # Errors
/// A broken manifest or a WebRTC setup failure.
pub async fn session_manager(
    config: &Config,
) -> Result<
    (
        Arc<SessionManager>,
        mpsc::Receiver<crate::signaling::SessionEvent>,
    ),
    Error,
> {
    let pipeline = load_pipeline(config)?;
    let stack = WebRtcStack::new(&config.media).await?;
    let (event_tx, events) = mpsc::channel(SESSION_EVENT_QUEUE);
    let sessions = Arc::new(SessionManager::new(
        stack,
        pipeline,
        SessionSettings {
            connect_timeout: config.media.connect_timeout,
            media_timeout: config.media.media_timeout,
            capacity: config.limits.max_peers,
            enable_data_channel: config.media.enable_data_channel,
        },
        event_tx,
    ));
    Ok((sessions, events))
}

impl Server {
    /// Loads the pipeline, binds every listener and the WebRTC stack.
    ///
    /// # Errors
    /// A broken manifest, a port in use, or a WebRTC setup failure.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let grpc_listener = bind("gRPC", config.grpc_address).await?;
        let http_listener = bind("HTTP", config.http_address).await?;
        let (sessions, events) = session_manager(config).await?;
        let core = SignalingCore::new(
            Arc::new(InMemoryRegistry::default()),
            Arc::new(InMemoryBus::default()),
            Arc::clone(&sessions) as Arc<dyn crate::signaling::SessionHost>,
            SignalingLimits {
                max_peers: config.limits.max_peers,
            },
        );
        Ok(Self {
            grpc_listener,
            http_listener,
            core,
            sessions,
            events,
            origins: OriginPolicy::from_flag(non_empty(&config.allowed_origins)),
        })
    }

    pub fn grpc_address(&self) -> Option<SocketAddr> {
        self.grpc_listener.local_addr().ok()
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    /// The session manager (for inspection: counts, leak probes).
    pub fn sessions(&self) -> Arc<SessionManager> {
        Arc::clone(&self.sessions)
    }

    /// The shared ICE UDP socket's address, when `--udp-port` is set.
    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.sessions.udp_address()
    }

    /// Serves until `shutdown` completes, then stops taking work, ends the signaling streams,
    /// closes every server peer and returns.
    ///
    /// # Errors
    /// When a listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let stop = CancellationToken::new();
        let readiness = Readiness::default();
        let forwarder = tokio::spawn(Arc::clone(&self.core).forward_session_events(self.events));

        let websocket = WebSocketSignaling::new(Arc::clone(&self.core), self.origins, stop.clone());
        let http_stop = stop.clone();
        let router = http::router(readiness.clone(), Some(websocket.clone()));
        let http = axum::serve(self.http_listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });
        let http = tokio::spawn(async move { http.await.map_err(Error::Http) });

        let grpc_stop = stop.clone();
        let grpc = tonic::transport::Server::builder()
            .add_service(WebRtcSignalingServer::new(GrpcSignaling::new(
                Arc::clone(&self.core),
                stop.clone(),
            )))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.grpc_listener), async move {
                grpc_stop.cancelled().await
            });
        let grpc = tokio::spawn(grpc);

        readiness.set(true);
        tracing::info!("serving");
        shutdown.await;
        tracing::info!("shutting down: closing signaling streams and server peers");
        readiness.set(false);
        stop.cancel();
        websocket.closed().await;
        self.sessions.close_all().await;
        let grpc_result = grpc.await;
        let http_result = http.await;
        drop(self.core);
        forwarder.abort();
        if let Ok(Err(err)) = grpc_result {
            return Err(err.into());
        }
        if let Ok(Err(err)) = http_result {
            return Err(err);
        }
        Ok(())
    }
}

pub(crate) async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Bind {
            what,
            address,
            source,
        })
}
