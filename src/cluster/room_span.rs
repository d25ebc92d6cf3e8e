//! The cluster side of rooms that span workers (#16): what a worker's rooms need of Redis,
//! of the other workers' API and of its relay socket ([`SpanHost`]), and the worker API's
//! relay calls ([`RelayApi`]).
//!
//! How a worker learns the other hosting workers' tracks: each writes its own
//! `tracks:<worker>` field of the room's record and, when that changed it, publishes on the
//! room's channel; every worker hosting the room subscribes to that channel (one pub/sub
//! connection per worker, one channel per room it hosts) and re-reads the record on a
//! message. Pub/sub delivers at most once and not while the connection is down, so each
//! worker also re-reads its rooms' records every [`REREAD_INTERVAL`] (and writes its tracks
//! again if they differ): a lost message delays a change by that much, never forever.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::keys::Keys;
use super::worker_auth::AttachToken;
use super::worker_tls::{worker_endpoint, WorkerTlsClient};
use super::workers::{read_heartbeat, WorkerStatus, HEARTBEAT_INTERVAL};
use super::{redis_error, room_record};
use crate::peer::{
    BackChannel, FromLead, Lead, LeadMessage, Leadership, OpenedLink, RelayRequest, RemoteWorker,
    RemoteWorkers, SessionManager, SpanHost, TrackLayers, LEAD_QUEUE,
};
use crate::proto::worker::{self as pb, media_worker_client::MediaWorkerClient};
use crate::room::RoomName;
use crate::room_relay::metrics::{metrics as relay_metrics, HOSTING_WORKERS};
use crate::room_relay::{RelayEndpoint, RelayError, RelayKey, RelayedTrack, MAX_RELAYED_LAYERS};

/// The fallback re-read of every followed room's record (and re-write of its tracks here).
pub const REREAD_INTERVAL: Duration = HEARTBEAT_INTERVAL;
/// Lead messages waiting to be published; more are dropped (a speaker list is replaced by
/// the next within 200 ms).
const TOLD_QUEUE: usize = 256;
/// Rooms waiting for an immediate re-read; more are left to the periodic one.
const REREAD_QUEUE: usize = 256;
/// A relay call's deadline: link setup must not hold a room's link task for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

type WorkerClient = MediaWorkerClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
>;

/// A worker's [`SpanHost`].
pub(crate) struct RoomSpan {
    worker_id: String,
    redis: ConnectionManager,
    keys: Keys,
    /// The relay socket and its advertised address (`--relay-port`); without it this
    /// worker's rooms list their tracks but relay nothing.
    relay: Option<(Arc<RelayEndpoint>, String)>,
    token: AttachToken,
    tls: Option<WorkerTlsClient>,
    /// Other workers' API clients, by address (connected lazily, reused).
    clients: Mutex<HashMap<String, WorkerClient>>,
    /// The rooms followed here and their other workers.
    followed: Mutex<HashMap<String, watch::Sender<RemoteWorkers>>>,
    /// The rooms followed here: who leads each, and where its lead's messages go.
    leads: Mutex<HashMap<String, RoomLead>>,
    /// Lead messages of rooms led here, to publish.
    told: mpsc::Sender<(String, FromLead)>,
    told_rx: Mutex<Option<mpsc::Receiver<(String, FromLead)>>>,
    /// Rooms to (subscribe and) re-read now.
    reread: mpsc::Sender<String>,
    reread_rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// The latest tracks of each room here, until written.
    local: Mutex<HashMap<String, Vec<RelayedTrack>>>,
    /// Rooms whose tracks changed since the writer last looked.
    dirty: Mutex<HashSet<String>>,
    /// The number of hosting workers of each followed room, as last read
    /// (`remotemedia_rooms_by_hosting_workers`).
    hosting: Mutex<HashMap<String, usize>>,
    written: Notify,
}

