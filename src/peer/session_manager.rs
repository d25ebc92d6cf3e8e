//! The in-process session host: server peers by client peer id, their timeouts, and their
//! clean removal. The worker of the cluster runs this same manager.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::RTCPeerConnection;

use super::close_reason::CloseReason;
use super::metrics::metrics;
use super::quality::{self, CallRecord, MediaCounters, SessionStats};
use super::room_actor::{room_refusal, Member, RoomContext, RoomPipelineChoice};
use super::room_hub::RoomHub;
use super::sdp::Sdp;
use super::server_peer::{PeerSettings, ServerPeer};
use super::session_trace::SessionTrace;
use super::stack::WebRtcStack;
use crate::media::OpusConfig;
use crate::metrics::{limit_hit, Limit};
use crate::pipeline::{AudioMode, OpusSettings, PipelineCatalog, VideoMode};
use crate::room::{ParticipantId, RoomError, RoomLimits, RoomName};
use crate::signaling::{IceCandidate, SessionError, SessionEvent, SessionHost, SessionRequest};

/// Local candidates queued per session before the forwarder waits.
const CANDIDATE_QUEUE: usize = 32;
/// How often the no-media timeout is checked.
const MEDIA_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Call records of closed sessions kept for [`SessionManager::last_call_records`].
const CALL_RECORDS_KEPT: usize = 64;

/// Lifetime rules of server sessions.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Not ICE+DTLS connected this long after the offer: closed.
    pub connect_timeout: Duration,
    /// No media for this long once connected: closed.
    pub media_timeout: Duration,
    /// Sessions this process accepts.
    pub capacity: usize,
    pub enable_data_channel: bool,
    /// Upper bound of each session's inbound jitter buffer delay (`--jitter-buffer-ms`).
    pub jitter_buffer: Duration,
    /// Outbound Opus settings: the `--opus-*` flags with the manifest's `media.opus` applied.
    pub opus: OpusSettings,
    /// Items each pipeline's input holds (`--pipeline-queue-frames`).
    pub pipeline_queue_frames: usize,
    /// Message bytes each pipeline's input holds (`--pipeline-queue-bytes`).
    pub pipeline_queue_bytes: usize,
    /// Largest inbound data-channel message (`--max-datachannel-message-bytes`).
    pub max_datachannel_message_bytes: usize,
    /// Pipeline output waiting for the data channels (`--datachannel-send-queue-bytes`).
    pub datachannel_send_queue_bytes: usize,
    /// Data channels read at once (`--max-datachannels`).
    pub max_datachannels: usize,
    /// Rooms this process hosts at once (`--max-rooms`).
    pub max_rooms: usize,
    /// Participants per room (`--max-room-participants`; signaling refuses more at announce,
    /// this keeps the room state to the same bound).
    pub max_room_participants: usize,
    /// `--room-video-last-n`.
    pub room_video_last_n: usize,
    /// `--room-manifest`: checked against the catalog before the manager is made.
    pub room_manifest: Option<String>,
}

/// Weak handles to server peer connections, taken by [`SessionManager::peer_connection_probe`].
pub struct PeerConnectionProbe(Vec<Weak<RTCPeerConnection>>);

impl PeerConnectionProbe {
    /// How many of the probed peer connections are still allocated.
    pub fn alive(&self) -> usize {
        self.0.iter().filter(|w| w.strong_count() > 0).count()
    }
}

/// Creates and owns server peers; implements [`SessionHost`].
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    stack: WebRtcStack,
    pipelines: PipelineCatalog,
    settings: SessionSettings,
    events: mpsc::Sender<SessionEvent>,
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    tasks: TaskTracker,
    /// The last closed sessions' call records, oldest first.
    records: Mutex<VecDeque<CallRecord>>,
    /// The rooms of this process.
    rooms: RoomHub,
}

struct Session {
    id: u64,
    pc: Arc<RTCPeerConnection>,
    cancel: CancellationToken,
    created: Instant,
    counters: Arc<MediaCounters>,
    /// The session's spans (ICE, DTLS, first RTP, close).
    trace: Arc<SessionTrace>,
    /// Keeps the session's ufrag admitted on the shared UDP port; dropped with the session.
    _ufrag: Option<super::udp_filter::UfragRegistration>,
    /// The room the session joined, as which participant.
    room: Option<(RoomName, ParticipantId)>,
}

