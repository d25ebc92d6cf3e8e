//! `--mode worker`: server peers and pipelines behind the internal worker API. Heartbeats to
//! Redis every 2 s; the server candidates and session ends of its peers go to their clients
//! through the cluster's notification delivery. SIGTERM drains: no new sessions, readiness
//! fails (liveness does not), and the process exits when its sessions end or
//! `--drain-timeout` passes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fence::SessionFence;
use super::keys::Keys;
use super::metrics::metrics;
use super::process_load::CpuMeter;
use super::remote_host::FORGET_SESSION_SCRIPT;
use super::room_span::{RelayApi, RoomSpan};
use super::worker_auth::{AttachToken, RequireToken};
use super::worker_id;
use super::worker_rooms::WorkerRooms;
use super::worker_service::{DrainState, WorkerService};
use super::worker_tls::{worker_endpoint, WorkerTlsClient};
use super::workers::{self, WorkerStatus, HEARTBEAT_INTERVAL};
use super::{RedisBus, RedisRegistry};
use crate::config::{hostname, Config};
use crate::error::Error;
use crate::http::{self, Readiness};
use crate::listener::bind;
use crate::peer::SessionManager;
use crate::proto::worker::media_worker_server::MediaWorkerServer;
use crate::room_relay::RelayEndpoint;
use crate::sessions::session_manager;
use crate::signaling::{
    validate_peer_id, NotificationBus, PeerRegistry, SessionEvent, SessionHost,
};
use crate::tls::{self, ReloadingCertificate};

/// A bound, not yet running, media worker.
pub struct Worker {
    id: String,
    /// This process's nonce in the heartbeat (see `worker_id`).
    instance: String,
    advertised: String,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    sessions: Arc<SessionManager>,
    events: mpsc::Receiver<SessionEvent>,
    redis: redis::aio::ConnectionManager,
    keys: Keys,
    bus: Arc<dyn NotificationBus>,
    capacity: usize,
    drain_timeout: Duration,
    stop: CancellationToken,
    drain: Arc<DrainState>,
    /// `--worker-token` required of every API call.
    token: RequireToken,
    /// `--worker-tls-cert`/`--worker-tls-key`: the API serves TLS only.
    tls: Option<ApiTls>,
    /// `--relay-port`: the relay socket and its advertised address.
    relay: Option<(Arc<RelayEndpoint>, String)>,
    /// The rooms' span over workers: their tracks in the records, links to other workers.
    span: Arc<RoomSpan>,
    /// For the span's pub/sub connection.
    redis_client: redis::Client,
}

/// The worker API's certificate (reloaded when its files change) and configuration.
struct ApiTls {
    certificate: Arc<ReloadingCertificate>,
    config: Arc<rustls::ServerConfig>,
    reload_every: Duration,
}

