//! The frontend's session host: server sessions live on media workers, reached through the
//! internal worker API. Placement picks the worker; Redis remembers which worker holds each
//! peer's session, so any frontend replica routes that peer's candidates and closes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{field, info_span, Instrument};

use super::worker_auth::AttachToken;
use super::worker_tls::{worker_endpoint, WorkerTlsClient};

use super::fence;
use super::keys::Keys;
use super::metrics::metrics;
use super::placement::{self, RecentPlacements};
use super::redis_error;
use super::room_record;
use super::workers::{self, WorkerStatus};
use crate::proto::worker::{
    self as pb, create_session_response, media_worker_client::MediaWorkerClient,
    session_failure::Kind,
};
use crate::signaling::{IceCandidate, SessionError, SessionEvent, SessionHost, SessionRequest};
use crate::telemetry::inject_current;

/// How often the frontend re-reads the placement table and heartbeats.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// A worker that failed a call is skipped this long (unless nothing else is left).
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Workers tried for one offer before giving up.
const ATTEMPTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reaps the sessions of a dead worker exactly once across every frontend: removes each
/// `session:<peer>` that still names the worker and returns those peers.
const REAP_SCRIPT: &str = r"
local peers = redis.call('SMEMBERS', KEYS[1])
local reaped = {}
for _, peer in ipairs(peers) do
  local key = ARGV[2] .. peer
  local held = redis.call('GET', key)
  if held == ARGV[1] or (held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. '/') then
    redis.call('DEL', key)
    table.insert(reaped, peer)
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return reaped
";

/// Removes `session:<peer>` only if it still names this worker (a newer session elsewhere
/// stays): any of its sessions, or only the one of token ARGV[3] when that is not empty (see
/// `fence.rs`); and the peer from the worker's set.
pub(crate) const FORGET_SESSION_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
local ours = held == ARGV[1]
if held and not ours then
  if ARGV[3] == '' then
    ours = string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. '/'
  else
    ours = held == ARGV[1] .. '/' .. ARGV[3]
  end
end
if ours then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

mod rooms;

/// [`SessionHost`] backed by the cluster's media workers.
pub struct RemoteSessionHost {
    redis: ConnectionManager,
    keys: Keys,
    /// Workers sessions may be placed on, refreshed every [`REFRESH_INTERVAL`]: the
    /// controller's table (only workers taking new sessions) or else the heartbeats.
    workers: Arc<RwLock<Vec<WorkerStatus>>>,
    /// Every live worker by id, from the heartbeats, full and draining ones included: where
    /// the sessions they already hold are reached.
    live: RwLock<HashMap<String, WorkerStatus>>,
    recent: RecentPlacements,
    suspects: Mutex<HashMap<String, Instant>>,
    clients: Mutex<HashMap<String, WorkerClient>>,
    /// `--worker-token` on every call.
    token: AttachToken,
    /// `--worker-ca`: workers are dialled over TLS.
    tls: Option<WorkerTlsClient>,
    /// `--worker-call-timeout`: longest a worker call may take.
    call_timeout: Duration,
    /// `--room-span-workers`: a room whose workers refuse a newcomer spills onto another
    /// worker; off, the refusal reaches the client (rooms.rs).
    span_rooms: bool,
}

/// A worker API client that signs its calls.
type WorkerClient = MediaWorkerClient<InterceptedService<Channel, AttachToken>>;

impl RemoteSessionHost {
    /// A host on the cluster in `redis`. Reports sessions lost with a dead worker on `events`.
    /// Refreshes its view of the workers until `stop` fires.
    #[allow(clippy::too_many_arguments)] // the frontend's cluster settings, each stored
    pub async fn new(
        redis: ConnectionManager,
        keys: Keys,
        events: mpsc::Sender<SessionEvent>,
        token: AttachToken,
        tls: Option<WorkerTlsClient>,
        call_timeout: Duration,
        span_rooms: bool,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let host = Arc::new(Self {
            token,
            tls,
            call_timeout,
            span_rooms,
            redis,
            keys,
            workers: Arc::new(RwLock::new(Vec::new())),
            live: RwLock::new(HashMap::new()),
            recent: RecentPlacements::default(),
            suspects: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        });
        host.refresh(&events).await;
        tokio::spawn(Arc::clone(&host).refresh_loop(events, stop));
        host
    }