impl RoomSpan {
    pub fn new(
        worker_id: String,
        redis: ConnectionManager,
        keys: Keys,
        relay: Option<(Arc<RelayEndpoint>, String)>,
        token: AttachToken,
        tls: Option<WorkerTlsClient>,
    ) -> Self {
        let (reread, reread_rx) = mpsc::channel(REREAD_QUEUE);
        let (told, told_rx) = mpsc::channel(TOLD_QUEUE);
        Self {
            worker_id,
            redis,
            keys,
            relay,
            token,
            tls,
            clients: Mutex::default(),
            followed: Mutex::default(),
            leads: Mutex::default(),
            told,
            told_rx: Mutex::new(Some(told_rx)),
            reread,
            reread_rx: Mutex::new(Some(reread_rx)),
            local: Mutex::default(),
            dirty: Mutex::default(),
            hosting: Mutex::default(),
            written: Notify::new(),
        }
    }

    /// Runs the follower (pub/sub and the periodic re-read) and the track writer until
    /// `stop`.
    pub async fn run(self: Arc<Self>, client: redis::Client, stop: CancellationToken) {
        let Some(reread) = self.reread_rx.lock().take() else {
            return;
        };
        let Some(told) = self.told_rx.lock().take() else {
            return;
        };
        tokio::join!(
            Arc::clone(&self).follow_rooms(client, reread, stop.clone()),
            self.write_tracks(stop.clone()),
            self.publish_lead(told, stop),
        );
    }

