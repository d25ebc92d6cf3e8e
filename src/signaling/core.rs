//! The rules of signaling, independent of the transport (gRPC stream or WebSocket).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::auth::{AuthError, Identity, TokenVerifier};
use super::bus::{BusError, Mailbox, NotificationBus};
use super::error::{Payload, SignalingError};
use super::lifecycle::{transition, Event, Stage, Step};
use super::metrics::metrics;
use super::peer_id::{validate_peer_id, SERVER_PEER_ID};
use super::rate_limit::{RequestGate, RequestLimits};
use super::registry::{PeerRecord, PeerRegistry, PendingOffer, RegistryError, ROOM_METADATA_KEY};
use super::session_host::{IceCandidate, SessionError, SessionEvent, SessionHost, SessionRequest};
use super::turn::{IceServer, TurnCredentials};
use crate::metrics::{limit_hit, Limit};
use crate::proto::signaling::{
    self as pb, signaling_notification::Notification, PeerCapabilities, PeerInfo, PeerState,
    SignalingNotification,
};
use crate::room::{ParticipantId, RoomName};

/// Largest ICE candidate line accepted.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// Announce metadata key naming the pipeline manifest of the peer's server sessions.
pub const MANIFEST_METADATA_KEY: &str = "manifest";
/// Announce metadata naming the pipeline a room participant asks its room to run.
pub const ROOM_MANIFEST_METADATA_KEY: &str = "room_manifest";
/// Announce metadata key carrying the resume token of a peer that comes back.
pub const RESUME_TOKEN_METADATA_KEY: &str = "resume_token";
/// How often graces that ran out are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Signaling limits.
#[derive(Debug, Clone)]
pub struct SignalingLimits {
    /// Announced client peers this process accepts.
    pub max_peers: usize,
    /// Largest SDP offer or answer (`--max-sdp-bytes`).
    pub max_sdp_bytes: usize,
    /// Client candidates per server session, those buffered before it exists included.
    pub max_ice_candidates: usize,
    /// What each stream may send (`--signaling-rate`, `--max-message-bytes`).
    pub requests: RequestLimits,
    /// How long a peer whose stream broke stays registered, its server session running and
    /// its notifications kept, so it can resume; zero: it leaves at once.
    pub resume_grace: Duration,
    /// A new stream or WebSocket that sends nothing this long is closed; zero: never.
    pub first_message_timeout: Duration,
    /// Whether this process's own shutdown counts as a broken stream (a frontend replica:
    /// its clients resume on another) rather than their leaving (a single process).
    pub keep_peers_on_shutdown: bool,
    /// Participants a room takes (`--max-room-participants`), counted at announce across
    /// every replica, so that every listed participant gets media.
    pub max_room_participants: usize,
}

/// Shared signaling state behind every stream.
pub struct SignalingCore {
    registry: Arc<dyn PeerRegistry>,
    bus: Arc<dyn NotificationBus>,
    host: Arc<dyn SessionHost>,
    limits: SignalingLimits,
    started: Instant,
    /// Peers announced through this process (for `--max-peers`).
    local_peers: AtomicUsize,
    access: Access,
}

/// The result of an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The server created a session and answered.
    Answered {
        offer_id: String,
        answer_sdp: String,
    },
    /// The offer was forwarded to another peer.
    Forwarded { offer_id: String },
}

/// Who may announce, and what clients are given to reach the media.
#[derive(Debug, Default)]
pub struct Access {
    /// `--auth-secret`: every stream needs a token; `None`: anyone may announce.
    pub tokens: Option<TokenVerifier>,
    /// `--turn-secret`: TURN credentials in every announce ack.
    pub turn: Option<TurnCredentials>,
    /// `--id-takeover`: without `--auth-secret`, a new stream may take over a peer id whose
    /// stream broke (with it, a token for that id always may). See [`SignalingCore::take_over`].
    pub id_takeover: bool,
    /// `--require-room-claim`: with `--auth-secret`, only a token with a `room` claim may
    /// join a room (that room); without the flag a token without one may join any room.
    pub require_room_claim: bool,
}

/// Process-level counters for health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalingStats {
    pub uptime_seconds: u64,
    pub connected_peers: usize,
    pub sessions: usize,
    pub pending_offers: usize,
}