    async fn refresh_loop(
        self: Arc<Self>,
        events: mpsc::Sender<SessionEvent>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.refresh(&events).await,
            }
        }
    }

    /// Re-reads the workers: the controller's table while it is fresh, else the heartbeats.
    /// Sessions of workers whose heartbeat expired are reaped and reported closed.
    async fn refresh(&self, events: &mpsc::Sender<SessionEvent>) {
        let mut redis = self.redis.clone();
        let now = workers::now_ms();
        let (live, dead) = match workers::read_heartbeats(&mut redis, &self.keys).await {
            Ok(found) => found,
            Err(err) => {
                redis_error("read_heartbeats", &err);
                return;
            }
        };
        let table = workers::read_table(&mut redis, &self.keys)
            .await
            .unwrap_or_else(|err| {
                redis_error("read_table", &err);
                None
            })
            .filter(|table| table.is_fresh(now));
        let live: HashMap<String, WorkerStatus> = live
            .into_iter()
            .filter(|w| w.is_fresh(now))
            .map(|w| (w.id.clone(), w))
            .collect();
        let candidates: Vec<WorkerStatus> = match table {
            Some(table) => table.workers,
            None => live.values().cloned().collect(),
        }
        .into_iter()
        .filter(|w| w.is_fresh(now))
        .collect();
        metrics()
            .workers_available
            .set(candidates.iter().filter(|w| w.takes_sessions(now)).count() as i64);
        *self.workers.write() = candidates;
        *self.live.write() = live;
        for worker_id in dead {
            self.reap(&worker_id, events).await;
        }
    }

    /// Ends the sessions a dead worker held: their clients learn it from `remotemedia-server`.
    /// It leaves its rooms' records first, so that their participants' rejoins go to the
    /// rooms' other workers, or place the rooms again.
    async fn reap(&self, worker_id: &str, events: &mpsc::Sender<SessionEvent>) {
        match room_record::reap(&mut self.redis.clone(), &self.keys, worker_id).await {
            Ok(rooms) if !rooms.is_empty() => {
                tracing::warn!(
                    worker_id,
                    ?rooms,
                    "worker lost: it leaves its rooms' records"
                );
            }
            Ok(_) => {}
            Err(err) => redis_error("room_reap", &err),
        }
        let reaped: Vec<String> = match redis::Script::new(REAP_SCRIPT)
            .key(self.keys.worker_sessions(worker_id))
            .key(self.keys.known_workers())
            .arg(worker_id)
            .arg(self.keys.session(""))
            .invoke_async(&mut self.redis.clone())
            .await
        {
            Ok(reaped) => reaped,
            Err(err) => return redis_error("reap", &err),
        };
        if !reaped.is_empty() {
            tracing::warn!(
                worker_id,
                sessions = reaped.len(),
                "worker lost: its sessions end"
            );
        }
        for peer_id in reaped {
            let _ = events
                .send(SessionEvent::Closed {
                    peer_id,
                    reason: format!("media worker {worker_id} stopped answering"),
                })
                .await;
        }
    }

    fn client(&self, address: &str) -> Result<WorkerClient, SessionError> {
        if let Some(client) = self.clients.lock().get(address) {
            return Ok(client.clone());
        }
        let endpoint = worker_endpoint(address, self.tls.as_ref())
            .map_err(|err| SessionError::Unavailable(format!("worker address {address:?}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.call_timeout)
            .tcp_nodelay(true);
        let client =
            MediaWorkerClient::with_interceptor(endpoint.connect_lazy(), self.token.clone());
        self.clients
            .lock()
            .insert(address.to_owned(), client.clone());
        Ok(client)
    }

    /// The worker holding `peer_id`'s session, from Redis.
    async fn session_worker(&self, peer_id: &str) -> Result<Option<String>, SessionError> {
        Ok(self
            .session_record(peer_id)
            .await?
            .map(|record| fence::worker_of(&record).to_owned()))
    }

    /// `session:<peer_id>`: `<worker>/<token>` (see `fence.rs`).
    async fn session_record(&self, peer_id: &str) -> Result<Option<String>, SessionError> {
        redis::cmd("GET")
            .arg(self.keys.session(peer_id))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|err| redis_unavailable("get_session", &err))
    }

    /// Why no worker could be picked: all full (RESOURCE_EXHAUSTED, a `sessions` limit hit
    /// of this frontend; a worker counts the refusals it makes itself) or none usable
    /// (UNAVAILABLE).
    fn none_available(&self) -> SessionError {
        let now = workers::now_ms();
        // The heartbeats, not the table: the table leaves full workers out.
        let workers = self.live.read();
        let open: Vec<&WorkerStatus> = workers
            .values()
            .filter(|w| w.is_fresh(now) && w.ready && !w.draining)
            .collect();
        if open.is_empty() {
            return SessionError::Unavailable(format!(
                "{} media worker(s) known, none ready and taking sessions",
                workers.len()
            ));
        }
        crate::metrics::limit_hit(crate::metrics::Limit::Sessions, 1);
        SessionError::AtCapacity(open.iter().map(|w| w.capacity as usize).sum())
    }

    /// Where a worker that holds sessions is reached: its heartbeat, whether or not it takes
    /// new sessions (a full or draining worker is not in the placement table, but its calls
    /// still need their candidates and closes).
    fn address_of(&self, worker_id: &str) -> Option<String> {
        self.live.read().get(worker_id).map(|w| w.address.clone())
    }

    /// Picks a worker, in a `placement` span that says from how many and why this one.
    fn pick(&self, excluded: &HashSet<String>, attempt: usize) -> Option<WorkerStatus> {
        let span = info_span!(
            "placement",
            attempt,
            known = field::Empty,
            candidates = field::Empty,
            worker_id = field::Empty,
            reason = field::Empty,
            load = field::Empty,
            other_worker = field::Empty,
            other_load = field::Empty,
        );
        let _placing = span.enter();
        let now = Instant::now();
        let recent = self.recent.counts(now);
        let mut skip = excluded.clone();
        self.suspects.lock().retain(|id, since| {
            let suspect = now.duration_since(*since) < SUSPECT_FOR;
            if suspect {
                skip.insert(id.clone());
            }
            suspect
        });
        let workers = self.workers.read();
        span.record("known", workers.len());
        let now_ms = workers::now_ms();
        let mut rng = rand::rng();
        let Some(choice) = placement::choose(&workers, &recent, &skip, now_ms, &mut rng)
            // Suspects are a hint: when nothing else is left, try them again.
            .or_else(|| placement::choose(&workers, &recent, excluded, now_ms, &mut rng))
        else {
            span.record("candidates", 0);
            span.record("reason", "no worker can take it");
            return None;
        };
        span.record("candidates", choice.candidates);
        span.record("worker_id", choice.worker.id.as_str());
        span.record("reason", choice.reason.describe());
        span.record("load", choice.load);
        if let Some((other, load)) = choice.other {
            span.record("other_worker", other.id.as_str());
            span.record("other_load", load);
        }
        Some(choice.worker.clone())
    }

    /// Records that `worker_id` holds `peer_id`'s session of `token`, before the worker is
    /// asked to create it: the worker publishes the session's events only while this record
    /// stands, so an attempt given up on (and overwritten by the next) stays silent.
    async fn claim(&self, peer_id: &str, worker_id: &str, token: &str) -> Result<(), SessionError> {
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.keys.session(peer_id))
            .arg(fence::record(worker_id, token))
            .ignore()
            .cmd("SADD")
            .arg(self.keys.worker_sessions(worker_id))
            .arg(peer_id)
            .ignore()
            .query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(|err| redis_unavailable("remember_session", &err))
    }

    /// Removes the record of `peer_id`'s session on `worker_id` (of `token`; empty: any).
    async fn forget(&self, peer_id: &str, worker_id: &str, token: &str) {
        if let Err(err) = redis::Script::new(FORGET_SESSION_SCRIPT)
            .key(self.keys.session(peer_id))
            .key(self.keys.worker_sessions(worker_id))
            .arg(worker_id)
            .arg(peer_id)
            .arg(token)
            .invoke_async::<i64>(&mut self.redis.clone())
            .await
        {
            redis_error("forget_session", &err);
        }
    }
}

