//! A room's share of the relay between the workers that host it (#16), kept out of the room
//! actor: the actor hands its tracks and packets here, and gets the other workers' tracks
//! back as producers to add.
//!
//! - *Publishing side* (worker A): the room lists its local tracks in the room's record
//!   ([`SpanHost::set_local_tracks`]); a worker B that wants some opens a link here (worker
//!   API `OpenRelay`), and each wanted track's fanout gets a [`RelayTap`]: one copy per track
//!   per link, whatever B's subscriber count, sent by one task per link ([`OutboundLinks`]).
//! - *Receiving side* (worker B): the other workers' tracks ([`RemoteWorkers`], followed
//!   through the record) become remote producers of the room; one task per remote worker
//!   ([`InboundLinks`]) keeps a link open to it carrying exactly those tracks and feeds each
//!   packet (demultiplexed by its SSRC, [`relay_ssrc`]) into the producer's fanout, where
//!   local subscribers take it as they take a local publisher's.
//!
//! The cluster side (Redis, worker API calls, the relay socket) is behind [`SpanHost`], so
//! `peer/` stays free of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::util::Unmarshal;

use super::room_forward::{Fanout, ForwardCounters};
use super::room_lead::{Lead, LeadMessage};
use super::room_pipeline::MixTap;
use crate::room::{AudioLevel, MediaKind, Producer, RoomName};
use crate::room_relay::{
    relay_ssrc, RelayError, RelayPacket, RelaySender, RelayedCodec, RelayedTrack,
};

/// How long a receiving worker waits before opening a link again after a failed call; it
/// doubles while the calls keep failing, up to [`REOPEN_MAX`], so a worker that cannot be
/// reached is neither hammered nor logged every second.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
const REOPEN_MAX: Duration = Duration::from_secs(30);

/// The wait before the next try after `failures` failed calls in a row (at least one).
fn reopen_delay(failures: u32) -> Duration {
    REOPEN_AFTER
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(REOPEN_MAX)
}

/// One other hosting worker of a room, as the room's record and its heartbeat say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteWorker {
    /// Its worker API address.
    pub api: String,
    /// Its relay socket (where its packets come from).
    pub relay: SocketAddr,
    /// The tracks published on it.
    pub tracks: Vec<RelayedTrack>,
}

/// The other hosting workers of a room, by id.
pub(crate) type RemoteWorkers = BTreeMap<String, RemoteWorker>;

/// What a room needs from the cluster to span workers.
#[async_trait::async_trait]
pub(crate) trait SpanHost: Send + Sync {
    /// The room's other hosting workers and their tracks, kept current while the receiver
    /// lives.
    fn follow(&self, room: &RoomName) -> watch::Receiver<RemoteWorkers>;
    /// The tracks published on this worker changed: written to the room's record, and the
    /// other hosting workers told.
    fn set_local_tracks(&self, room: &RoomName, tracks: Vec<RelayedTrack>);
    /// Accepts a link from `worker` on this worker's relay socket and asks it to send
    /// `tracks` (its producer ids) there: the link's id and its packets.
    ///
    /// # Errors
    /// No relay socket here, or the other worker refused or could not be reached.
    async fn open_link(
        &self,
        room: &RoomName,
        worker: &str,
        remote: &RemoteWorker,
        tracks: &[u64],
    ) -> Result<(u32, mpsc::Receiver<RelayPacket>), RelayError>;
    /// Replaces the tracks an open link carries.
    ///
    /// # Errors
    /// The other worker has no such link any more, or could not be reached.
    async fn update_link(
        &self,
        room: &RoomName,
        remote: &RemoteWorker,
        link: u32,
        tracks: &[u64],
    ) -> Result<(), RelayError>;
    /// Closes a link here and asks the other worker to stop sending (best effort).
    async fn close_link(&self, room: &RoomName, remote: &RemoteWorker, link: u32);
    /// Who leads the room and what the lead says (`room_lead.rs`), kept current while the
    /// [`Lead`] lives.
    fn follow_lead(&self, _room: &RoomName) -> Lead {
        Lead::alone()
    }
    /// Tells the room's other workers what this one, leading, computed (best effort: a lost
    /// speaker list is replaced by the next).
    fn tell_followers(&self, _room: &RoomName, _message: LeadMessage) {}
}

