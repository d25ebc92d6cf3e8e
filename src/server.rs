//! `--mode grpc`: signaling, session manager and pipelines in one process, state in memory
//! (or in Redis with `--redis-url`, for replicas). `--mode frontend`: the same signaling with
//! state in Redis and server sessions on media workers ([`RemoteSessionHost`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Incoming};
use crate::cluster::{self, AttachToken, Keys, RedisBus, RedisRegistry, RemoteSessionHost};
use crate::config::{non_empty, Config, Mode};
use crate::error::Error;
use crate::http::{self, Readiness};
use crate::listener::bind;
use crate::peer::SessionManager;
use crate::proto::signaling::web_rtc_signaling_server::WebRtcSignalingServer;
use crate::sessions::{session_manager, SESSION_EVENT_QUEUE};
use crate::signaling::{
    Access, GrpcSignaling, InMemoryBus, InMemoryRegistry, NotificationBus, OriginPolicy,
    PeerRegistry, RequestLimits, SignalingCore, SignalingLimits, TokenVerifier, TurnCredentials,
    WebSocketSignaling,
};
use crate::tls::{self, ReloadingCertificate};

/// A bound, not yet running, single-process server.
pub struct Server {
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    core: Arc<SignalingCore>,
    /// The in-process session host (`grpc` mode); `None` on a frontend.
    sessions: Option<Arc<SessionManager>>,
    events: mpsc::Receiver<crate::signaling::SessionEvent>,
    /// Stops the server's background work (listeners, state refreshers).
    stop: CancellationToken,
    origins: OriginPolicy,
    /// `--tls-cert`/`--tls-key`: both listeners serve TLS.
    tls: Option<ListenerTls>,
    /// Bounds on each HTTP/2 connection of the signaling listener.
    http2: Http2Bounds,
    /// Which connections both listeners take (the per-address cap, trusted proxies).
    admission: Arc<Admission>,
}

/// `--grpc-keepalive-interval`, `--grpc-keepalive-timeout`, `--grpc-max-streams`: a
/// connection whose client stops answering pings (a dead NAT mapping, a vanished laptop) ends,
/// and one connection cannot hold more than so many streams at once.
struct Http2Bounds {
    keepalive_interval: Option<Duration>,
    keepalive_timeout: Duration,
    max_streams: u32,
}

/// The TLS side of the client-facing listeners: one certificate (reloaded when its files
/// change), a configuration per protocol.
struct ListenerTls {
    certificate: Arc<ReloadingCertificate>,
    reload_every: Duration,
    grpc: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
}

impl ListenerTls {
    /// Reads the certificate files, if TLS is configured.
    fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let Some(files) = config.tls.files() else {
            return Ok(None);
        };
        let certificate = ReloadingCertificate::load(files)?;
        Ok(Some(Self {
            grpc: tls::server_config(Arc::clone(&certificate), tls::ALPN_GRPC)?,
            http: tls::server_config(Arc::clone(&certificate), tls::ALPN_HTTP1)?,
            reload_every: config.tls.tls_reload_interval,
            certificate,
        }))
    }
}