impl SignalingCore {
    pub fn new(
        registry: Arc<dyn PeerRegistry>,
        bus: Arc<dyn NotificationBus>,
        host: Arc<dyn SessionHost>,
        limits: SignalingLimits,
        access: Access,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            bus,
            host,
            limits,
            started: Instant::now(),
            local_peers: AtomicUsize::new(0),
            access,
        })
    }

    /// Who the token a stream opened with says it is; anyone when authentication is off.
    ///
    /// # Errors
    /// `Unauthenticated` when authentication is on and the token is missing, expired or bad.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, SignalingError> {
        let Some(verifier) = &self.access.tokens else {
            return Ok(Identity::Anonymous);
        };
        verifier
            .verify(token)
            .map(Identity::Verified)
            .map_err(|err| {
                let reason = match err {
                    AuthError::Missing => "missing",
                    AuthError::Expired => "expired",
                    AuthError::Invalid(_) => "invalid",
                };
                refused(reason);
                err.into()
            })
    }

    /// Delivers what session hosts report (server candidates, closes) to the clients.
    /// Ends when every sender of `events` is gone.
    pub async fn forward_session_events(self: Arc<Self>, mut events: mpsc::Receiver<SessionEvent>) {
        while let Some(event) = events.recv().await {
            deliver_session_event(self.bus.as_ref(), event).await;
        }
    }

    /// The size above which a signaling message ends its stream unread.
    pub fn hard_message_bytes(&self) -> usize {
        self.limits
            .requests
            .max_message_bytes
            .saturating_mul(crate::config::HARD_MESSAGE_FACTOR)
    }

    /// How long a new stream or WebSocket may stay silent (`None`: no limit).
    pub fn first_message_timeout(&self) -> Option<Duration> {
        Some(self.limits.first_message_timeout).filter(|d| !d.is_zero())
    }

    /// A fresh request gate for a new stream or WebSocket.
    pub fn request_gate(&self) -> RequestGate {
        RequestGate::new(self.limits.requests)
    }

    /// Whether the transport should keep its peers (detach) when this process shuts down.
    pub fn keeps_peers_on_shutdown(&self) -> bool {
        self.limits.keep_peers_on_shutdown
    }

    /// Ends the graces that ran out, until `stop`: their sessions close and `PeerLeft` goes
    /// out. In a cluster every replica sweeps; each expired peer is ended by one of them.
    pub async fn expire_detached_peers(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for record in self.registry.sweep(self.limits.resume_grace).await {
                self.advance(
                    &record.peer_id,
                    record.room(),
                    Stage::Detached,
                    Event::GraceExpired,
                    None,
                )
                .await;
            }
        }
    }

    /// Registers a new peer for a stream: it takes a detached one back when the announce
    /// carries its resume token ([`Self::resume`]), or over when it may ([`Self::take_over`]).
    ///
    /// What happens to the registration afterwards is the state machine of
    /// [`super::lifecycle`]; [`Self::advance`] carries its steps out.
    ///
    /// A peer that announces metadata `room` joins that room: it sees and reaches only its
    /// participants (and the server peer), and they only it; without one it is in the lobby.
    ///
    /// # Errors
    /// `InvalidPeerId`, `PeerIdReserved`, `PeerIdTaken`, `TooManyPeers`, `PermissionDenied`
    /// (`WrongRoom`, `RoomClaimRequired`), or `Room`: an invalid room name, a peer id that
    /// cannot be a participant's, a full room.
    pub async fn announce(
        self: &Arc<Self>,
        mut request: pb::AnnounceRequest,
        identity: &Identity,
    ) -> Result<ConnectedPeer, SignalingError> {
        let peer_id = std::mem::take(&mut request.peer_id);
        validate_peer_id(&peer_id)?;
        if peer_id == SERVER_PEER_ID {
            return Err(SignalingError::PeerIdReserved(peer_id));
        }
        apply_claims(
            identity,
            &peer_id,
            &mut request.metadata,
            self.access.require_room_claim,
        )?;
        if let Some(name) = request.metadata.get(MANIFEST_METADATA_KEY) {
            validate_manifest_name(name)?;
        }
        if let Some(room) = request.metadata.get(ROOM_METADATA_KEY) {
            RoomName::parse(room)?;
            ParticipantId::parse(&peer_id)?;
        }
        if let Some(name) = request.metadata.get(ROOM_MANIFEST_METADATA_KEY) {
            validate_manifest_name(name)?;
            if !request.metadata.contains_key(ROOM_METADATA_KEY) {
                return Err(SignalingError::InvalidRequest(
                    "metadata room_manifest needs metadata room: only a room runs a room pipeline"
                        .into(),
                ));
            }
        }
        let slot = PeerSlot::reserve(self)?;
        let connection_id = uuid::Uuid::new_v4().simple().to_string();
        let may_take_over = self.may_take_over(identity);
        if let Some(token) = request.metadata.remove(RESUME_TOKEN_METADATA_KEY) {
            let resumed = self
                .resume(&peer_id, &token, &connection_id, may_take_over)
                .await?;
            if let Some((record, mailbox)) = resumed {
                return Ok(ConnectedPeer::new(self, &record, mailbox, slot));
            }
        }
        let mut record = PeerRecord {
            peer_id: peer_id.clone(),
            capabilities: request.capabilities.unwrap_or_default(),
            metadata: request.metadata,
            connected_at: unix_seconds(),
            resume_token: uuid::Uuid::new_v4().simple().to_string(),
            connection_id,
            cursor: None,
            detached_until_ms: None,
        };
        let taken_over = if may_take_over {
            self.take_over(&record).await?
        } else {
            None
        };
        let mailbox = match taken_over {
            Some(mailbox) => mailbox,
            None => self.register(&mut record).await?,
        };
        self.bus
            .broadcast(
                record.room(),
                &peer_id,
                notify(Notification::PeerJoined(pb::PeerJoinedNotification {
                    peer_id: peer_id.clone(),
                    capabilities: Some(record.capabilities.clone()),
                    metadata: record.metadata.clone(),
                })),
            )
            .await;
        tracing::info!(peer_id, "peer announced");
        Ok(ConnectedPeer::new(self, &record, mailbox, slot))
    }

    /// A registration of a free peer id: the peer's mailbox opens, then the registry's
    /// duplicate-checked create.
    async fn register(&self, record: &mut PeerRecord) -> Result<Mailbox, SignalingError> {
        let peer_id = record.peer_id.clone();
        let mailbox =
            self.bus
                .subscribe(&peer_id, record.room())
                .await
                .map_err(|err| match err {
                    BusError::Unavailable(why) => SignalingError::StateUnavailable(why),
                    _ => SignalingError::PeerIdTaken(peer_id.clone()),
                })?;
        record.cursor = mailbox.cursor();
        let registered = self
            .registry
            .register(record.clone(), self.limits.max_room_participants)
            .await;
        if let Err(err) = registered {
            self.bus.unsubscribe(&peer_id, mailbox.id).await;
            return Err(counted(err));
        }
        Ok(mailbox)
    }

    /// Whether a new stream may take over a detached registration of its peer id: with
    /// `--auth-secret` its token proves it is that peer; without, `--id-takeover` decides.
    fn may_take_over(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Verified(_) => true,
            Identity::Anonymous => self.access.id_takeover,
        }
    }

    /// Resume: the stream `connection_id` presents the resume token of a peer in its grace
    /// and takes it back as it was (its server session ran on; what was kept for it comes
    /// first). `None`: register afresh (the grace is over, or the token does not resume and
    /// a takeover may be tried).
    async fn resume(
        &self,
        peer_id: &str,
        token: &str,
        connection_id: &str,
        may_take_over: bool,
    ) -> Result<Option<(PeerRecord, Mailbox)>, SignalingError> {
        match self.registry.resume(peer_id, token, connection_id).await {
            Ok(Some(mut record)) => {
                let mailbox = self
                    .bus
                    .resume(peer_id, record.room(), record.cursor.clone())
                    .await
                    .map_err(|err| SignalingError::StateUnavailable(err.to_string()))?;
                self.advance(
                    peer_id,
                    record.room(),
                    Stage::Detached,
                    Event::Resumed,
                    None,
                )
                .await;
                connection_id.clone_into(&mut record.connection_id);
                Ok(Some((record, mailbox)))
            }
            // Its grace is over (or it never was): a fresh registration.
            Ok(None) => Ok(None),
            // Connected, or not its token: as if there were no token (a takeover of a
            // detached peer where allowed; a live one stays taken).
            Err(RegistryError::AlreadyExists(_)) if may_take_over => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Takeover, the other way back after a broken stream besides [`Self::resume`]: a new stream without the resume token (the original's clients reconnect with
    /// their fixed peer id) gets the id of a peer in its resume grace. The registry swaps the
    /// records atomically, so one stream wins; a live stream's id is never taken
    /// (`PeerIdTaken`). The old registration then ends as a leave would: its server session
    /// closes (on its worker, in a cluster), its kept notifications and offers go, and the
    /// others get `PeerLeft` (then `PeerJoined` from the announce, as for a re-announce).
    /// `None`: nobody has the id, it is registered as usual. The old registration's
    /// `PeerLeft` goes to its own room, the new one's `PeerJoined` to the new one's.
    async fn take_over(&self, record: &PeerRecord) -> Result<Option<Mailbox>, SignalingError> {
        let peer_id = record.peer_id.as_str();
        let old = self
            .registry
            .take_over(record.clone(), self.limits.max_room_participants)
            .await
            .map_err(counted)?;
        let Some(old) = old else {
            return Ok(None);
        };
        // Before the new mailbox opens: what was kept for the old stream is not the new one's.
        self.advance(peer_id, old.room(), Stage::Detached, Event::TakenOver, None)
            .await;
        match self.bus.subscribe(peer_id, record.room()).await {
            Ok(mailbox) => Ok(Some(mailbox)),
            Err(err) => {
                // No stream will hold the new registration: it goes too (nobody was told of it).
                self.registry.unregister(peer_id).await;
                Err(match err {
                    BusError::Unavailable(why) => SignalingError::StateUnavailable(why),
                    _ => SignalingError::PeerIdTaken(peer_id.to_owned()),
                })
            }
        }
    }

    /// Moves `peer_id`'s registration (of `room`; `None`: the lobby) from `from` on `event`
    /// ([`super::lifecycle`]): carries out the transition's steps in order, with `hold` the
    /// stream's mailbox where a step closes or keeps it, and returns the stage reached. A
    /// detach the registry cannot keep (it lost the registration) goes on to end the peer.
    async fn advance(
        &self,
        peer_id: &str,
        room: Option<&str>,
        from: Stage,
        event: Event,
        mut hold: Option<Hold>,
    ) -> Stage {
        let (mut stage, mut event) = (from, event);
        loop {
            let next = match transition(stage, event) {
                Ok(next) => next,
                Err(illegal) => {
                    tracing::error!(peer_id, %illegal, "peer lifecycle");
                    return stage;
                }
            };
            let mut lost = false;
            for step in next.steps {
                match step {
                    Step::CloseSession => {
                        self.host.close_session(peer_id).await;
                    }
                    Step::CloseMailbox => {
                        if let Some(hold) = hold.take() {
                            self.bus.unsubscribe(peer_id, hold.mailbox.id).await;
                        }
                    }
                    Step::KeepMailbox => {
                        if let Some(hold) = hold.take() {
                            let cursor = self.bus.detach(peer_id, hold.mailbox).await;
                            let grace = self.limits.resume_grace;
                            lost = !self
                                .registry
                                .detach(peer_id, &hold.connection_id, cursor, grace)
                                .await;
                        }
                    }
                    Step::DiscardKept => self.bus.discard(peer_id).await,
                    Step::Unregister => self.registry.unregister(peer_id).await,
                    Step::AnnounceLeft => {
                        let left = pb::PeerLeftNotification {
                            peer_id: peer_id.to_owned(),
                        };
                        self.bus
                            .broadcast(room, peer_id, notify(Notification::PeerLeft(left)))
                            .await;
                    }
                }
            }
            log_transition(peer_id, event, next.next, self.limits.resume_grace);
            if !lost {
                match (stage, next.next) {
                    (Stage::Connected, Stage::Detached) => self.host.stream_detached(peer_id).await,
                    (Stage::Detached, Stage::Connected) => self.host.stream_resumed(peer_id).await,
                    _ => {}
                }
            }
            stage = next.next;
            if !lost {
                return stage;
            }
            event = Event::RegistrationLost;
        }
    }

    /// What a stream that has not announced yet may list: the lobby (the peers in no room).
    pub async fn lobby_peers(&self) -> Vec<PeerInfo> {
        self.peers_in(None).await
    }

    /// What `GetPeers` lists for a caller with `identity`: the room of its token's `room`
    /// claim, else the lobby.
    ///
    /// # Errors
    /// `Room` when the claim is not a valid room name.
    pub async fn peers_for(&self, identity: &Identity) -> Result<Vec<PeerInfo>, SignalingError> {
        let room = match identity {
            Identity::Verified(claims) => claims.room.as_deref().map(RoomName::parse),
            Identity::Anonymous => None,
        }
        .transpose()?;
        Ok(self.peers_in(room.as_ref().map(RoomName::as_str)).await)
    }

    /// The peers of `room` (`None`: the lobby), the virtual server peer first.
    pub async fn peers_in(&self, room: Option<&str>) -> Vec<PeerInfo> {
        let mut peers = vec![server_peer_info(self.started)];
        peers.extend(
            self.registry
                .list_room(room)
                .await
                .into_iter()
                .map(|record| PeerInfo {
                    peer_id: record.peer_id,
                    capabilities: Some(record.capabilities),
                    state: PeerState::Available as i32,
                    metadata: record.metadata,
                    connected_at: record.connected_at,
                }),
        );
        peers
    }

    /// Counters for `HealthCheck`.
    pub async fn stats(&self) -> SignalingStats {
        SignalingStats {
            uptime_seconds: self.started.elapsed().as_secs(),
            connected_peers: self.registry.peer_count().await,
            sessions: self.host.session_count(),
            pending_offers: self.registry.pending_offer_count().await,
        }
    }

    /// `peer_id` is registered in `room` (`None`: the lobby); a peer of another room or of
    /// the lobby is `UnknownPeer`, exactly as one that does not exist.
    async fn require_peer(&self, peer_id: &str, room: Option<&str>) -> Result<(), SignalingError> {
        match self.registry.get(peer_id).await {
            Some(record) if record.room() == room => Ok(()),
            _ => Err(SignalingError::UnknownPeer(peer_id.to_owned())),
        }
    }

    async fn deliver(&self, to: &str, notification: Notification) -> Result<(), SignalingError> {
        self.bus
            .publish(to, notify(notification))
            .await
            .map_err(|err| match err {
                BusError::Unavailable(why) => SignalingError::StateUnavailable(why),
                _ => SignalingError::UnknownPeer(to.to_owned()),
            })
    }
}

/// Sleeps `duration`; forever when `None`.
pub(crate) async fn sleep_or_never(duration: Option<std::time::Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Tells a client what its server session did: a server candidate, or the session's end
/// (`PeerDisconnected` from `remotemedia-server`). Media workers deliver through this too.
pub async fn deliver_session_event(bus: &dyn NotificationBus, event: SessionEvent) {
    let (peer_id, notification) = session_notification(event);
    if let Err(err) = bus.publish(&peer_id, notification).await {
        tracing::debug!(peer_id, %err, "session event for a peer that left");
    }
}

/// The client and the notification a session event becomes.
pub fn session_notification(event: SessionEvent) -> (String, SignalingNotification) {
    let (peer_id, notification) = match event {
        SessionEvent::LocalCandidate { peer_id, candidate } => (
            peer_id,
            Notification::IceCandidate(pb::IceCandidateNotification {
                from_peer_id: SERVER_PEER_ID.into(),
                candidate: candidate.candidate,
                sdp_mid: candidate.sdp_mid,
                sdp_mline_index: candidate.sdp_mline_index,
            }),
        ),
        SessionEvent::Closed { peer_id, reason } => {
            tracing::info!(peer_id, reason, "server session closed by the server");
            (
                peer_id,
                Notification::PeerDisconnected(pb::PeerDisconnectedNotification {
                    peer_id: SERVER_PEER_ID.into(),
                }),
            )
        }
        SessionEvent::ServerOffer {
            peer_id,
            offer_id,
            sdp,
        } => (
            peer_id,
            Notification::Offer(pb::OfferNotification {
                from_peer_id: SERVER_PEER_ID.into(),
                offer_id,
                sdp,
                r#type: "offer".into(),
            }),
        ),
    };
    (peer_id, notify(notification))
}

/// One announced client, owned by its stream. Dropping it without [`ConnectedPeer::leave`]
/// still cleans up, from a spawned task.
pub struct ConnectedPeer {
    core: Arc<SignalingCore>,
    peer_id: String,
    /// The pipeline this peer's server sessions run (announce metadata `manifest`).
    manifest: Option<String>,
    /// The room this peer joined (announce metadata `room`); `None`: the lobby.
    room: Option<String>,
    /// The pipeline it asks its room to run (announce metadata `room_manifest`).
    room_manifest: Option<String>,
    /// Given in the announce ack; presented to resume after the stream breaks.
    resume_token: String,
    /// This stream's hold on the peer: its connection id and mailbox (`None` once handed
    /// to the lifecycle's steps).
    hold: Option<Hold>,
    /// Candidates for a server session that does not exist yet, applied after the offer.
    early_candidates: Vec<IceCandidate>,
    /// Candidates sent for the current (or next) server session, buffered ones included.
    server_candidates: usize,
    _slot: PeerSlot,
    /// Connected until the stream leaves or detaches; a drop while connected is a leave.
    stage: Stage,
}

/// What a stream holds of its peer, handed to the lifecycle step that closes or keeps it.
struct Hold {
    connection_id: String,
    mailbox: Mailbox,
}

impl ConnectedPeer {
    /// The stream's hold on the peer `record` describes.
    fn new(
        core: &Arc<SignalingCore>,
        record: &PeerRecord,
        mailbox: Mailbox,
        slot: PeerSlot,
    ) -> Self {
        Self {
            core: Arc::clone(core),
            peer_id: record.peer_id.clone(),
            manifest: record.metadata.get(MANIFEST_METADATA_KEY).cloned(),
            room: record.metadata.get(ROOM_METADATA_KEY).cloned(),
            room_manifest: record.metadata.get(ROOM_MANIFEST_METADATA_KEY).cloned(),
            resume_token: record.resume_token.clone(),
            hold: Some(Hold {
                connection_id: record.connection_id.clone(),
                mailbox,
            }),
            early_candidates: Vec::new(),
            server_candidates: 0,
            _slot: slot,
            stage: Stage::Connected,
        }
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The token that resumes this peer on a new stream after this one breaks.
    pub fn resume_token(&self) -> &str {
        &self.resume_token
    }

    /// The announce acknowledgement both transports send: the peers this one sees, its resume
    /// token, and TURN credentials when `--turn-secret` is set.
    pub async fn announce_ack(&self) -> serde_json::Value {
        let other_peers: Vec<String> = self
            .peers()
            .await
            .into_iter()
            .map(|p| p.peer_id)
            .filter(|id| *id != self.peer_id)
            .collect();
        let ice_servers: Vec<IceServer> = self
            .core
            .access
            .turn
            .iter()
            .map(|turn| turn.issue(&self.peer_id))
            .collect();
        serde_json::json!({
            "peer_id": self.peer_id,
            "peers_count": other_peers.len() + 1,
            "other_peers": other_peers,
            "resume_token": self.resume_token,
            "ice_servers": ice_servers,
        })
    }

    /// The peers this one sees: its room's (or the lobby's), the virtual server peer first.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.core.peers_in(self.room.as_deref()).await
    }

    /// The next notification for this peer; `None` when it was cut off for reading too slowly.
    pub async fn next_notification(&mut self) -> Option<SignalingNotification> {
        self.hold.as_mut()?.mailbox.recv().await
    }

    /// Whether the bus cut this peer off for reading too slowly (its mailbox overflowed).
    pub fn is_cut_off(&self) -> bool {
        self.hold
            .as_ref()
            .is_some_and(|hold| hold.mailbox.is_cut_off())
    }

    /// An SDP offer to the server (creates a session) or to another peer (forwarded).
    ///
    /// # Errors
    /// `InvalidOffer`, `TooLarge`, `UnknownPeer`, or the session host's error.
    pub async fn offer(&mut self, to: &str, sdp: &str) -> Result<OfferOutcome, SignalingError> {
        let offer_id = uuid::Uuid::new_v4().to_string();
        // The offer's span: in the cluster, the worker's session spans descend from it.
        let span = tracing::info_span!(
            "offer",
            peer_id = self.peer_id,
            offer_id,
            to,
            result = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let outcome = self
            .try_offer(to, sdp, offer_id)
            .instrument(span.clone())
            .await;
        let result = match &outcome {
            Ok(OfferOutcome::Answered { .. }) => "answered",
            Ok(OfferOutcome::Forwarded { .. }) => "forwarded",
            Err(err) => {
                span.record("otel.status_code", "ERROR");
                err.metric_label()
            }
        };
        span.record("result", result);
        metrics().offers.with_label_values(&[result]).inc();
        outcome
    }

    async fn try_offer(
        &mut self,
        to: &str,
        sdp: &str,
        offer_id: String,
    ) -> Result<OfferOutcome, SignalingError> {
        check_sdp(sdp, Payload::Offer, self.core.limits.max_sdp_bytes)?;
        if to == SERVER_PEER_ID {
            let started = Instant::now();
            // A new session: its candidate count starts with those buffered for it.
            self.server_candidates = self.early_candidates.len();
            let request = SessionRequest {
                peer_id: self.peer_id.clone(),
                offer_id: offer_id.clone(),
                offer_sdp: sdp.to_owned(),
                manifest: self.manifest.clone(),
                room: self.room.clone(),
                room_manifest: self.room_manifest.clone(),
            };
            let answer_sdp = self.core.host.create_session(request).await?;
            metrics()
                .offer_answer_seconds
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(
                peer_id = self.peer_id,
                offer_id,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "server session created"
            );
            for candidate in std::mem::take(&mut self.early_candidates) {
                if let Err(err) = self.core.host.add_candidate(&self.peer_id, candidate).await {
                    tracing::warn!(peer_id = self.peer_id, %err, "buffered candidate rejected");
                }
            }
            return Ok(OfferOutcome::Answered {
                offer_id,
                answer_sdp,
            });
        }
        self.core.require_peer(to, self.room.as_deref()).await?;
        self.core
            .registry
            .put_offer(PendingOffer {
                offer_id: offer_id.clone(),
                from: self.peer_id.clone(),
                to: to.to_owned(),
                sdp: sdp.to_owned(),
            })
            .await;
        self.core
            .deliver(
                to,
                Notification::Offer(pb::OfferNotification {
                    from_peer_id: self.peer_id.clone(),
                    offer_id: offer_id.clone(),
                    sdp: sdp.to_owned(),
                    r#type: "offer".into(),
                }),
            )
            .await?;
        Ok(OfferOutcome::Forwarded { offer_id })
    }

    /// An SDP answer to another peer's offer, or to the server's offer (`offer_id`, when
    /// given, must be the pending server offer's).
    ///
    /// # Errors
    /// `InvalidAnswer`, `TooLarge`, `UnknownPeer`, or the session host's error
    /// (`FailedPrecondition` when no server offer is pending).
    pub async fn answer(
        &mut self,
        to: &str,
        sdp: &str,
        offer_id: Option<&str>,
    ) -> Result<(), SignalingError> {
        if to == SERVER_PEER_ID {
            // Bounded by SDP parsing in the host: a room's answer grows with its m-lines.
            return Ok(self
                .core
                .host
                .answer_server_offer(&self.peer_id, offer_id, sdp.to_owned())
                .await?);
        }
        check_sdp(sdp, Payload::Answer, self.core.limits.max_sdp_bytes)?;
        self.core.require_peer(to, self.room.as_deref()).await?;
        self.core.registry.take_offer(to, &self.peer_id).await;
        self.core
            .deliver(
                to,
                Notification::Answer(pb::AnswerNotification {
                    from_peer_id: self.peer_id.clone(),
                    sdp: sdp.to_owned(),
                    r#type: "answer".into(),
                }),
            )
            .await
    }

    /// A trickled ICE candidate for the server session or another peer.
    ///
    /// # Errors
    /// `InvalidCandidate`, `TooLarge`, `UnknownPeer`, `TooManyCandidates`, or the session
    /// host's error.
    pub async fn ice_candidate(
        &mut self,
        to: &str,
        candidate: IceCandidate,
    ) -> Result<(), SignalingError> {
        check_candidate(&candidate.candidate)?;
        if to == SERVER_PEER_ID {
            // End-of-candidates costs nothing and is not counted.
            if !candidate.candidate.is_empty() {
                let limit = self.core.limits.max_ice_candidates;
                if self.server_candidates >= limit {
                    limit_hit(Limit::IceCandidates, 1);
                    return Err(SignalingError::TooManyCandidates(limit));
                }
                self.server_candidates += 1;
            }
            return match self
                .core
                .host
                .add_candidate(&self.peer_id, candidate.clone())
                .await
            {
                // Bounded by the count above: at most `max_ice_candidates` wait here.
                Err(SessionError::NoSession(_)) => {
                    self.early_candidates.push(candidate);
                    Ok(())
                }
                other => other.map_err(Into::into),
            };
        }
        self.core.require_peer(to, self.room.as_deref()).await?;
        self.core
            .deliver(
                to,
                Notification::IceCandidate(pb::IceCandidateNotification {
                    from_peer_id: self.peer_id.clone(),
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                }),
            )
            .await
    }

    /// Ends this peer's session with `peer_id` (the server session for `remotemedia-server`).
    ///
    /// # Errors
    /// `UnknownPeer`.
    pub async fn disconnect(&mut self, peer_id: &str) -> Result<(), SignalingError> {
        if peer_id == SERVER_PEER_ID {
            self.early_candidates.clear();
            self.server_candidates = 0;
            if !self.core.host.close_session(&self.peer_id).await {
                return Err(SignalingError::Session(SessionError::NoSession(
                    self.peer_id.clone(),
                )));
            }
            return Ok(());
        }
        self.core
            .require_peer(peer_id, self.room.as_deref())
            .await?;
        self.core.registry.take_offer(&self.peer_id, peer_id).await;
        self.core.registry.take_offer(peer_id, &self.peer_id).await;
        self.core
            .deliver(
                peer_id,
                Notification::PeerDisconnected(pb::PeerDisconnectedNotification {
                    peer_id: self.peer_id.clone(),
                }),
            )
            .await
    }

    /// Ends the registration: closes the server session, clears offers, tells the others.
    pub async fn leave(mut self) {
        self.stage = self
            .core
            .advance(
                &self.peer_id,
                self.room.as_deref(),
                self.stage,
                Event::StreamEnded,
                self.hold.take(),
            )
            .await;
    }

    /// The stream broke: the peer stays registered for the resume grace, its server session
    /// runs on and its notifications are kept; nobody is told it left (yet). Without a grace
    /// this is a leave.
    pub async fn detach(mut self) {
        let event = if self.core.limits.resume_grace.is_zero() {
            Event::StreamEnded
        } else {
            Event::StreamBroke
        };
        self.stage = self
            .core
            .advance(
                &self.peer_id,
                self.room.as_deref(),
                self.stage,
                event,
                self.hold.take(),
            )
            .await;
    }
}

impl Drop for ConnectedPeer {
    /// A stream's owner that neither left nor detached (a task cancelled mid-call): a leave,
    /// from a spawned task.
    fn drop(&mut self) {
        if self.stage != Stage::Connected {
            return;
        }
        let core = Arc::clone(&self.core);
        let peer_id = std::mem::take(&mut self.peer_id);
        let room = self.room.take();
        let hold = self.hold.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                core.advance(
                    &peer_id,
                    room.as_deref(),
                    Stage::Connected,
                    Event::StreamEnded,
                    hold,
                )
                .await;
            });
        }
    }
}

/// One line per lifecycle move: what happened to the peer and where it now is.
fn log_transition(peer_id: &str, event: Event, next: Stage, grace: Duration) {
    let what = match event {
        Event::StreamEnded => "stream ended",
        Event::StreamBroke => "stream broke: peer kept for a resume",
        Event::RegistrationLost => "registry lost the detached peer",
        Event::GraceExpired => "resume grace ended",
        Event::Resumed => "peer resumed",
        Event::TakenOver => "detached peer taken over by a new stream",
    };
    match next {
        Stage::Ended => tracing::info!(peer_id, "{what}: peer left"),
        Stage::Detached => tracing::info!(peer_id, ?grace, "{what}"),
        Stage::Connected => tracing::info!(peer_id, "{what}"),
    }
}

/// A counted place under `--max-peers`, released on drop.
struct PeerSlot {
    core: Arc<SignalingCore>,
}

impl PeerSlot {
    fn reserve(core: &Arc<SignalingCore>) -> Result<Self, SignalingError> {
        let max = core.limits.max_peers;
        core.local_peers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| {
                limit_hit(Limit::Peers, 1);
                SignalingError::TooManyPeers(max)
            })?;
        metrics().peers_active.inc();
        Ok(Self {
            core: Arc::clone(core),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.core.local_peers.fetch_sub(1, Ordering::AcqRel);
        metrics().peers_active.dec();
    }
}

fn notify(notification: Notification) -> SignalingNotification {
    SignalingNotification {
        notification: Some(notification),
    }
}

/// Cheap structural check; the session host parses the SDP for real.
fn check_sdp(sdp: &str, what: Payload, limit: usize) -> Result<(), SignalingError> {
    let invalid = |reason: &str| match what {
        Payload::Answer => SignalingError::InvalidAnswer(reason.into()),
        _ => SignalingError::InvalidOffer(reason.into()),
    };
    if sdp.len() > limit {
        limit_hit(Limit::SdpBytes, 1);
        return Err(SignalingError::TooLarge {
            what,
            len: sdp.len(),
            limit,
        });
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(invalid("an SDP must start with \"v=0\""));
    }
    if !sdp.lines().any(|line| line.starts_with("m=")) {
        return Err(invalid("no media section (m=)"));
    }
    Ok(())
}

fn check_candidate(candidate: &str) -> Result<(), SignalingError> {
    if candidate.len() > MAX_CANDIDATE_BYTES {
        return Err(SignalingError::TooLarge {
            what: Payload::Candidate,
            len: candidate.len(),
            limit: MAX_CANDIDATE_BYTES,
        });
    }
    if !candidate.is_empty() && !candidate.starts_with("candidate:") {
        return Err(SignalingError::InvalidCandidate(
            "a candidate must start with \"candidate:\" (RTCIceCandidate.candidate)".into(),
        ));
    }
    Ok(())
}

fn server_peer_info(started: Instant) -> PeerInfo {
    let started_at = SystemTime::now()
        .checked_sub(started.elapsed())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    PeerInfo {
        peer_id: SERVER_PEER_ID.into(),
        capabilities: Some(PeerCapabilities {
            audio: true,
            video: true,
            data: true,
            // Valid JSON, as the original sent: clients parse it.
            extensions: "{}".into(),
        }),
        state: PeerState::Available as i32,
        metadata: HashMap::from([
            ("type".to_owned(), "server".to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]),
        connected_at: started_at,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts an authentication refusal.
fn refused(reason: &'static str) {
    metrics().auth_refusals.with_label_values(&[reason]).inc();
}

/// A registry refusal as the client gets it; a full room counts as a limit hit.
fn counted(err: RegistryError) -> SignalingError {
    if matches!(err, RegistryError::RoomFull { .. }) {
        limit_hit(Limit::RoomParticipants, 1);
    }
    err.into()
}

/// What a verified token allows: only its own peer id, only its manifest (which it then
/// picks), only its room manifest (which it then asks for; none without the claim), and only
/// the room it names (which it then joins; the announce may repeat it). A token without a
/// `room` claim may join any room, unless `require_room_claim`.
fn apply_claims(
    identity: &Identity,
    peer_id: &str,
    metadata: &mut HashMap<String, String>,
    require_room_claim: bool,
) -> Result<(), SignalingError> {
    let Identity::Verified(claims) = identity else {
        return Ok(());
    };
    if claims.sub != peer_id {
        refused("wrong_peer");
        return Err(SignalingError::PermissionDenied(format!(
            "the token is for peer {:?}, not {peer_id:?}",
            claims.sub
        )));
    }
    if let Some(manifest) = &claims.manifest {
        match metadata.get(MANIFEST_METADATA_KEY) {
            Some(asked) if asked != manifest => {
                refused("wrong_manifest");
                return Err(SignalingError::PermissionDenied(format!(
                    "the token allows manifest {manifest:?}, not {asked:?}"
                )));
            }
            _ => {
                metadata.insert(MANIFEST_METADATA_KEY.to_owned(), manifest.clone());
            }
        }
    }
    match (
        &claims.room_manifest,
        metadata.get(ROOM_MANIFEST_METADATA_KEY),
    ) {
        (allowed, Some(asked)) if allowed.as_ref() != Some(asked) => {
            refused("wrong_room_manifest");
            return Err(SignalingError::PermissionDenied(match allowed {
                Some(allowed) => format!(
                    "the token allows room manifest {allowed:?}, not {:?}",
                    bounded(asked)
                ),
                None => format!(
                    "the token allows no room manifest, not {:?}",
                    bounded(asked)
                ),
            }));
        }
        (Some(allowed), _) => {
            metadata.insert(ROOM_MANIFEST_METADATA_KEY.to_owned(), allowed.clone());
        }
        (None, _) => {}
    }
    match (&claims.room, metadata.get(ROOM_METADATA_KEY)) {
        (Some(claimed), Some(asked)) if asked != claimed => {
            refused("wrong_room");
            return Err(SignalingError::WrongRoom {
                claimed: claimed.clone(),
                asked: bounded(asked),
            });
        }
        (Some(claimed), _) => {
            metadata.insert(ROOM_METADATA_KEY.to_owned(), claimed.clone());
        }
        (None, Some(asked)) if require_room_claim => {
            refused("room_claim_required");
            return Err(SignalingError::RoomClaimRequired(bounded(asked)));
        }
        (None, _) => {}
    }
    Ok(())
}

/// Longest manifest name a client may ask for.
const MAX_MANIFEST_NAME: usize = 64;

/// A client's value as an error message echoes it: bounded, whatever the client sent.
fn bounded(value: &str) -> String {
    value.chars().take(MAX_MANIFEST_NAME + 1).collect()
}

/// Manifest names from clients are plain names (`[A-Za-z0-9_-]`), never paths: the catalog
/// only looks names up, and this keeps it so whatever changes behind it.
fn validate_manifest_name(name: &str) -> Result<(), SignalingError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > MAX_MANIFEST_NAME || !name.chars().all(plain) {
        let shown: String = name.chars().take(MAX_MANIFEST_NAME).collect();
        return Err(SignalingError::InvalidManifestName(shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::auth::Claims;

    fn token(room: Option<&str>) -> Identity {
        Identity::Verified(Claims {
            sub: "alice".into(),
            exp: u64::MAX / 2,
            room: room.map(str::to_owned),
            manifest: None,
            room_manifest: None,
        })
    }

    fn metadata(room: Option<&str>) -> HashMap<String, String> {
        room.map(|room| HashMap::from([(ROOM_METADATA_KEY.to_owned(), room.to_owned())]))
            .unwrap_or_default()
    }

    /// The room a peer ends up in after the claims, or the refusal's label.
    fn joined(
        identity: &Identity,
        asked: Option<&str>,
        require: bool,
    ) -> Result<Option<String>, &'static str> {
        let mut metadata = metadata(asked);
        apply_claims(identity, "alice", &mut metadata, require)
            .map(|()| metadata.get(ROOM_METADATA_KEY).cloned())
            .map_err(|err| err.metric_label())
    }

    #[test]
    fn a_room_claim_is_the_only_room_its_token_joins() {
        let claim = token(Some("r1"));
        for require in [false, true] {
            assert_eq!(joined(&claim, None, require), Ok(Some("r1".into())));
            assert_eq!(joined(&claim, Some("r1"), require), Ok(Some("r1".into())));
            assert_eq!(joined(&claim, Some("r2"), require), Err("wrong_room"));
        }
    }

    /// The room manifest a peer asks for after the claims, or the refusal's message.
    fn asks(identity: &Identity, asked: Option<&str>) -> Result<Option<String>, String> {
        let mut metadata = metadata(Some("r1"));
        if let Some(asked) = asked {
            metadata.insert(ROOM_MANIFEST_METADATA_KEY.to_owned(), asked.to_owned());
        }
        apply_claims(identity, "alice", &mut metadata, false)
            .map(|()| metadata.get(ROOM_MANIFEST_METADATA_KEY).cloned())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn only_a_room_manifest_claim_lets_a_token_ask_for_a_room_pipeline() {
        let Identity::Verified(mut claims) = token(None) else {
            unreachable!()
        };
        claims.room_manifest = Some("vad".into());
        let allowed = Identity::Verified(claims);
        assert_eq!(asks(&allowed, None), Ok(Some("vad".into())));
        assert_eq!(asks(&allowed, Some("vad")), Ok(Some("vad".into())));
        let other = asks(&allowed, Some("tts")).unwrap_err();
        assert!(
            other.contains("allows room manifest \"vad\", not \"tts\""),
            "{other}"
        );
        let plain = token(None);
        assert_eq!(asks(&plain, None), Ok(None));
        let none = asks(&plain, Some("vad")).unwrap_err();
        assert!(none.contains("allows no room manifest"), "{none}");
        // Without authentication any name may be asked for (the room decides).
        assert_eq!(
            asks(&Identity::Anonymous, Some("vad")),
            Ok(Some("vad".into()))
        );
    }

    #[test]
    fn a_token_without_a_room_claim_joins_any_room_unless_one_is_required() {
        let plain = token(None);
        assert_eq!(joined(&plain, Some("r2"), false), Ok(Some("r2".into())));
        assert_eq!(joined(&plain, Some("r2"), true), Err("room_claim_required"));
        // The lobby needs no claim.
        assert_eq!(joined(&plain, None, true), Ok(None));
        // Without authentication the flag has nothing to check.
        assert_eq!(
            joined(&Identity::Anonymous, Some("r2"), true),
            Ok(Some("r2".into()))
        );
    }

    #[test]
    fn room_refusals_have_their_codes_in_both_mappings() {
        let wrong = SignalingError::WrongRoom {
            claimed: "r1".into(),
            asked: "r2".into(),
        };
        assert_eq!(wrong.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            wrong.jsonrpc_code(),
            super::super::jsonrpc::PERMISSION_DENIED
        );
        let full: SignalingError = RegistryError::RoomFull {
            room: "standup".into(),
            max: 2,
        }
        .into();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        assert_eq!(full.jsonrpc_code(), super::super::jsonrpc::SESSION_LIMIT);
        assert!(full.to_string().contains("standup"), "{full}");
        let name: SignalingError = RoomName::parse("a b").unwrap_err().into();
        assert_eq!(name.code(), tonic::Code::InvalidArgument);
        assert_eq!(name.jsonrpc_code(), super::super::jsonrpc::INVALID_PARAMS);
    }
}