/// A publishing worker's copy of one track for one link: the fanout hands it every packet.
pub(crate) struct RelayTap {
    /// (receiving worker, link id).
    pub link: (String, u32),
    /// The SSRC the copy carries on the link.
    pub ssrc: u32,
    /// The link's sending task; full means the link falls behind and the packet is dropped.
    pub queue: mpsc::Sender<Bytes>,
}

/// A request of another worker's API call for this room (publishing side).
pub(crate) enum RelayRequest {
    Open {
        worker: String,
        link: u32,
        sender: RelaySender,
        tracks: Vec<u64>,
        reply: oneshot::Sender<Vec<u64>>,
    },
    Update {
        worker: String,
        link: u32,
        tracks: Vec<u64>,
        /// `None`: no such link.
        reply: oneshot::Sender<Option<Vec<u64>>>,
    },
    Close {
        worker: String,
        link: u32,
        reply: oneshot::Sender<bool>,
    },
}

/// The links other workers opened to this room here.
#[derive(Default)]
pub(crate) struct OutboundLinks {
    links: HashMap<(String, u32), OutboundLink>,
}

struct OutboundLink {
    queue: mpsc::Sender<Bytes>,
    tracks: BTreeSet<u64>,
    /// Stops the link's sending task.
    _stop: DropGuard,
}

impl OutboundLinks {
    /// Applies a request; `local` holds the fanouts of the tracks published here, by
    /// producer id.
    pub fn handle(
        &mut self,
        request: RelayRequest,
        local: &BTreeMap<u64, Arc<Fanout>>,
        tasks: &TaskTracker,
    ) {
        match request {
            RelayRequest::Open {
                worker,
                link,
                sender,
                tracks,
                reply,
            } => {
                let key = (worker, link);
                self.close(&key, local);
                let (queue, packets) = mpsc::channel(crate::room_relay::LINK_QUEUE);
                let stop = CancellationToken::new();
                tasks.spawn(send_link(sender, packets, stop.clone()));
                self.links.insert(
                    key.clone(),
                    OutboundLink {
                        queue,
                        tracks: BTreeSet::new(),
                        _stop: stop.drop_guard(),
                    },
                );
                let _ = reply.send(self.set_tracks(&key, &tracks, local));
            }
            RelayRequest::Update {
                worker,
                link,
                tracks,
                reply,
            } => {
                let key = (worker, link);
                let relayed = self
                    .links
                    .contains_key(&key)
                    .then(|| self.set_tracks(&key, &tracks, local));
                let _ = reply.send(relayed);
            }
            RelayRequest::Close {
                worker,
                link,
                reply,
            } => {
                let _ = reply.send(self.close(&(worker, link), local));
            }
        }
    }

    /// Taps the wanted tracks that are published here, untaps the others; returns the
    /// tapped ones.
    fn set_tracks(
        &mut self,
        key: &(String, u32),
        wanted: &[u64],
        local: &BTreeMap<u64, Arc<Fanout>>,
    ) -> Vec<u64> {
        let Some(link) = self.links.get_mut(key) else {
            return Vec::new();
        };
        let wanted: BTreeSet<u64> = wanted
            .iter()
            .copied()
            .filter(|id| local.contains_key(id))
            .collect();
        for gone in link.tracks.difference(&wanted) {
            if let Some(fanout) = local.get(gone) {
                fanout.remove_relay(key);
            }
        }
        for &added in wanted.difference(&link.tracks) {
            if let Some(fanout) = local.get(&added) {
                fanout.add_relay(RelayTap {
                    link: key.clone(),
                    ssrc: relay_ssrc(added),
                    queue: link.queue.clone(),
                });
            }
        }
        link.tracks.clone_from(&wanted);
        wanted.into_iter().collect()
    }

    fn close(&mut self, key: &(String, u32), local: &BTreeMap<u64, Arc<Fanout>>) -> bool {
        let Some(link) = self.links.remove(key) else {
            return false;
        };
        for track in &link.tracks {
            if let Some(fanout) = local.get(track) {
                fanout.remove_relay(key);
            }
        }
        true
    }
}

/// Sends one outbound link's packets until the room closes it.
async fn send_link(
    mut sender: RelaySender,
    mut packets: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let packet = tokio::select! {
            () = stop.cancelled() => break,
            packet = packets.recv() => match packet {
                Some(packet) => packet,
                None => break,
            },
        };
        if let Err(err) = sender.send_rtp(&packet).await {
            tracing::debug!(%err, "relaying a packet failed");
        }
    }
}