#[async_trait]
impl SessionHost for RemoteSessionHost {
    async fn create_session(&self, request: SessionRequest) -> Result<String, SessionError> {
        if let Some(room) = request.room.clone() {
            return self.create_in_room(request, &room).await;
        }
        // A re-offer replaces the old session, wherever it runs.
        if self.session_worker(&request.peer_id).await?.is_some() {
            self.close_session(&request.peer_id).await;
        }
        let mut excluded = HashSet::new();
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            let Some(worker) = self.pick(&excluded, attempt) else {
                break;
            };
            match self.attempt(&worker, &request, None).await? {
                Attempt::Answer(answer) => return Ok(answer),
                Attempt::Failed { error, kind } => {
                    // Unreachable, full or leaving: another worker may take it.
                    if !matches!(kind, Some(Kind::AtCapacity | Kind::Draining) | None) {
                        return Err(error);
                    }
                    excluded.insert(worker.id.clone());
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.none_available()))
    }

    async fn add_candidate(
        &self,
        peer_id: &str,
        candidate: IceCandidate,
    ) -> Result<(), SessionError> {
        let (worker_id, mut client) = self.session_client(peer_id).await?;
        let mut call = tonic::Request::new(pb::AddCandidateRequest {
            peer_id: peer_id.to_owned(),
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
        });
        inject_current(call.metadata_mut());
        let reply = client
            .add_candidate(call)
            .await
            .map_err(|status| unreachable_worker(&worker_id, &status))?;
        failure_result(reply.into_inner().failure, peer_id)
    }