impl Worker {
    /// Loads the pipelines, binds the internal API, HTTP and the WebRTC stack, and connects to
    /// Redis.
    ///
    /// # Errors
    /// No `--redis-url`, an unreachable Redis, a bad worker id, a broken manifest, a port in use.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or(Error::MissingRedisUrl("worker"))?;
        let id = config
            .cluster
            .worker_id
            .clone()
            .or_else(hostname)
            .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4().simple()));
        validate_peer_id(&id)
            .map_err(|err| Error::Unsupported(format!("worker id {id:?}: {err}")))?;
        let tls = match config.cluster.worker_tls_files() {
            Some(files) => {
                let certificate = ReloadingCertificate::load(files)?;
                Some(ApiTls {
                    config: tls::server_config(Arc::clone(&certificate), tls::ALPN_GRPC)?,
                    certificate,
                    reload_every: config.tls.tls_reload_interval,
                })
            }
            None => None,
        };
        let grpc_listener = bind("worker API", config.grpc_address).await?;
        let http_listener = bind("HTTP", config.http_address).await?;
        let local = grpc_listener.local_addr().map_err(|source| Error::Bind {
            what: "worker API",
            address: config.grpc_address,
            source,
        })?;
        let advertised = config
            .cluster
            .worker_address
            .clone()
            .unwrap_or_else(|| default_advertised_address(local));
        let relay = bind_relay(config, local, &advertised).await?;
        let (sessions, events) = session_manager(config).await?;
        let stop = CancellationToken::new();
        let (client, redis) = super::connect(url, config.redis_ca_file.as_deref()).await?;
        let redis_client = client.clone();
        let keys = Keys::new(config.redis_prefix.clone());
        let registry: Arc<dyn PeerRegistry> = Arc::new(RedisRegistry::new(
            redis.clone(),
            keys.clone(),
            stop.child_token(),
        ));
        let bus: Arc<dyn NotificationBus> = Arc::new(RedisBus::new(
            redis.clone(),
            client,
            keys.clone(),
            registry,
            stop.child_token(),
        ));
        let instance = worker_id::new_instance();
        let claim = WorkerStatus {
            id: id.clone(),
            instance: instance.clone(),
            address: advertised.clone(),
            udp_address: sessions.udp_address().map(|a| a.to_string()),
            relay_address: relay.as_ref().map(|(_, address)| address.clone()),
            capacity: config.cluster.capacity as u32,
            active_sessions: 0,
            cpu_load: 0.0,
            draining: false,
            rooms: 0,
            room_participants: 0,
            // Not ready until it serves: nothing is placed on it before.
            ready: false,
            updated_at_ms: workers::now_ms(),
        };
        worker_id::claim(&mut redis.clone(), &keys, &claim).await?;
        worker_id::end_orphans(&mut redis.clone(), &keys, &bus, &id).await;
        metrics()
            .worker_capacity
            .set(config.cluster.capacity as i64);
        let span = Arc::new(RoomSpan::new(
            id.clone(),
            redis.clone(),
            keys.clone(),
            relay.clone(),
            AttachToken::new(
                config
                    .cluster
                    .worker_token()
                    .map_err(crate::Error::AuthSecret)?
                    .as_ref(),
            )
            .map_err(Error::Unsupported)?,
            WorkerTlsClient::from_config(config)?,
        ));
        sessions.set_room_span(Arc::clone(&span) as Arc<dyn crate::peer::SpanHost>);
        Ok(Self {
            span,
            redis_client,
            id,
            instance,
            advertised,
            grpc_listener,
            http_listener,
            sessions,
            events,
            redis,
            keys,
            bus,
            capacity: config.cluster.capacity,
            drain_timeout: config.cluster.drain_timeout,
            stop,
            drain: Arc::new(DrainState::default()),
            token: RequireToken::new(
                config
                    .cluster
                    .worker_token()
                    .map_err(crate::Error::AuthSecret)?
                    .as_ref(),
            ),
            tls,
            relay,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The internal API address frontends are told.
    pub fn advertised_address(&self) -> &str {
        &self.advertised
    }

    pub fn grpc_address(&self) -> Option<SocketAddr> {
        self.grpc_listener.local_addr().ok()
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listener.local_addr().ok()
    }

    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.sessions.udp_address()
    }

    /// Serves until `shutdown` completes, then drains: no new sessions, exit when the last
    /// session ends or the drain timeout passes (then the rest are closed).
    ///
    /// # Errors
    /// When a listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let readiness = Readiness::default();
        let http = http::serve(
            self.http_listener,
            http::router(readiness.clone(), None),
            self.stop.clone(),
        );

        let host = Arc::clone(&self.sessions) as Arc<dyn SessionHost>;
        let fence = Arc::new(SessionFence::new(
            self.redis.clone(),
            self.keys.clone(),
            self.id.clone(),
        ));
        let rooms = Arc::new(WorkerRooms::new(
            self.redis.clone(),
            self.keys.clone(),
            self.id.clone(),
        ));
        let grpc_stop = self.stop.clone();
        let grpc_shutdown = async move { grpc_stop.cancelled().await };
        let grpc =
            tonic::transport::Server::builder().add_service(MediaWorkerServer::with_interceptor(
                WorkerService::new(
                    host,
                    Arc::clone(&self.drain),
                    Arc::clone(&fence),
                    Arc::clone(&rooms),
                    self.relay.as_ref().map(|(endpoint, _)| RelayApi {
                        endpoint: Arc::clone(endpoint),
                        sessions: Arc::clone(&self.sessions),
                    }),
                ),
                self.token,
            ));
        let grpc = match self.tls {
            Some(tls) => {
                Arc::clone(&tls.certificate).watch(tls.reload_every, self.stop.clone());
                let incoming = crate::admission::Incoming::spawn(
                    self.grpc_listener,
                    Some(tls.config),
                    crate::admission::Admission::open(),
                    "worker_api",
                    self.stop.clone(),
                );
                tokio::spawn(
                    grpc.serve_with_incoming_shutdown(incoming.into_stream(), grpc_shutdown),
                )
            }
            None => tokio::spawn(grpc.serve_with_incoming_shutdown(
                crate::http::nodelay_incoming(self.grpc_listener),
                grpc_shutdown,
            )),
        };

        let lost_id = CancellationToken::new();
        let heartbeat = Heartbeat {
            id: self.id.clone(),
            instance: self.instance.clone(),
            lost_id: lost_id.clone(),
            address: self.advertised.clone(),
            udp_address: self.sessions.udp_address().map(|a| a.to_string()),
            relay_address: self.relay.as_ref().map(|(_, address)| address.clone()),
            capacity: self.capacity,
            sessions: Arc::clone(&self.sessions),
            drain: Arc::clone(&self.drain),
            rooms: Arc::clone(&rooms),
            redis: self.redis.clone(),
            keys: self.keys.clone(),
        };
        let heartbeats = tokio::spawn(heartbeat.clone().run(self.stop.clone()));
        tokio::spawn(
            Arc::clone(&self.span).run(self.redis_client.clone(), self.stop.child_token()),
        );
        let events = tokio::spawn(deliver_events(
            self.events,
            Arc::clone(&self.bus),
            fence,
            rooms,
            self.redis.clone(),
            self.keys.clone(),
            self.id.clone(),
            self.stop.clone(),
        ));

        readiness.set(true);
        tracing::info!(
            worker_id = self.id,
            address = self.advertised,
            "worker serving"
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = lost_id.cancelled() => {
                    // Another process holds the id now (this one's record expired, e.g. Redis
                    // was out of reach): its sessions are that process's business; stop at once.
                    self.drain.start_final();
                    readiness.set(false);
                    self.sessions.close_all().await;
                    self.stop.cancel();
                    heartbeats.abort();
                    let _ = events.await;
                    return Err(Error::Unsupported(format!(
                        "worker id {:?} was taken over by another process; this one stops",
                        self.id
                    )));
                }
                () = self.drain.started() => {
                    // A drain request: take nothing new and stay up; the pod is evicted next
                    // (its SIGTERM waits for the sessions as below), or the drain is undone.
                    readiness.set(false);
                    heartbeat.beat().await;
                    tracing::info!(worker_id = self.id, "draining on request: no new sessions");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = self.drain.ended() => {
                            readiness.set(true);
                            heartbeat.beat().await;
                            tracing::info!(worker_id = self.id, "drain undone: taking sessions again");
                        }
                    }
                }
            }
        }
        self.drain.start_final();
        readiness.set(false);
        heartbeat.beat().await;
        let active = self.sessions.session_count();
        tracing::info!(active, timeout = ?self.drain_timeout, "draining: waiting for sessions to end");
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while self.sessions.session_count() > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = self.sessions.session_count(),
                "drain timeout: closing the remaining sessions"
            );
        }
        self.sessions.close_all().await;
        if let Err(err) = workers::remove_heartbeat(
            &mut self.redis.clone(),
            &self.keys,
            &self.id,
            &self.instance,
        )
        .await
        {
            tracing::warn!(%err, "removing the heartbeat failed; it expires on its own");
        }
        self.stop.cancel();
        let _ = events.await;
        heartbeats.abort();
        let grpc_result = grpc.await;
        let http_result = http.await;
        if let Ok(Err(err)) = grpc_result {
            return Err(err.into());
        }
        if let Ok(Err(err)) = http_result {
            return Err(err);
        }
        Ok(())
    }
}