impl Server {
    /// Loads the pipeline, binds every listener and the WebRTC stack.
    ///
    /// # Errors
    /// A broken manifest, a port in use, or a WebRTC setup failure.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        if config.mode == Mode::Frontend && config.redis_url.is_none() {
            return Err(Error::MissingRedisUrl("frontend"));
        }
        let tls = ListenerTls::from_config(config)?;
        config.limits.validate().map_err(Error::Limits)?;
        let grpc_listener = bind("gRPC", config.grpc_address).await?;
        let http_listener = bind("HTTP", config.http_address).await?;
        let stop = CancellationToken::new();
        let (registry, bus, redis) = shared_state(config, &stop).await?;
        let (host, sessions, events): (Arc<dyn crate::signaling::SessionHost>, _, _) =
            match (config.mode, redis) {
                (Mode::Frontend, Some((redis, keys))) => {
                    let (event_tx, events) = mpsc::channel(SESSION_EVENT_QUEUE);
                    let token = config
                        .cluster
                        .worker_token()
                        .map_err(crate::Error::AuthSecret)?;
                    let token =
                        AttachToken::new(token.as_ref()).map_err(crate::Error::Unsupported)?;
                    let tls = cluster::WorkerTlsClient::from_config(config)?;
                    let host = RemoteSessionHost::new(
                        redis,
                        keys,
                        event_tx,
                        token,
                        tls,
                        config.cluster.worker_call_timeout,
                        config.cluster.room_span_workers,
                        stop.child_token(),
                    )
                    .await;
                    (host, None, events)
                }
                _ => {
                    let (sessions, events) = session_manager(config).await?;
                    (
                        Arc::clone(&sessions) as Arc<dyn crate::signaling::SessionHost>,
                        Some(sessions),
                        events,
                    )
                }
            };
        let core = SignalingCore::new(
            registry,
            bus,
            host,
            SignalingLimits {
                max_peers: config.limits.max_peers,
                max_sdp_bytes: config.limits.max_sdp_bytes,
                max_ice_candidates: config.limits.max_ice_candidates,
                requests: RequestLimits {
                    rate: config.limits.signaling_rate,
                    burst: config.limits.signaling_burst,
                    max_message_bytes: config.limits.max_message_bytes,
                },
                resume_grace: config.limits.resume_grace,
                first_message_timeout: config.limits.first_message_timeout,
                keep_peers_on_shutdown: config.mode == Mode::Frontend,
                max_room_participants: config.limits.max_room_participants,
            },
            access(config)?,
        );
        Ok(Self {
            grpc_listener,
            http_listener,
            core,
            sessions,
            events,
            stop,
            origins: OriginPolicy::from_flag(non_empty(&config.allowed_origins)),
            tls,
            http2: Http2Bounds {
                keepalive_interval: Some(config.limits.grpc_keepalive_interval)
                    .filter(|d| !d.is_zero()),
                keepalive_timeout: config.limits.grpc_keepalive_timeout,
                max_streams: config.limits.grpc_max_streams,
            },
            admission: Admission::from_limits(&config.limits),
        })
    }

    pub fn grpc_address(&self) -> Option<SocketAddr> {
        self.grpc_listener.local_addr().ok()
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    /// The in-process session manager (for inspection: counts, leak probes); `None` on a
    /// frontend, whose sessions live on workers.
    pub fn sessions(&self) -> Option<Arc<SessionManager>> {
        self.sessions.clone()
    }

    /// The shared ICE UDP socket's address, when `--udp-port` is set.
    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.sessions.as_ref()?.udp_address()
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
        let stop = self.stop.clone();
        let readiness = Readiness::default();
        let forwarder = tokio::spawn(Arc::clone(&self.core).forward_session_events(self.events));
        let sweeper = tokio::spawn(Arc::clone(&self.core).expire_detached_peers(stop.clone()));

        let websocket = WebSocketSignaling::new(Arc::clone(&self.core), self.origins, stop.clone())
            .with_admission(Arc::clone(&self.admission));
        let router = http::router(readiness.clone(), Some(websocket.clone()));
        let incoming = Incoming::spawn(
            self.http_listener,
            self.tls.as_ref().map(|tls| Arc::clone(&tls.http)),
            Arc::clone(&self.admission),
            "http",
            stop.clone(),
        );
        let http = http::serve_admitted(incoming, router, stop.clone());

        let streams = TaskTracker::new();
        let grpc_stop = stop.clone();
        let grpc_shutdown = async move { grpc_stop.cancelled().await };
        let grpc = tonic::transport::Server::builder()
            .http2_keepalive_interval(self.http2.keepalive_interval)
            .http2_keepalive_timeout(Some(self.http2.keepalive_timeout))
            .max_concurrent_streams(self.http2.max_streams)
            .add_service(
                WebRtcSignalingServer::new(
                    GrpcSignaling::new(Arc::clone(&self.core), stop.clone(), streams.clone())
                        .with_admission(Arc::clone(&self.admission)),
                )
                // Above this a request is not read at all: it ends the stream. Up to it, the
                // stream task answers requests above `--max-message-bytes` itself.
                .max_decoding_message_size(self.core.hard_message_bytes()),
            );
        if let Some(tls) = &self.tls {
            Arc::clone(&tls.certificate).watch(tls.reload_every, stop.clone());
        }
        let incoming = Incoming::spawn(
            self.grpc_listener,
            self.tls.as_ref().map(|tls| Arc::clone(&tls.grpc)),
            Arc::clone(&self.admission),
            "signaling",
            stop.clone(),
        );
        let grpc =
            tokio::spawn(grpc.serve_with_incoming_shutdown(incoming.into_stream(), grpc_shutdown));

        readiness.set(true);
        tracing::info!(tls = self.tls.is_some(), "serving");
        shutdown.await;
        tracing::info!("shutting down: closing signaling streams and server peers");
        readiness.set(false);
        stop.cancel();
        // Every stream ends its peer's registration (PeerLeft, offers, Redis records).
        streams.close();
        streams.wait().await;
        websocket.closed().await;
        if let Some(sessions) = &self.sessions {
            sessions.close_all().await;
        }
        let grpc_result = grpc.await;
        let http_result = http.await;
        drop(self.core);
        forwarder.abort();
        sweeper.abort();
        if let Ok(Err(err)) = grpc_result {
            return Err(err.into());
        }
        if let Ok(Err(err)) = http_result {
            return Err(err);
        }
        Ok(())
    }
}