/// What an inbound link carries: its worker and the wanted tracks' fanouts, by relay SSRC.
#[derive(Clone)]
pub(crate) struct Wanted {
    pub remote: RemoteWorker,
    pub tracks: BTreeMap<u32, WantedTrack>,
}

/// One relayed track on the receiving side.
#[derive(Clone)]
pub(crate) struct WantedTrack {
    /// The publishing worker's producer id.
    pub producer: u64,
    pub fanout: Arc<Fanout>,
    pub kind: MediaKind,
    /// The publisher's id of the RFC 6464 extension, read into the fanout's meter.
    pub audio_level: Option<u8>,
    /// Decodes the track into the room pipeline's mix (the room's lead: `room_lead.rs`).
    pub mix: Option<Arc<MixTap>>,
}

impl Wanted {
    fn producers(&self) -> Vec<u64> {
        self.tracks.values().map(|t| t.producer).collect()
    }
}

/// The links this room keeps open to its other workers, one per worker with tracks.
pub(crate) struct InboundLinks {
    host: Arc<dyn SpanHost>,
    room: RoomName,
    links: HashMap<String, InboundLink>,
}

struct InboundLink {
    wanted: watch::Sender<Wanted>,
    /// Ends the link's task (which closes the link).
    _stop: DropGuard,
}

impl InboundLinks {
    pub fn new(host: Arc<dyn SpanHost>, room: RoomName) -> Self {
        Self {
            host,
            room,
            links: HashMap::new(),
        }
    }

    /// One link per worker of `wanted` (opened, or its tracks updated); the links of other
    /// workers close.
    pub fn set(&mut self, wanted: BTreeMap<String, Wanted>, tasks: &TaskTracker) {
        self.links.retain(|worker, _| wanted.contains_key(worker));
        for (worker, wanted) in wanted {
            if let Some(link) = self.links.get(&worker) {
                link.wanted.send_if_modified(|current| {
                    let changed = current.remote != wanted.remote
                        || current.producers() != wanted.producers();
                    *current = wanted;
                    changed
                });
                continue;
            }
            let (tx, rx) = watch::channel(wanted);
            let stop = CancellationToken::new();
            tasks.spawn(receive_link(
                Arc::clone(&self.host),
                self.room.clone(),
                worker.clone(),
                rx,
                stop.clone(),
            ));
            self.links.insert(
                worker,
                InboundLink {
                    wanted: tx,
                    _stop: stop.drop_guard(),
                },
            );
        }
    }
}

/// Keeps one inbound link open to `worker` with the wanted tracks and feeds its packets to
/// their fanouts; closes it when the room lets go. A failed call is tried again after
/// [`reopen_delay`], or at once when the wanted tracks or the other worker change.
async fn receive_link(
    host: Arc<dyn SpanHost>,
    room: RoomName,
    worker: String,
    mut wanted: watch::Receiver<Wanted>,
    stop: CancellationToken,
) {
    let audio = ForwardCounters::new("audio");
    let video = ForwardCounters::new("video");
    let mut failures: u32 = 0;
    'open: while !stop.is_cancelled() {
        let current = wanted.borrow_and_update().clone();
        let opened = host
            .open_link(&room, &worker, &current.remote, &current.producers())
            .await;
        let (link, mut packets) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = reopen_delay(failures);
                // Logged at the 1st, 2nd, 4th, 8th... failure in a row: a lasting failure
                // stays visible without a line every retry.
                if failures.is_power_of_two() {
                    tracing::warn!(%room, worker, %err, failures, retry_in = ?wait, "opening a relay link failed");
                } else {
                    tracing::debug!(%room, worker, %err, failures, retry_in = ?wait, "opening a relay link failed");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue 'open,
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue 'open;
                    }
                }
            }
        };
        if failures > 0 {
            tracing::info!(%room, worker, link, failures, "relay link open after failed tries");
            failures = 0;
        }
        tracing::debug!(%room, worker, link, "relay link open");
        let mut remote = current.remote;
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    host.close_link(&room, &remote, link).await;
                    return;
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        host.close_link(&room, &remote, link).await;
                        return;
                    }
                    let next = wanted.borrow_and_update().clone();
                    let updated = if next.remote == remote {
                        host.update_link(&room, &remote, link, &next.producers()).await
                    } else {
                        Err(RelayError::UnknownLink(link))
                    };
                    if let Err(err) = updated {
                        // The other worker lost the link (its room ended meanwhile) or moved:
                        // open a fresh one.
                        tracing::debug!(%room, worker, link, %err, "relay link reopened");
                        host.close_link(&room, &remote, link).await;
                        continue 'open;
                    }
                    remote = next.remote;
                }
                packet = packets.recv() => match packet {
                    Some(RelayPacket::Rtp(bytes)) => {
                        deliver(&bytes, &wanted, &audio, &video).await;
                    }
                    // RTCP from the publishing side: not used yet (#16: sender reports).
                    Some(RelayPacket::Rtcp(_)) => {}
                    None => {
                        host.close_link(&room, &remote, link).await;
                        continue 'open;
                    }
                },
            }
        }
    }
}