    /// Keeps one pub/sub connection subscribed to the followed rooms' channels and re-reads
    /// a room's record on its messages, on request and every [`REREAD_INTERVAL`].
    async fn follow_rooms(
        self: Arc<Self>,
        client: redis::Client,
        mut reread: mpsc::Receiver<String>,
        stop: CancellationToken,
    ) {
        let prefix = self.keys.room_tracks_channel("");
        let lead_prefix = self.keys.room_lead_channel("");
        while !stop.is_cancelled() {
            let (mut sink, mut messages) = match client.get_async_pubsub().await {
                Ok(pubsub) => pubsub.split(),
                Err(err) => {
                    redis_error("room_follow", &err);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REREAD_INTERVAL) => continue,
                    }
                }
            };
            let mut subscribed: HashSet<String> = HashSet::new();
            let mut tick = tokio::time::interval(REREAD_INTERVAL);
            loop {
                let rooms: Vec<String> = tokio::select! {
                    () = stop.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => {
                            let channel = message.get_channel_name();
                            if let Some(room) = channel.strip_prefix(&lead_prefix) {
                                self.heard_lead(room, message.get_payload_bytes());
                            }
                            channel
                                .strip_prefix(&prefix)
                                .map(|room| vec![room.to_owned()])
                                .unwrap_or_default()
                        }
                        // The connection broke: a new one, subscribed afresh.
                        None => break,
                    },
                    room = reread.recv() => match room {
                        Some(room) => vec![room],
                        None => return,
                    },
                    _ = tick.tick() => {
                        self.dirty.lock().extend(self.local.lock().keys().cloned());
                        self.written.notify_one();
                        self.followed_rooms()
                    }
                };
                // Subscribed before reading, so no change between the two is missed.
                let followed: HashSet<String> = self.followed_rooms().into_iter().collect();
                for room in followed.difference(&subscribed.clone()) {
                    let channels = [
                        self.keys.room_tracks_channel(room),
                        self.keys.room_lead_channel(room),
                    ];
                    if sink.subscribe(&channels).await.is_ok() {
                        subscribed.insert(room.clone());
                    }
                }
                for room in subscribed.clone().difference(&followed) {
                    let channels = [
                        self.keys.room_tracks_channel(room),
                        self.keys.room_lead_channel(room),
                    ];
                    let _ = sink.unsubscribe(&channels).await;
                    subscribed.remove(room);
                }
                for room in rooms {
                    self.reread_room(&room).await;
                }
            }
        }
    }

    /// The rooms some room actor here still follows (the others are forgotten).
    fn followed_rooms(&self) -> Vec<String> {
        self.leads
            .lock()
            .retain(|_, lead| !lead.leadership.is_closed());
        let rooms: Vec<String> = {
            let mut followed = self.followed.lock();
            followed.retain(|_, sender| !sender.is_closed());
            followed.keys().cloned().collect()
        };
        self.count_hosting(|hosting| hosting.retain(|room, _| rooms.contains(room)));
        rooms
    }

    /// Updates the rooms' hosting worker counts and their gauge.
    fn count_hosting(&self, update: impl FnOnce(&mut HashMap<String, usize>)) {
        let mut hosting = self.hosting.lock();
        update(&mut hosting);
        let mut rooms = [0_i64; 3];
        for &workers in hosting.values() {
            rooms[workers.clamp(1, 3) - 1] += 1;
        }
        for (label, count) in HOSTING_WORKERS.iter().zip(rooms) {
            relay_metrics()
                .rooms_by_workers
                .with_label_values(&[label])
                .set(count);
        }
    }

    /// A message published by some room's lead: to that room here, if it follows it.
    fn heard_lead(&self, room: &str, payload: &[u8]) {
        let message: FromLead = match serde_json::from_slice(payload) {
            Ok(message) => message,
            Err(err) => {
                tracing::debug!(room, %err, "an unreadable lead message was ignored");
                return;
            }
        };
        if message.from == self.worker_id {
            return;
        }
        let Some(lead) = self.leads.lock().get(room).map(|l| l.messages.clone()) else {
            return;
        };
        if lead.try_send(message).is_err() {
            tracing::debug!(room, "a lead message was dropped: the room falls behind");
        }
    }

    /// Publishes what the rooms led here tell their other workers, in order.
    async fn publish_lead(
        &self,
        mut told: mpsc::Receiver<(String, FromLead)>,
        stop: CancellationToken,
    ) {
        loop {
            let (room, message) = tokio::select! {
                () = stop.cancelled() => return,
                told = told.recv() => match told {
                    Some(told) => told,
                    None => return,
                },
            };
            let Ok(payload) = serde_json::to_string(&message) else {
                continue;
            };
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(self.keys.room_lead_channel(&room))
                .arg(payload)
                .query_async(&mut self.redis.clone())
                .await;
            if let Err(err) = published {
                redis_error("room_lead", &err);
            }
        }
    }

    /// Who leads `room` by its record: the first listed worker that is this one or alive
    /// (its heartbeat is among `alive`).
    fn leadership(
        &self,
        record: &[(String, Vec<RelayedTrack>)],
        alive: &HashMap<String, WorkerStatus>,
    ) -> Leadership {
        let mut lead = None;
        let mut followers = 0;
        for (worker, _) in record {
            let alive = worker == &self.worker_id || alive.contains_key(worker);
            match (&lead, alive) {
                (_, false) => {}
                (None, true) => lead = Some(worker.clone()),
                (Some(_), true) => followers += 1,
            }
        }
        match lead {
            None => Leadership::Unknown,
            Some(worker) if worker == self.worker_id => Leadership::Here { followers },
            Some(worker) => Leadership::Elsewhere(worker),
        }
    }

    /// Reads `room`'s record and the other workers' heartbeats, and tells the room what
    /// changed.
    async fn reread_room(&self, room: &str) {
        let Some(sender) = self.followed.lock().get(room).cloned() else {
            return;
        };
        let mut redis = self.redis.clone();
        let record = match room_record::read(&mut redis, &self.keys, room).await {
            Ok(record) => record,
            Err(err) => return redis_error("room_read", &err),
        };
        let hosts = record.len();
        self.count_hosting(|hosting| {
            hosting.insert(room.to_owned(), hosts);
        });
        // Each other worker's heartbeat, read once: who is alive (the lead) and where its
        // API and relay socket are (the links).
        let mut alive = HashMap::new();
        for (worker, _) in record.iter().filter(|(w, _)| *w != self.worker_id) {
            match read_heartbeat(&mut redis, &self.keys, worker).await {
                Ok(Some(heartbeat)) => {
                    alive.insert(worker.clone(), heartbeat);
                }
                Ok(None) => {}
                Err(err) => return redis_error("room_read", &err),
            }
        }
        let lead = self.leads.lock().get(room).map(|l| l.leadership.clone());
        if let Some(lead) = lead {
            let now = self.leadership(&record, &alive);
            lead.send_if_modified(|current| {
                let changed = *current != now;
                if changed {
                    tracing::info!(room, lead = ?now, "room lead");
                    *current = now;
                }
                changed
            });
        }
        let mut workers = RemoteWorkers::new();
        for (worker, tracks) in record {
            if tracks.is_empty() {
                continue;
            }
            let Some(heartbeat) = alive.remove(&worker) else {
                continue;
            };
            let Some(relay) = heartbeat.relay_address.as_deref() else {
                continue;
            };
            let Some(relay) = resolve(relay).await else {
                tracing::warn!(
                    worker,
                    relay,
                    "a hosting worker's relay address does not resolve"
                );
                continue;
            };
            workers.insert(
                worker,
                RemoteWorker {
                    api: heartbeat.address,
                    relay,
                    tracks,
                },
            );
        }
        sender.send_if_modified(|current| {
            let changed = *current != workers;
            if changed {
                *current = workers;
            }
            changed
        });
    }

    /// Writes the rooms' changed tracks to their records, one at a time in the order of
    /// changes (so an older list never overwrites a newer one).
    async fn write_tracks(&self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.written.notified() => {}
            }
            let rooms: Vec<String> = self.dirty.lock().drain().collect();
            for room in rooms {
                let Some(tracks) = self.local.lock().get(&room).cloned() else {
                    continue;
                };
                let written = room_record::set_tracks(
                    &mut self.redis.clone(),
                    &self.keys,
                    &room,
                    &self.worker_id,
                    &tracks,
                )
                .await;
                match written {
                    Ok(room_record::TracksWritten::NotHosting) => {
                        // The worker left the record (its last participant left): nothing
                        // more to write until a room actor here reports again.
                        let mut local = self.local.lock();
                        if local.get(&room).is_some_and(|t| *t == tracks) {
                            local.remove(&room);
                        }
                    }
                    Ok(written) => {
                        tracing::debug!(room, tracks = tracks.len(), ?written, "room tracks")
                    }
                    Err(err) => redis_error("room_tracks", &err),
                }
            }
        }
    }

    fn client(&self, api: &str) -> Result<WorkerClient, RelayError> {
        if let Some(client) = self.clients.lock().get(api) {
            return Ok(client.clone());
        }
        let channel = worker_endpoint(api, self.tls.as_ref())
            .map_err(|message| call_error(api, message))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let client = MediaWorkerClient::with_interceptor(channel, self.token.clone());
        self.clients.lock().insert(api.to_owned(), client.clone());
        Ok(client)
    }
}