    async fn answer_server_offer(
        &self,
        peer_id: &str,
        offer_id: Option<&str>,
        sdp: String,
    ) -> Result<(), SessionError> {
        let (worker_id, mut client) =
            self.session_client(peer_id)
                .await
                .map_err(|err| match err {
                    // No session: nothing can be pending.
                    SessionError::NoSession(_) => {
                        SessionError::FailedPrecondition("no server offer is pending".into())
                    }
                    other => other,
                })?;
        let mut call = tonic::Request::new(pb::AnswerServerOfferRequest {
            peer_id: peer_id.to_owned(),
            offer_id: offer_id.unwrap_or_default().to_owned(),
            answer_sdp: sdp,
        });
        inject_current(call.metadata_mut());
        let reply = client
            .answer_server_offer(call)
            .await
            .map_err(|status| unreachable_worker(&worker_id, &status))?;
        failure_result(reply.into_inner().failure, peer_id)
    }

    async fn stream_detached(&self, peer_id: &str) {
        self.set_stream_detached(peer_id, true).await;
    }

    async fn stream_resumed(&self, peer_id: &str) {
        self.set_stream_detached(peer_id, false).await;
    }

    async fn close_session(&self, peer_id: &str) -> bool {
        let record = match self.session_record(peer_id).await {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => return false,
        };
        let worker_id = fence::worker_of(&record);
        let token = record.split_once('/').map_or("", |(_, token)| token);
        self.forget(peer_id, worker_id, token).await;
        match self.address_of(worker_id) {
            Some(address) => self.close_on(&address, peer_id, token).await,
            None => false,
        }
    }