/// Hands one relayed packet to its track's fanout (a packet of a track no longer wanted is
/// dropped).
async fn deliver(
    bytes: &Bytes,
    wanted: &watch::Receiver<Wanted>,
    audio: &ForwardCounters,
    video: &ForwardCounters,
) {
    let Ok(packet) = Packet::unmarshal(&mut bytes.as_ref()) else {
        return;
    };
    let Some(track) = wanted.borrow().tracks.get(&packet.header.ssrc).cloned() else {
        return;
    };
    let level = track
        .audio_level
        .and_then(|id| packet.header.get_extension(id))
        .and_then(|payload| AudioLevel::parse(&payload));
    track.fanout.meter.record(level);
    if let Some(mix) = &track.mix {
        mix.feed(&packet.payload);
    }
    let counters = match track.kind {
        MediaKind::Audio => audio,
        MediaKind::Video => video,
    };
    track.fanout.send(&packet, counters).await;
}

/// A room's relay state on this worker: the other workers' tracks it follows, the links it
/// keeps to them, the links they opened here, and the local tracks last written to the
/// record.
pub(crate) struct SpanState {
    host: Arc<dyn SpanHost>,
    room: RoomName,
    workers: watch::Receiver<RemoteWorkers>,
    pub inbound: InboundLinks,
    pub outbound: OutboundLinks,
    reported: Option<Vec<RelayedTrack>>,
}

impl SpanState {
    pub fn new(host: Arc<dyn SpanHost>, room: RoomName) -> Self {
        Self {
            workers: host.follow(&room),
            inbound: InboundLinks::new(Arc::clone(&host), room.clone()),
            outbound: OutboundLinks::default(),
            reported: None,
            host,
            room,
        }
    }

    /// Completes when the other workers' tracks changed (never once the host stopped
    /// following).
    pub async fn changed(&mut self) {
        if self.workers.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The other workers' tracks now.
    pub fn workers(&mut self) -> RemoteWorkers {
        self.workers.borrow_and_update().clone()
    }

    /// Writes the local tracks to the record when they changed since the last write.
    pub fn report(&mut self, tracks: Vec<RelayedTrack>) {
        if self.reported.as_ref() != Some(&tracks) {
            self.host.set_local_tracks(&self.room, tracks.clone());
            self.reported = Some(tracks);
        }
    }
}

/// Completes when `span`'s remote tracks changed; never without one.
pub(crate) async fn remote_changed(span: &mut Option<SpanState>) {
    match span {
        Some(span) => span.changed().await,
        None => std::future::pending().await,
    }
}

/// A local producer as the room's record lists it.
pub(crate) fn relayed_track(
    producer: &Producer,
    codec: &RTCRtpCodecCapability,
    extensions: &[(u8, String)],
) -> RelayedTrack {
    RelayedTrack {
        publisher: producer.publisher.to_string(),
        track_id: producer.track.msid_track(),
        kind: producer.track.kind,
        layers: producer
            .track
            .layers
            .iter()
            .map(|l| l.rid.clone())
            .collect(),
        producer: producer.id.0,
        codec: RelayedCodec {
            mime_type: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
            channels: codec.channels,
            fmtp: codec.sdp_fmtp_line.clone(),
        },
        extensions: extensions.to_vec(),
    }
}

/// A relayed track's codec as its forwarded lines are made of it.
pub(crate) fn codec_capability(codec: &RelayedCodec) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: codec.mime_type.clone(),
        clock_rate: codec.clock_rate,
        channels: codec.channels,
        sdp_fmtp_line: codec.fmtp.clone(),
        rtcp_feedback: vec![],
    }
}

#[cfg(test)]
#[path = "room_relay_link_tests.rs"]
mod tests;