#[async_trait::async_trait]
impl SpanHost for RoomSpan {
    fn follow(&self, room: &RoomName) -> watch::Receiver<RemoteWorkers> {
        if self.relay.is_none() {
            // No relay socket: this worker's rooms take no other worker's tracks (they would
            // be silent lines), so nothing to follow.
            return watch::channel(RemoteWorkers::new()).1;
        }
        let room = room.to_string();
        let receiver = {
            let mut followed = self.followed.lock();
            match followed.get(&room).filter(|sender| !sender.is_closed()) {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(RemoteWorkers::new());
                    followed.insert(room.clone(), sender);
                    receiver
                }
            }
        };
        // Full: the periodic re-read picks it up.
        let _ = self.reread.try_send(room);
        receiver
    }

    fn set_local_tracks(&self, room: &RoomName, tracks: Vec<RelayedTrack>) {
        let room = room.to_string();
        self.local.lock().insert(room.clone(), tracks);
        self.dirty.lock().insert(room);
        self.written.notify_one();
    }

    async fn open_link(
        &self,
        room: &RoomName,
        worker: &str,
        remote: &RemoteWorker,
        tracks: &[u64],
        layers: &TrackLayers,
    ) -> Result<OpenedLink, RelayError> {
        let (endpoint, advertised) = self.relay.as_ref().ok_or(RelayError::NoRelay)?;
        let key = RelayKey::generate();
        let (link, packets) = endpoint.accept(remote.relay, &key)?;
        let request = pb::OpenRelayRequest {
            room: room.to_string(),
            worker_id: self.worker_id.clone(),
            link_id: link,
            key: key.to_bytes(),
            relay_address: advertised.clone(),
            tracks: tracks.to_vec(),
            layers: layers_to_proto(layers),
        };
        let mut request = tonic::Request::new(request);
        // The other worker's `worker.open_relay` joins the caller's `relay.link_open` span.
        crate::telemetry::inject_current(request.metadata_mut());
        let opened = match self.client(&remote.api) {
            Ok(mut client) => client
                .open_relay(request)
                .await
                .map_err(|status| call_error(worker, status.message())),
            Err(err) => Err(err),
        };
        let response = match opened {
            Ok(response) => response.into_inner(),
            Err(err) => {
                endpoint.close(link);
                return Err(err);
            }
        };
        // The back channel: A accepted B's relay address on its link id, with its key.
        let back = match response.reverse_link_id {
            0 => None,
            reverse => RelayKey::from_bytes(&response.reverse_key)
                .and_then(|key| endpoint.sender(reverse, remote.relay, &key))
                .inspect_err(|err| tracing::warn!(room = %room, worker, %err, "a relay link's back channel is unusable"))
                .ok(),
        };
        Ok(OpenedLink {
            link,
            packets,
            back,
        })
    }

    async fn update_link(
        &self,
        room: &RoomName,
        remote: &RemoteWorker,
        link: u32,
        tracks: &[u64],
        layers: &TrackLayers,
    ) -> Result<(), RelayError> {
        let request = pb::UpdateRelayRequest {
            room: room.to_string(),
            worker_id: self.worker_id.clone(),
            link_id: link,
            tracks: tracks.to_vec(),
            layers: layers_to_proto(layers),
        };
        self.client(&remote.api)?
            .update_relay(request)
            .await
            .map(drop)
            .map_err(|status| call_error(&remote.api, status.message()))
    }

    fn follow_lead(&self, room: &RoomName) -> Lead {
        if self.relay.is_none() {
            return Lead::alone();
        }
        let (leadership, leadership_rx) = watch::channel(Leadership::Unknown);
        let (messages, messages_rx) = mpsc::channel(LEAD_QUEUE);
        self.leads.lock().insert(
            room.to_string(),
            RoomLead {
                leadership,
                messages,
            },
        );
        let _ = self.reread.try_send(room.to_string());
        Lead::new(leadership_rx, messages_rx)
    }

    fn tell_followers(&self, room: &RoomName, message: LeadMessage) {
        let message = FromLead {
            from: self.worker_id.clone(),
            message,
        };
        if self.told.try_send((room.to_string(), message)).is_err() {
            tracing::debug!(room = %room, "a lead message was dropped: Redis falls behind");
        }
    }

    async fn close_link(&self, room: &RoomName, remote: &RemoteWorker, link: u32) {
        if let Some((endpoint, _)) = &self.relay {
            endpoint.close(link);
        }
        let request = pb::CloseRelayRequest {
            room: room.to_string(),
            worker_id: self.worker_id.clone(),
            link_id: link,
        };
        if let Ok(mut client) = self.client(&remote.api) {
            if let Err(status) = client.close_relay(request).await {
                tracing::debug!(room = %room, link, %status, "closing a relay link failed");
            }
        }
    }
}