impl SessionManager {
    /// The room and participant id of `peer_id`'s session, when it is a room participant.
    fn room_of(&self, peer_id: &str) -> Option<(RoomName, ParticipantId)> {
        self.inner
            .sessions
            .lock()
            .get(peer_id)
            .and_then(|s| s.room.clone())
    }

    /// Whether `offer` comes from the ICE and DTLS session `peer_id`'s session has now.
    async fn is_live_transport(&self, peer_id: &str, offer: &str) -> bool {
        let pc = self
            .inner
            .sessions
            .lock()
            .get(peer_id)
            .map(|s| Arc::clone(&s.pc));
        let Some(current) = (match pc {
            Some(pc) => pc.remote_description().await,
            None => None,
        }) else {
            return false;
        };
        match (Sdp::parse(&current.sdp), Sdp::parse(offer)) {
            (Ok(current), Ok(offer)) => current.same_transport(&offer),
            _ => false,
        }
    }

    /// `events` receives the sessions' local candidates and the closes the manager decides.
    pub fn new(
        stack: WebRtcStack,
        pipelines: PipelineCatalog,
        settings: SessionSettings,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        let tasks = TaskTracker::new();
        let rooms = RoomHub::new(RoomContext {
            limits: RoomLimits {
                max_participants: settings.max_room_participants,
                max_rooms: settings.max_rooms,
            },
            video_last_n: settings.room_video_last_n,
            pipeline: settings.room_manifest.as_deref().and_then(|name| {
                let pipeline = pipelines.get(Some(name)).ok()?.clone();
                let opus = &settings.opus;
                Some(RoomPipelineChoice {
                    name: name.to_owned(),
                    pipeline,
                    opus: OpusConfig {
                        bitrate_bps: opus.bitrate,
                        complexity: opus.complexity,
                        fec: opus.fec,
                        dtx: opus.dtx,
                    },
                })
            }),
            pipeline_queue: (
                settings.pipeline_queue_frames,
                settings.pipeline_queue_bytes,
            ),
            events: events.clone(),
            tasks: tasks.clone(),
            port_map: stack.port_map(),
            enable_data_channel: settings.enable_data_channel,
            max_message_bytes: settings.max_datachannel_message_bytes,
            span: std::sync::OnceLock::new(),
        });
        Self {
            inner: Arc::new(Inner {
                stack,
                pipelines,
                settings,
                events,
                sessions: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                tasks,
                records: Mutex::new(VecDeque::with_capacity(CALL_RECORDS_KEPT)),
                rooms,
            }),
        }
    }