/// Asks the worker whose internal API is at `api` (`host:port`) to drain, as a pod's preStop
/// hook does (`webrtc_server drain`) and the autoscaler before it evicts a worker: it takes no
/// new sessions and fails readiness, and keeps its calls until SIGTERM's drain ends them.
/// Returns its active sessions.
///
/// # Errors
/// `Drain` when the worker cannot be reached or refuses.
pub async fn request_drain(
    api: &str,
    token: AttachToken,
    tls: Option<&WorkerTlsClient>,
) -> Result<u32, Error> {
    drain_call(api, token, tls, true).await
}

/// Undoes [`request_drain`] (the autoscaler abandoned a scale-down): the worker takes sessions
/// again. Returns its active sessions.
///
/// # Errors
/// `Drain` when the worker cannot be reached, or refuses because it is stopping.
pub async fn request_undrain(
    api: &str,
    token: AttachToken,
    tls: Option<&WorkerTlsClient>,
) -> Result<u32, Error> {
    drain_call(api, token, tls, false).await
}

/// [`request_drain`] (`drain`) or [`request_undrain`]: the worker's active sessions after it.
async fn drain_call(
    api: &str,
    token: AttachToken,
    tls: Option<&WorkerTlsClient>,
    drain: bool,
) -> Result<u32, Error> {
    let failed = |err: &dyn std::fmt::Display| Error::Drain(format!("{api}: {err}"));
    let mut client = worker_client(api, token, tls)
        .await
        .map_err(|e| failed(&e))?;
    let active_sessions = if drain {
        client
            .drain(crate::proto::worker::DrainRequest {})
            .await
            .map(|response| response.into_inner().active_sessions)
    } else {
        client
            .undrain(crate::proto::worker::UndrainRequest {})
            .await
            .map(|response| response.into_inner().active_sessions)
    };
    active_sessions.map_err(|e| failed(&e))
}