/// The wanted layers as the worker API carries them.
fn layers_to_proto(layers: &TrackLayers) -> Vec<pb::RelayLayers> {
    layers
        .iter()
        .map(|(&track, layers)| pb::RelayLayers {
            track,
            layers: layers.iter().map(|&layer| u32::from(layer)).collect(),
        })
        .collect()
}

/// The wanted layers of a call; a layer index past what a relay SSRC tells is ignored, and
/// a track listed twice keeps its last entry.
fn layers_from_proto(layers: Vec<pb::RelayLayers>) -> TrackLayers {
    layers
        .into_iter()
        .map(|entry| {
            let wanted = entry
                .layers
                .into_iter()
                .filter(|&layer| (layer as usize) < MAX_RELAYED_LAYERS)
                .filter_map(|layer| u8::try_from(layer).ok())
                .collect();
            (entry.track, wanted)
        })
        .collect()
}

/// A followed room's lead, as the room's record says, and its lead's messages.
struct RoomLead {
    leadership: watch::Sender<Leadership>,
    messages: mpsc::Sender<FromLead>,
}

fn call_error(worker: &str, message: impl std::fmt::Display) -> RelayError {
    RelayError::Call {
        worker: worker.to_owned(),
        message: message.to_string(),
    }
}

/// `host:port` as a socket address (the first it resolves to).
async fn resolve(address: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(address).await.ok()?.next()
}