    /// Closes every session and waits for their tasks (graceful shutdown).
    pub async fn close_all(&self) {
        let sessions: Vec<(String, Session)> = self.inner.sessions.lock().drain().collect();
        for (peer_id, session) in sessions {
            close_peer(&self.inner, &peer_id, session, CloseReason::Shutdown).await;
            let _ = self
                .inner
                .events
                .send(SessionEvent::Closed {
                    peer_id,
                    reason: CloseReason::Shutdown.describe().into(),
                })
                .await;
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Weak handles to the peer connections alive now, to check later that closing them
    /// really freed them (0.17 has leaked connections through callbacks).
    pub fn peer_connection_probe(&self) -> PeerConnectionProbe {
        PeerConnectionProbe(
            self.inner
                .sessions
                .lock()
                .values()
                .map(|s| Arc::downgrade(&s.pc))
                .collect(),
        )
    }

    /// Quality of a live session so far (jitter buffer, packets, RTCP); `None` if there is
    /// no session for `peer_id`.
    pub async fn session_stats(&self, peer_id: &str) -> Option<SessionStats> {
        let (pc, counters) = {
            let sessions = self.inner.sessions.lock();
            let session = sessions.get(peer_id)?;
            (Arc::clone(&session.pc), Arc::clone(&session.counters))
        };
        Some(quality::collect(&pc, &counters).await)
    }

    /// Call records of the last closed sessions (at most 64), oldest first.
    pub fn last_call_records(&self) -> Vec<CallRecord> {
        self.inner.records.lock().iter().cloned().collect()
    }

    /// The shared ICE UDP socket's address, when `--udp-port` is set.
    pub fn udp_address(&self) -> Option<std::net::SocketAddr> {
        self.inner.stack.udp_address()
    }

    /// Rooms alive on this process now.
    pub fn room_count(&self) -> usize {
        self.inner.rooms.len()
    }

    /// Lets the rooms span workers through `host` (a worker with a relay; set once, before
    /// the first room).
    pub(crate) fn set_room_span(&self, host: Arc<dyn super::SpanHost>) {
        self.inner.rooms.set_span(host);
    }

    /// Another worker's relay request for `room` (worker API `OpenRelay` and the like);
    /// false when the room has no participant here.
    pub(crate) async fn relay(
        &self,
        room: &crate::room::RoomName,
        request: super::RelayRequest,
    ) -> bool {
        self.inner.rooms.relay(room, request).await
    }
}

/// The pipeline a room's creator names (announce metadata `room_manifest`), with its own
/// manifest's Opus settings.
///
/// # Errors
/// `UnknownManifest` when the catalog has no such manifest.
fn room_pipeline_choice(
    pipelines: &PipelineCatalog,
    name: &str,
) -> Result<RoomPipelineChoice, SessionError> {
    let pipeline = pipelines
        .get(Some(name))
        .map_err(|e| SessionError::UnknownManifest(e.to_string()))?
        .clone();
    let opus = &pipeline.manifest().media.opus;
    let opus = OpusConfig {
        bitrate_bps: opus.bitrate,
        complexity: opus.complexity,
        fec: opus.fec,
        dtx: opus.dtx,
    };
    Ok(RoomPipelineChoice {
        name: name.to_owned(),
        pipeline,
        opus,
    })
}

#[async_trait]
impl SessionHost for SessionManager {
    async fn create_session(&self, request: SessionRequest) -> Result<String, SessionError> {
        let inner = &self.inner;
        let peer_id = request.peer_id.as_str();
        let pipeline = inner
            .pipelines
            .get(request.manifest.as_deref())
            .map_err(|e| SessionError::UnknownManifest(e.to_string()))?;
        let room = match request.room.as_deref() {
            Some(name) => Some((
                RoomName::parse(name).map_err(room_refusal)?,
                ParticipantId::parse(peer_id).map_err(room_refusal)?,
            )),
            None => None,
        };
        let room_pipeline = match (&room, request.room_manifest.as_deref()) {
            (Some((name, _)), Some(manifest)) => {
                let choice = room_pipeline_choice(&inner.pipelines, manifest)?;
                inner.rooms.check_manifest(name, manifest)?;
                Some(choice)
            }
            _ => None,
        };
        // Glare: the server is the impolite side; the client answers the server's offer first.
        let live_room = inner
            .sessions
            .lock()
            .get(peer_id)
            .and_then(|s| s.room.clone());
        if let Some((name, participant)) = &live_room {
            if inner.rooms.offer_pending(name, participant).await {
                return Err(room_refusal(RoomError::ServerOfferPending));
            }
            // An offer on the live connection renegotiates it (the client adds a camera);
            // anything else (a new client, an ICE restart) replaces the session.
            if room.as_ref() == live_room.as_ref()
                && self.is_live_transport(peer_id, &request.offer_sdp).await
            {
                return inner
                    .rooms
                    .client_offer(name, participant, request.offer_sdp)
                    .await;
            }
        }
        // A re-offer replaces the old session (never leaks it).
        let old = inner.sessions.lock().remove(peer_id);
        if let Some(old) = old {
            close_peer(inner, peer_id, old, CloseReason::Replaced).await;
        }
        if inner.sessions.lock().len() >= inner.settings.capacity {
            limit_hit(Limit::Sessions, 1);
            return Err(SessionError::AtCapacity(inner.settings.capacity));
        }
        let offer_sdp = match &room {
            Some((name, _)) => one_video_codec(&inner.rooms, name, &request.offer_sdp).await,
            None => None,
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let (candidate_tx, candidate_rx) = mpsc::channel(CANDIDATE_QUEUE);
        let started = Instant::now();
        let trace = Arc::new(SessionTrace::start(peer_id, &request.offer_id, id));
        let peer = ServerPeer::start(
            &inner.stack,
            pipeline,
            &PeerSettings {
                enable_data_channel: inner.settings.enable_data_channel,
                jitter_buffer: inner.settings.jitter_buffer,
                // The flags merged with the default manifest; a named manifest's own block.
                opus: if request.manifest.is_some() {
                    pipeline.manifest().media.opus.clone()
                } else {
                    inner.settings.opus.clone()
                },
                pipeline_queue_frames: inner.settings.pipeline_queue_frames,
                pipeline_queue_bytes: inner.settings.pipeline_queue_bytes,
                max_datachannel_message_bytes: inner.settings.max_datachannel_message_bytes,
                datachannel_send_queue_bytes: inner.settings.datachannel_send_queue_bytes,
                max_datachannels: inner.settings.max_datachannels,
                // A room participant without a manifest of its own: no audio of its own back,
                // no decoding; its media reaches the others of its room.
                audio: match (&room, &request.manifest) {
                    (Some(_), None) => AudioMode::None,
                    _ => pipeline.manifest().media.audio,
                },
                video: match (&room, &request.manifest) {
                    (Some(_), None) => VideoMode::Drop,
                    _ => pipeline.manifest().media.video,
                },
                room: room.is_some(),
            },
            offer_sdp.as_deref().unwrap_or(&request.offer_sdp),
            candidate_tx,
            &inner.tasks,
            &cancel,
            &trace,
        )
        .instrument(trace.span())
        .await;
        let mut peer = match peer {
            Ok(peer) => peer,
            Err(err) => {
                trace.failed(&err);
                return Err(SessionError::from(err));
            }
        };
        let (close_tx, close_rx) = mpsc::channel(1);
        if let Some((name, participant)) = &room {
            let member = Member {
                peer: participant.clone(),
                session: id,
                pc: Arc::clone(&peer.pc),
                activity: Arc::clone(&peer.activity),
                cancel: cancel.clone(),
                close: close_tx,
            };
            let joined = inner
                .rooms
                .join(
                    name,
                    member,
                    room_pipeline,
                    peer.published.take(),
                    peer.state.clone(),
                )
                .await;
            if let Err(err) = joined {
                trace.failed(&err);
                cancel.cancel();
                let _ = peer.pc.close().await;
                return Err(err);
            }
        }

        inner.tasks.spawn(forward_candidates(
            peer_id.to_owned(),
            peer.held_candidates,
            candidate_rx,
            inner.events.clone(),
            cancel.clone(),
        ));
        inner.tasks.spawn(
            supervise(
                Arc::downgrade(inner),
                (peer_id.to_owned(), id),
                peer.state,
                Arc::clone(&peer.activity),
                close_rx,
                started,
                cancel.clone(),
            )
            .instrument(trace.span()),
        );
        metrics().sessions_active.inc();
        metrics().sessions_created.inc();
        inner.sessions.lock().insert(
            peer_id.to_owned(),
            Session {
                id,
                pc: peer.pc,
                cancel,
                created: started,
                counters: peer.counters,
                trace,
                _ufrag: peer.ufrag,
                room,
            },
        );
        Ok(peer.answer_sdp)
    }

    async fn add_candidate(
        &self,
        peer_id: &str,
        candidate: IceCandidate,
    ) -> Result<(), SessionError> {
        let pc = self
            .inner
            .sessions
            .lock()
            .get(peer_id)
            .map(|s| Arc::clone(&s.pc))
            .ok_or_else(|| SessionError::NoSession(peer_id.to_owned()))?;
        ServerPeer::add_candidate(&pc, candidate)
            .await
            .map_err(SessionError::from)
    }

    async fn close_session(&self, peer_id: &str) -> bool {
        let session = self.inner.sessions.lock().remove(peer_id);
        match session {
            Some(session) => {
                close_peer(&self.inner, peer_id, session, CloseReason::Client).await;
                true
            }
            None => false,
        }
    }

    async fn answer_server_offer(
        &self,
        peer_id: &str,
        offer_id: Option<&str>,
        sdp: String,
    ) -> Result<(), SessionError> {
        let Some((name, participant)) = self.room_of(peer_id) else {
            return Err(room_refusal(RoomError::NoOfferPending));
        };
        self.inner
            .rooms
            .answer(&name, &participant, offer_id, sdp)
            .await
    }

    async fn stream_detached(&self, peer_id: &str) {
        if let Some((name, participant)) = self.room_of(peer_id) {
            self.inner
                .rooms
                .set_detached(&name, &participant, true)
                .await;
        }
    }

    async fn stream_resumed(&self, peer_id: &str) {
        if let Some((name, participant)) = self.room_of(peer_id) {
            self.inner
                .rooms
                .set_detached(&name, &participant, false)
                .await;
        }
    }

    fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }
}

/// The offer with the room's video codec as its only one, when the room has video already
/// (one codec per room: every subscriber takes every forwarded video). `None`: unchanged.
async fn one_video_codec(rooms: &RoomHub, room: &RoomName, offer: &str) -> Option<String> {
    let codec = rooms.video_codec(room).await?;
    let mut sdp = Sdp::parse(offer).ok()?;
    sdp.keep_video_codec(&codec);
    Some(sdp.to_text())
}

/// Stops a session's tasks and peer connection, then logs and keeps its call record.
async fn close_peer(inner: &Inner, peer_id: &str, session: Session, reason: CloseReason) {
    let span = session.trace.closing(reason);
    let trace = Arc::clone(&session.trace);
    close_and_record(inner, peer_id, session, reason)
        .instrument(span)
        .await;
    trace.finish();
}

async fn close_and_record(inner: &Inner, peer_id: &str, session: Session, reason: CloseReason) {
    session.cancel.cancel();
    if let Some((name, participant)) = &session.room {
        inner.rooms.leave(name, participant, session.id).await;
    }
    metrics().sessions_active.dec();
    metrics()
        .sessions_closed
        .with_label_values(&[reason.label()])
        .inc();
    // RTCP figures are read before `close`, which tears the stats down.
    let stats = quality::collect(&session.pc, &session.counters).await;
    if let Err(err) = session.pc.close().await {
        tracing::debug!(peer_id, %err, "closing the peer connection");
    }
    let record = CallRecord {
        peer_id: peer_id.to_owned(),
        session: session.id,
        duration: session.created.elapsed(),
        reason: reason.describe().to_owned(),
        stats,
    };
    record.log();
    quality::export(&record.stats);
    let mut records = inner.records.lock();
    if records.len() == CALL_RECORDS_KEPT {
        records.pop_front();
    }
    records.push_back(record);
}

/// Local candidates to signaling, until the session is cancelled.
async fn forward_candidates(
    peer_id: String,
    held: Vec<IceCandidate>,
    mut candidates: mpsc::Receiver<IceCandidate>,
    events: mpsc::Sender<SessionEvent>,
    cancel: CancellationToken,
) {
    let mut held = held.into_iter();
    loop {
        let candidate = match held.next() {
            Some(_) if cancel.is_cancelled() => break,
            Some(c) => c,
            None => tokio::select! {
                c = candidates.recv() => match c { Some(c) => c, None => break },
                () = cancel.cancelled() => break,
            },
        };
        let event = SessionEvent::LocalCandidate {
            peer_id: peer_id.clone(),
            candidate,
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
}

/// Closes the session when it does not connect in time, fails, or stops receiving media.
async fn supervise(
    manager: Weak<Inner>,
    (peer_id, session_id): (String, u64),
    mut state: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
    activity: Arc<super::activity::Activity>,
    mut close_requests: mpsc::Receiver<CloseReason>,
    started: Instant,
    cancel: CancellationToken,
) {
    let Some(settings) = manager.upgrade().map(|m| m.settings.clone()) else {
        return;
    };
    let connect_deadline = tokio::time::sleep(settings.connect_timeout);
    tokio::pin!(connect_deadline);
    let mut connected = false;
    let mut media_check = tokio::time::interval(MEDIA_CHECK_INTERVAL);
    let reason = loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = &mut connect_deadline, if !connected => break CloseReason::ConnectTimeout,
            Some(reason) = close_requests.recv() => break reason,
            changed = state.changed() => {
                if changed.is_err() {
                    break CloseReason::PeerClosed;
                }
                let now = *state.borrow_and_update();
                match now {
                    RTCPeerConnectionState::Connected if !connected => {
                        connected = true;
                        activity.touch();
                        metrics()
                            .ice_connect_seconds
                            .observe(started.elapsed().as_secs_f64());
                        tracing::info!(
                            peer_id,
                            connect_ms = started.elapsed().as_secs_f64() * 1000.0,
                            "server peer connected"
                        );
                    }
                    RTCPeerConnectionState::Failed => break CloseReason::Failed,
                    RTCPeerConnectionState::Closed => break CloseReason::PeerClosed,
                    _ => {}
                }
            }
            _ = media_check.tick(), if connected => {
                if activity.idle() >= settings.media_timeout {
                    break CloseReason::MediaTimeout;
                }
            }
        }
    };
    let Some(manager) = manager.upgrade() else {
        return;
    };
    let session = {
        let mut sessions = manager.sessions.lock();
        match sessions.get(&peer_id) {
            Some(s) if s.id == session_id => sessions.remove(&peer_id),
            _ => None,
        }
    };
    if let Some(session) = session {
        close_peer(&manager, &peer_id, session, reason).await;
        let _ = manager
            .events
            .send(SessionEvent::Closed {
                peer_id,
                reason: reason.describe().to_owned(),
            })
            .await;
    }
}