type WorkerClient = crate::proto::worker::media_worker_client::MediaWorkerClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
>;

/// A client of one worker's API, every call bounded to 5 s.
async fn worker_client(
    api: &str,
    token: AttachToken,
    tls: Option<&WorkerTlsClient>,
) -> Result<WorkerClient, Box<dyn std::error::Error + Send + Sync>> {
    let channel = worker_endpoint(api, tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(
        crate::proto::worker::media_worker_client::MediaWorkerClient::with_interceptor(
            channel, token,
        ),
    )
}

/// The internal API of the worker this configuration describes, seen from its own host:
/// `--grpc-address` with 127.0.0.1 in place of an unspecified address.
pub fn local_api_address(config: &Config) -> String {
    let mut address = config.grpc_address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    address.to_string()
}

/// `host:port` frontends can reach: the listen address when it names one, else this host.
fn default_advertised_address(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let host = hostname().unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", local.port())
    } else {
        local.to_string()
    }
}

/// Writes the worker's status to Redis every [`HEARTBEAT_INTERVAL`]. Failures are logged and
/// counted, never fatal: liveness does not depend on Redis.
#[derive(Clone)]
struct Heartbeat {
    id: String,
    instance: String,
    /// Cancelled when another instance holds the id (a write was refused).
    lost_id: CancellationToken,
    address: String,
    udp_address: Option<String>,
    relay_address: Option<String>,
    capacity: usize,
    sessions: Arc<SessionManager>,
    drain: Arc<DrainState>,
    /// The rooms hosted here: counted in the heartbeat, their records kept alive.
    rooms: Arc<WorkerRooms>,
    redis: redis::aio::ConnectionManager,
    keys: Keys,
}

impl Heartbeat {
    async fn run(self, stop: CancellationToken) {
        let mut cpu = CpuMeter::for_self();
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(load) = cpu.machine_share() {
                metrics().worker_cpu_load.set(load);
            }
            self.beat().await;
        }
    }

    async fn beat(&self) {
        let requested: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(self.keys.drain(&self.id))
            .query_async(&mut self.redis.clone())
            .await;
        if matches!(requested, Ok(true)) && !self.drain.start() {
            tracing::info!(
                worker_id = self.id,
                "the controller asked this worker to drain"
            );
        }
        self.rooms.refresh().await;
        let (rooms, room_participants) = self.rooms.counts();
        let status = WorkerStatus {
            id: self.id.clone(),
            instance: self.instance.clone(),
            address: self.address.clone(),
            udp_address: self.udp_address.clone(),
            relay_address: self.relay_address.clone(),
            capacity: self.capacity as u32,
            active_sessions: self.sessions.session_count() as u32,
            cpu_load: metrics().worker_cpu_load.get(),
            draining: self.drain.is_draining(),
            rooms: rooms as u32,
            room_participants: room_participants as u32,
            ready: true,
            updated_at_ms: workers::now_ms(),
        };
        match workers::write_heartbeat(&mut self.redis.clone(), &self.keys, &status, None).await {
            Ok(None) => {}
            Ok(Some(holder)) => {
                tracing::error!(
                    worker_id = self.id,
                    holder_address = holder.address,
                    "another process holds this worker id now"
                );
                self.lost_id.cancel();
            }
            Err(err) => {
                metrics()
                    .redis_errors
                    .with_label_values(&["heartbeat"])
                    .inc();
                tracing::warn!(%err, "heartbeat to Redis failed");
            }
        }
    }
}