    fn session_count(&self) -> usize {
        self.live
            .read()
            .values()
            .map(|w| w.active_sessions as usize)
            .sum()
    }
}

impl RemoteSessionHost {
    /// The worker holding `peer_id`'s session, and a client for it.
    ///
    /// # Errors
    /// `NoSession` when none is recorded or its worker is gone; `Unavailable` when Redis is.
    async fn session_client(&self, peer_id: &str) -> Result<(String, WorkerClient), SessionError> {
        let Some(worker_id) = self.session_worker(peer_id).await? else {
            return Err(SessionError::NoSession(peer_id.to_owned()));
        };
        let Some(address) = self.address_of(&worker_id) else {
            return Err(SessionError::NoSession(peer_id.to_owned()));
        };
        let client = self.client(&address)?;
        Ok((worker_id, client))
    }

    /// Tells `peer_id`'s worker that its client's stream broke or came back. A session not
    /// found, or a worker that does not answer, is logged: the session's own timers decide.
    async fn set_stream_detached(&self, peer_id: &str, detached: bool) {
        let result = match self.session_client(peer_id).await {
            Ok((_, mut client)) => {
                let mut call = tonic::Request::new(pb::SetStreamDetachedRequest {
                    peer_id: peer_id.to_owned(),
                    detached,
                });
                inject_current(call.metadata_mut());
                client
                    .set_stream_detached(call)
                    .await
                    .map(drop)
                    .map_err(|status| status.message().to_owned())
            }
            Err(SessionError::NoSession(_)) => Ok(()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = result {
            tracing::warn!(peer_id, detached, %err, "telling the worker of a detached stream failed");
        }
    }

    /// Closes `peer_id`'s session of `token` (empty: whichever it has) on the worker at
    /// `address`.
    async fn close_on(&self, address: &str, peer_id: &str, token: &str) -> bool {
        let Ok(mut client) = self.client(address) else {
            return false;
        };
        let mut call = tonic::Request::new(pb::CloseSessionRequest {
            peer_id: peer_id.to_owned(),
            session_token: token.to_owned(),
        });
        inject_current(call.metadata_mut());
        match client.close_session(call).await {
            Ok(reply) => reply.into_inner().existed,
            Err(status) => {
                tracing::warn!(peer_id, address, %status, "closing a session on its worker failed");
                false
            }
        }
    }
}

/// How one worker took a session request.
enum Attempt {
    Answer(String),
    /// `kind`: the worker's refusal; `None`: the call itself failed (the worker is suspect).
    Failed {
        error: SessionError,
        kind: Option<Kind>,
    },
}

impl RemoteSessionHost {
    /// Asks `worker` for `request`'s session (in `room` at its record's version, if any):
    /// records it in Redis first (the fence), and forgets it again if the worker fails.
    ///
    /// # Errors
    /// Redis unavailable, or an empty reply (the caller tries no other worker then).
    async fn attempt(
        &self,
        worker: &WorkerStatus,
        request: &SessionRequest,
        room: Option<(&str, u64)>,
    ) -> Result<Attempt, SessionError> {
        let mut client = self.client(&worker.address)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.claim(&request.peer_id, &worker.id, &token).await?;
        let call = pb::CreateSessionRequest {
            peer_id: request.peer_id.clone(),
            offer_sdp: request.offer_sdp.clone(),
            manifest: request.manifest.clone().unwrap_or_default(),
            offer_id: request.offer_id.clone(),
            session_token: token.clone(),
            room: room.map(|(room, _)| room.to_owned()).unwrap_or_default(),
            room_version: room.map_or(0, |(_, version)| version),
            room_manifest: request.room_manifest.clone().unwrap_or_default(),
        };
        let span = info_span!(
            "worker_api.create_session",
            otel.kind = "client",
            worker_id = worker.id,
            peer_id = request.peer_id,
            offer_id = request.offer_id,
            room = room.map_or("", |(room, _)| room),
        );
        let reply = async {
            let mut call = tonic::Request::new(call);
            inject_current(call.metadata_mut());
            client.create_session(call).await
        }
        .instrument(span)
        .await;
        let reply = match reply {
            Ok(reply) => reply.into_inner().result,
            Err(status) => {
                tracing::warn!(worker_id = worker.id, %status, "worker call failed");
                self.suspects
                    .lock()
                    .insert(worker.id.clone(), Instant::now());
                // It may still create the session (a slow worker past the timeout): the
                // record no longer names it, and it is told to close what it made.
                self.forget(&request.peer_id, &worker.id, &token).await;
                self.close_abandoned(worker, &request.peer_id, token);
                return Ok(Attempt::Failed {
                    error: SessionError::Unavailable(format!(
                        "media worker {} failed: {}",
                        worker.id,
                        status.message()
                    )),
                    kind: None,
                });
            }
        };
        match reply {
            Some(create_session_response::Result::AnswerSdp(answer)) => {
                self.recent.record(&worker.id, Instant::now());
                metrics()
                    .placements
                    .with_label_values(&[worker.id.as_str()])
                    .inc();
                tracing::debug!(
                    peer_id = request.peer_id,
                    worker_id = worker.id,
                    "session placed"
                );
                Ok(Attempt::Answer(answer))
            }
            Some(create_session_response::Result::Failure(failure)) => {
                self.forget(&request.peer_id, &worker.id, &token).await;
                Ok(Attempt::Failed {
                    error: failure_to_error(&failure, &request.peer_id),
                    kind: Some(failure.kind()),
                })
            }
            None => {
                self.forget(&request.peer_id, &worker.id, &token).await;
                self.close_abandoned(worker, &request.peer_id, token);
                Err(SessionError::Internal(format!(
                    "media worker {} sent an empty reply",
                    worker.id
                )))
            }
        }
    }
}

impl RemoteSessionHost {
    /// Tells `worker` to close the session of `token` this frontend gave up on, in the
    /// background: a worker slow enough to time out must not hold up the next attempt.
    fn close_abandoned(&self, worker: &WorkerStatus, peer_id: &str, token: String) {
        let Ok(mut client) = self.client(&worker.address) else {
            return;
        };
        let worker_id = worker.id.clone();
        let mut call = tonic::Request::new(pb::CloseSessionRequest {
            peer_id: peer_id.to_owned(),
            session_token: token,
        });
        inject_current(call.metadata_mut());
        let peer_id = peer_id.to_owned();
        tokio::spawn(async move {
            match client.close_session(call).await {
                Ok(reply) => tracing::info!(
                    peer_id,
                    worker_id,
                    existed = reply.into_inner().existed,
                    "abandoned session attempt closed"
                ),
                // The worker ends it itself once it sees the record gone (fence.rs).
                Err(status) => tracing::warn!(
                    peer_id,
                    worker_id,
                    %status,
                    "closing an abandoned session attempt failed"
                ),
            }
        });
    }
}

/// A worker's failure as the session error signaling maps to its codes.
/// A worker call that failed at the transport (no reply): the worker is unavailable.
fn unreachable_worker(worker_id: &str, status: &tonic::Status) -> SessionError {
    SessionError::Unavailable(format!("media worker {worker_id}: {}", status.message()))
}

/// A worker reply's `failure` (unset: the call succeeded) as the frontend's result.
fn failure_result(failure: Option<pb::SessionFailure>, peer_id: &str) -> Result<(), SessionError> {
    match failure {
        None => Ok(()),
        Some(failure) => Err(failure_to_error(&failure, peer_id)),
    }
}

fn failure_to_error(failure: &pb::SessionFailure, peer_id: &str) -> SessionError {
    let message = failure.message.clone();
    match failure.kind() {
        Kind::InvalidSdp => SessionError::InvalidSdp(message),
        Kind::InvalidCandidate => SessionError::InvalidCandidate(message),
        Kind::NoSession => SessionError::NoSession(peer_id.to_owned()),
        Kind::AtCapacity => SessionError::AtCapacity(failure.capacity as usize),
        Kind::UnknownManifest => SessionError::UnknownManifest(message),
        Kind::Pipeline => SessionError::Pipeline(message),
        Kind::Draining => SessionError::Unavailable(format!("media worker draining: {message}")),
        Kind::FailedPrecondition => SessionError::FailedPrecondition(message),
        Kind::RoomClosing => SessionError::RoomClosing(message),
        Kind::InvalidArgument => SessionError::InvalidArgument(message),
        Kind::Internal | Kind::Unspecified => SessionError::Internal(message),
    }
}

/// A session error as the worker API sends it.
pub(crate) fn error_to_failure(err: &SessionError) -> pb::SessionFailure {
    let (kind, capacity) = match err {
        SessionError::InvalidSdp(_) => (Kind::InvalidSdp, 0),
        SessionError::InvalidCandidate(_) => (Kind::InvalidCandidate, 0),
        SessionError::NoSession(_) => (Kind::NoSession, 0),
        SessionError::AtCapacity(capacity) => (Kind::AtCapacity, *capacity as u32),
        SessionError::UnknownManifest(_) => (Kind::UnknownManifest, 0),
        SessionError::Pipeline(_) => (Kind::Pipeline, 0),
        SessionError::Unavailable(_) => (Kind::Draining, 0),
        SessionError::Internal(_) => (Kind::Internal, 0),
        SessionError::FailedPrecondition(_) => (Kind::FailedPrecondition, 0),
        // A worker at `--max-rooms` is full for new rooms: the frontend tries another worker.
        SessionError::TooManyRooms(max) => (Kind::AtCapacity, *max as u32),
        SessionError::RoomClosing(_) => (Kind::RoomClosing, 0),
        SessionError::InvalidArgument(_) => (Kind::InvalidArgument, 0),
    };
    // The message without the variant's prefix, which the frontend's error adds again.
    let message = match err {
        SessionError::InvalidSdp(m)
        | SessionError::InvalidCandidate(m)
        | SessionError::UnknownManifest(m)
        | SessionError::Pipeline(m)
        | SessionError::Unavailable(m)
        | SessionError::Internal(m)
        | SessionError::FailedPrecondition(m)
        | SessionError::RoomClosing(m)
        | SessionError::InvalidArgument(m) => m.clone(),
        other => other.to_string(),
    };
    pb::SessionFailure {
        kind: kind as i32,
        message,
        capacity,
    }
}

fn redis_unavailable(operation: &'static str, err: &redis::RedisError) -> SessionError {
    redis_error(operation, err);
    SessionError::Unavailable(format!("cluster state in Redis unavailable: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_error_survives_the_worker_api() {
        let errors = [
            SessionError::InvalidSdp("no m= line".into()),
            SessionError::InvalidCandidate("bad".into()),
            SessionError::NoSession("p".into()),
            SessionError::AtCapacity(7),
            SessionError::UnknownManifest("unknown manifest \"x\"".into()),
            SessionError::Pipeline("node vad: bad param".into()),
            SessionError::Internal("boom".into()),
            SessionError::FailedPrecondition("no server offer is pending".into()),
            SessionError::RoomClosing("standup".into()),
        ];
        for err in errors {
            let back = failure_to_error(&error_to_failure(&err), "p");
            assert_eq!(back.to_string(), err.to_string());
            assert_eq!(back.metric_label(), err.metric_label());
        }
    }
}