/// The worker API's relay calls: a link another worker opened here, sent from this
/// worker's relay socket by the room's task.
pub(crate) struct RelayApi {
    pub endpoint: Arc<RelayEndpoint>,
    pub sessions: Arc<SessionManager>,
}

impl RelayApi {
    /// `OpenRelay`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a bad room, key or address; `NOT_FOUND` when the room has no
    /// participant here.
    pub async fn open(
        &self,
        request: pb::OpenRelayRequest,
    ) -> Result<pb::OpenRelayResponse, Status> {
        let room = room_name(&request.room)?;
        let key = RelayKey::from_bytes(&request.key)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let to = resolve(&request.relay_address).await.ok_or_else(|| {
            Status::invalid_argument(format!(
                "relay address {:?} does not resolve",
                request.relay_address
            ))
        })?;
        let sender = self
            .endpoint
            .sender(request.link_id, to, &key)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        // The back channel: B's packets from its relay address, on a link id and key of ours.
        // Closed with the link (the guard), or here if the room is not found.
        let reverse_key = RelayKey::generate();
        let (reverse_link, packets) = self
            .endpoint
            .accept_back(to, &reverse_key)
            .map_err(|err| Status::internal(err.to_string()))?;
        let back = BackChannel {
            packets,
            guard: self.endpoint.close_on_drop(reverse_link),
        };
        let (reply, relayed) = oneshot::channel();
        let open = RelayRequest::Open {
            worker: request.worker_id,
            link: request.link_id,
            sender: Box::new(sender),
            back: Some(back),
            tracks: request.tracks,
            layers: layers_from_proto(request.layers),
            reply,
        };
        let relayed = self.ask(&room, open, relayed).await?;
        Ok(pb::OpenRelayResponse {
            relayed,
            reverse_link_id: reverse_link,
            reverse_key: reverse_key.to_bytes(),
        })
    }

    /// `UpdateRelay`.
    ///
    /// # Errors
    /// `NOT_FOUND` when the room or the link is not here.
    pub async fn update(
        &self,
        request: pb::UpdateRelayRequest,
    ) -> Result<pb::UpdateRelayResponse, Status> {
        let room = room_name(&request.room)?;
        let (reply, relayed) = oneshot::channel();
        let update = RelayRequest::Update {
            worker: request.worker_id,
            link: request.link_id,
            tracks: request.tracks,
            layers: layers_from_proto(request.layers),
            reply,
        };
        let relayed = self
            .ask(&room, update, relayed)
            .await?
            .ok_or_else(|| Status::not_found(format!("no relay link {}", request.link_id)))?;
        Ok(pb::UpdateRelayResponse { relayed })
    }

    /// `CloseRelay`.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a bad room name.
    pub async fn close(
        &self,
        request: pb::CloseRelayRequest,
    ) -> Result<pb::CloseRelayResponse, Status> {
        let room = room_name(&request.room)?;
        let (reply, existed) = oneshot::channel();
        let close = RelayRequest::Close {
            worker: request.worker_id,
            link: request.link_id,
            reply,
        };
        let existed = self.ask(&room, close, existed).await.unwrap_or(false);
        Ok(pb::CloseRelayResponse { existed })
    }

    async fn ask<T>(
        &self,
        room: &RoomName,
        request: RelayRequest,
        reply: oneshot::Receiver<T>,
    ) -> Result<T, Status> {
        let gone = || Status::not_found(format!("room {room} has no participant here"));
        if !self.sessions.relay(room, request).await {
            return Err(gone());
        }
        reply.await.map_err(|_| gone())
    }
}

fn room_name(room: &str) -> Result<RoomName, Status> {
    RoomName::parse(room).map_err(|err| Status::invalid_argument(err.to_string()))
}