/// Sends what the worker's sessions report to their clients, only while the cluster still
/// places each session here (see `fence.rs`); a session the worker ended is also forgotten in
/// Redis. After `stop`, delivers what is already queued and returns.
#[allow(clippy::too_many_arguments)] // the worker's parts, each used here
async fn deliver_events(
    mut events: mpsc::Receiver<SessionEvent>,
    bus: Arc<dyn NotificationBus>,
    fence: Arc<SessionFence>,
    rooms: Arc<WorkerRooms>,
    redis: redis::aio::ConnectionManager,
    keys: Keys,
    worker_id: String,
    stop: CancellationToken,
) {
    let handle = |event: SessionEvent| {
        let (bus, fence, rooms, mut redis, keys, worker_id) = (
            Arc::clone(&bus),
            Arc::clone(&fence),
            Arc::clone(&rooms),
            redis.clone(),
            keys.clone(),
            worker_id.clone(),
        );
        async move {
            // Published before the record is forgotten: the fence compares against it.
            let closed = match &event {
                SessionEvent::Closed { peer_id, .. } => Some(peer_id.clone()),
                SessionEvent::LocalCandidate { .. } | SessionEvent::ServerOffer { .. } => None,
            };
            fence.publish(bus.as_ref(), event).await;
            if let Some(peer_id) = &closed {
                rooms.leave(peer_id).await;
                let token = fence.token(peer_id);
                fence.end(peer_id, token.as_deref());
                let forgotten = redis::Script::new(FORGET_SESSION_SCRIPT)
                    .key(keys.session(peer_id))
                    .key(keys.worker_sessions(&worker_id))
                    .arg(&worker_id)
                    .arg(peer_id)
                    .arg(token.unwrap_or_default())
                    .invoke_async::<i64>(&mut redis)
                    .await;
                if let Err(err) = forgotten {
                    metrics()
                        .redis_errors
                        .with_label_values(&["forget_session"])
                        .inc();
                    tracing::warn!(%err, peer_id, "forgetting a closed session failed");
                }
            }
        }
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(event) => handle(event).await,
                None => return,
            },
        }
    }
    while let Ok(event) = events.try_recv() {
        handle(event).await;
    }
}

/// Binds the relay socket of `--relay-port` on the API's IP; its advertised address is the
/// advertised API host with that port. The links' keys cross the worker API: without its TLS
/// the worker refuses to relay, unless `--insecure-relay`.
async fn bind_relay(
    config: &Config,
    api: SocketAddr,
    advertised: &str,
) -> Result<Option<(Arc<RelayEndpoint>, String)>, Error> {
    let Some(port) = config.cluster.relay_port else {
        return Ok(None);
    };
    if config.cluster.worker_tls_cert.is_none() && !config.cluster.insecure_relay {
        return Err(Error::Unsupported(
            "--relay-port: the relay links' keys cross the worker API, which then needs \
             --worker-tls-cert (or --insecure-relay, for a test)"
                .into(),
        ));
    }
    let address = SocketAddr::new(api.ip(), port);
    let relay = RelayEndpoint::bind(address)
        .await
        .map_err(|err| Error::Unsupported(format!("--relay-port {port}: {err}")))?;
    let bound = relay
        .local_addr()
        .map_err(|err| Error::Unsupported(format!("--relay-port {port}: {err}")))?;
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(host, _)| host);
    let advertised = format!("{host}:{}", bound.port());
    tracing::info!(relay = advertised, "relay socket bound");
    Ok(Some((Arc::new(relay), advertised)))
}