/// The shared signaling state and, in Redis, the connection it uses.
type SharedState = (
    Arc<dyn PeerRegistry>,
    Arc<dyn NotificationBus>,
    Option<(redis::aio::ConnectionManager, Keys)>,
);

/// The peer registry and notification bus: in Redis when `--redis-url` is set (replicas share
/// peers and deliver to each other's clients), else in memory.
async fn shared_state(config: &Config, stop: &CancellationToken) -> Result<SharedState, Error> {
    let Some(url) = &config.redis_url else {
        return Ok((
            Arc::new(InMemoryRegistry::default()),
            Arc::new(InMemoryBus::default()),
            None,
        ));
    };
    let (client, manager) = cluster::connect(url, config.redis_ca_file.as_deref()).await?;
    let keys = Keys::new(config.redis_prefix.clone());
    let registry: Arc<dyn PeerRegistry> = Arc::new(RedisRegistry::new(
        manager.clone(),
        keys.clone(),
        stop.child_token(),
    ));
    let bus = Arc::new(RedisBus::new(
        manager.clone(),
        client,
        keys.clone(),
        Arc::clone(&registry),
        stop.child_token(),
    ));
    tracing::info!(
        url = cluster::redact_url(url),
        prefix = config.redis_prefix,
        "signaling state in Redis"
    );
    Ok((registry, bus, Some((manager, keys))))
}

/// `--auth-secret` and `--turn-secret`, read once at start.
fn access(config: &Config) -> Result<Access, crate::Error> {
    let tokens = config
        .auth
        .secret()
        .map_err(crate::Error::AuthSecret)?
        .map(|secret| TokenVerifier::new(secret.expose()));
    let turn = config
        .turn
        .secret()
        .map_err(crate::Error::AuthSecret)?
        .map(|secret| {
            TurnCredentials::new(
                secret.expose(),
                non_empty(&config.turn.turn_uris)
                    .map(str::to_owned)
                    .collect(),
                config.turn.turn_ttl,
            )
        });
    Ok(Access {
        tokens,
        turn,
        id_takeover: config.limits.id_takeover,
        require_room_claim: config.auth.require_room_claim,
    })
}
