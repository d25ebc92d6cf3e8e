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
//! Each link has a back channel from B to A ([`OpenedLink::back`], [`BackChannel`]): A
//! reports on every link twice a second and B answers (`room_relay/liveness.rs`), so a
//! link is never quiet while both ends live. B opens a link that went silent again, and
//! when that fails drops the other worker's tracks from the room until it is back
//! ([`SpanState::workers`]); A closes a link that heard nothing back for 5 s.
//!
//! RTCP over the back channel, for the PLI/FIR/NACK of B's subscribers: B's room sends with
//! [`InboundLinks::send_rtcp`], A's room receives [`SpanEvent::Feedback`] ([`LinkFeedback`]).
//!
//! The cluster side (Redis, worker API calls, the relay socket) is behind [`SpanHost`], so
//! `peer/` stays free of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webrtc::rtcp::goodbye::Goodbye;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::util::{MarshalSize, Unmarshal};

use super::room_forward::{Fanout, ForwardCounters};
use super::room_lead::{Lead, LeadMessage};
use super::room_pipeline::MixTap;
use crate::room::{AudioLevel, MediaKind, Producer, RoomName};
use crate::room_relay::liveness::{
    self, ntp_time, ReceiveReports, SendReports, Silence, LINK_SSRC, RECEIVE_SILENCE,
    REPORT_INTERVAL, SEND_SILENCE,
};
use crate::room_relay::metrics::metrics;
use crate::room_relay::{
    relay_ssrc, LinkGuard, RelayError, RelayPacket, RelaySender, RelayedCodec, RelayedTrack,
};

/// RTCP packets waiting for a link's back channel, either way (feedback is rare: PLI, FIR,
/// NACK); more are dropped.
const FEEDBACK_QUEUE: usize = 64;

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
    /// `tracks` (its producer ids) there: the link's id, its packets and its back channel.
    ///
    /// # Errors
    /// No relay socket here, or the other worker refused or could not be reached.
    async fn open_link(
        &self,
        room: &RoomName,
        worker: &str,
        remote: &RemoteWorker,
        tracks: &[u64],
    ) -> Result<OpenedLink, RelayError>;
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

/// A link a receiving worker opened ([`SpanHost::open_link`]).
pub(crate) struct OpenedLink {
    pub link: u32,
    /// What the publishing worker sends on it (decrypted).
    pub packets: mpsc::Receiver<RelayPacket>,
    /// Sends RTCP back to the publishing worker on the link's back channel; `None` when it
    /// has none (an older worker).
    pub back: Option<RelaySender>,
}

/// A link's back channel on the publishing worker: what the receiving worker sends about
/// the link's tracks (receiver reports, PLI/FIR/NACK). Closes its inbound link when
/// dropped, with the link.
pub(crate) struct BackChannel {
    pub packets: mpsc::Receiver<RelayPacket>,
    pub guard: LinkGuard,
}

/// RTCP a receiving worker sent back on a link, for the room on the publishing worker:
/// feedback of its subscribers (anything but receiver reports, which the link reads itself).
#[derive(Debug, Clone)]
pub(crate) struct LinkFeedback {
    /// The receiving worker.
    pub worker: String,
    pub link: u32,
    /// The compound RTCP packet as sent (decrypted). Media SSRCs in it are relay SSRCs:
    /// [`relay_ssrc`] of this worker's producer ids.
    pub rtcp: Bytes,
}

/// What a link's sending task tells its room.
enum OutboundEvent {
    Feedback(LinkFeedback),
    /// Nothing came back for [`SEND_SILENCE`]: the link is to be closed.
    Silent {
        key: (String, u32),
        serial: u64,
    },
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
        /// Boxed: an SRTP context is large, the other requests small.
        sender: Box<RelaySender>,
        /// The link's back channel (none: the other worker sends nothing back).
        back: Option<BackChannel>,
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
pub(crate) struct OutboundLinks {
    links: HashMap<(String, u32), OutboundLink>,
    /// Numbers the links, so that a replaced link's late event closes nothing.
    serial: u64,
    events: mpsc::Sender<OutboundEvent>,
    events_rx: mpsc::Receiver<OutboundEvent>,
}

impl Default for OutboundLinks {
    fn default() -> Self {
        let (events, events_rx) = mpsc::channel(FEEDBACK_QUEUE);
        Self {
            links: HashMap::new(),
            serial: 0,
            events,
            events_rx,
        }
    }
}

struct OutboundLink {
    queue: mpsc::Sender<Bytes>,
    /// The tapped tracks' fanouts, by producer id.
    tracks: BTreeMap<u64, Arc<Fanout>>,
    serial: u64,
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
                back,
                tracks,
                reply,
            } => {
                let key = (worker, link);
                self.close(&key);
                let (queue, packets) = mpsc::channel(crate::room_relay::LINK_QUEUE);
                let stop = CancellationToken::new();
                self.serial += 1;
                tasks.spawn(
                    SendingLink {
                        key: key.clone(),
                        serial: self.serial,
                        sender,
                        back,
                        events: self.events.clone(),
                    }
                    .run(packets, stop.clone()),
                );
                self.links.insert(
                    key.clone(),
                    OutboundLink {
                        queue,
                        tracks: BTreeMap::new(),
                        serial: self.serial,
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
                let _ = reply.send(self.close(&(worker, link)));
            }
        }
    }

    /// The next RTCP feedback another worker sent back on a link here; closes the links
    /// found silent meanwhile (their taps removed). Cancel-safe.
    pub async fn feedback(&mut self) -> LinkFeedback {
        loop {
            // Never `None`: `self` holds a sender.
            let Some(event) = self.events_rx.recv().await else {
                return std::future::pending().await;
            };
            match event {
                OutboundEvent::Feedback(feedback) => return feedback,
                OutboundEvent::Silent { key, serial } => {
                    if self.links.get(&key).is_some_and(|l| l.serial == serial) {
                        self.close(&key);
                    }
                }
            }
        }
    }

    /// Links open here.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.links.len()
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
        let wanted: BTreeMap<u64, Arc<Fanout>> = wanted
            .iter()
            .filter_map(|id| Some((*id, Arc::clone(local.get(id)?))))
            .collect();
        for (gone, fanout) in &link.tracks {
            if !wanted.contains_key(gone) {
                fanout.remove_relay(key);
            }
        }
        for (&added, fanout) in &wanted {
            if !link.tracks.contains_key(&added) {
                fanout.add_relay(RelayTap {
                    link: key.clone(),
                    ssrc: relay_ssrc(added),
                    queue: link.queue.clone(),
                });
            }
        }
        let relayed = wanted.keys().copied().collect();
        link.tracks = wanted;
        relayed
    }

    fn close(&mut self, key: &(String, u32)) -> bool {
        let Some(link) = self.links.remove(key) else {
            return false;
        };
        for fanout in link.tracks.values() {
            fanout.remove_relay(key);
        }
        true
    }
}

/// One outbound link's sending task: the tapped tracks' packets, a report every
/// [`REPORT_INTERVAL`], and what comes back.
struct SendingLink {
    key: (String, u32),
    serial: u64,
    sender: Box<RelaySender>,
    back: Option<BackChannel>,
    events: mpsc::Sender<OutboundEvent>,
}

impl SendingLink {
    /// Runs until the room closes the link, or the link is silent for [`SEND_SILENCE`]
    /// (it asks the room to close it then).
    async fn run(mut self, mut packets: mpsc::Receiver<Bytes>, stop: CancellationToken) {
        let _sending = Sending::start();
        let mut reports = SendReports::default();
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut silence = Silence::new(Instant::now().into_std(), SEND_SILENCE);
        let (mut back, _guard) = match self.back.take() {
            Some(back) => (Some(back.packets), Some(back.guard)),
            None => (None, None),
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                packet = packets.recv() => {
                    let Some(packet) = packet else { break };
                    if let Ok(header) = Header::unmarshal(&mut packet.as_ref()) {
                        let payload = packet.len().saturating_sub(header.marshal_size());
                        reports.on_rtp(header.ssrc, header.timestamp, payload, Instant::now().into_std());
                    }
                    if let Err(err) = self.sender.send_rtp(&packet).await {
                        tracing::debug!(%err, "relaying a packet failed");
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now().into_std();
                    // Without a back channel (an older worker) the link is never found silent.
                    if back.is_some() && silence.is_silent(now) {
                        let (worker, link) = &self.key;
                        tracing::warn!(worker, link, silent = ?SEND_SILENCE, "relay link: nothing back from the receiving worker, closed");
                        metrics().silent.with_label_values(&["sending"]).inc();
                        let silent = OutboundEvent::Silent { key: self.key.clone(), serial: self.serial };
                        // Full: the room is behind, and its link task ends here anyway.
                        let _ = self.events.try_send(silent);
                        break;
                    }
                    let report = liveness::marshal(&reports.report(now, ntp_time(SystemTime::now())));
                    if let Err(err) = self.sender.send_rtcp(&report).await {
                        tracing::debug!(%err, "a relay report failed");
                    }
                }
                packet = recv_or_pending(&mut back) => match packet {
                    Some(packet) => {
                        silence.heard(Instant::now().into_std());
                        if let RelayPacket::Rtcp(rtcp) = packet {
                            self.on_rtcp(rtcp);
                        }
                    }
                    // The relay socket let go of the back channel (it is closing).
                    None => back = None,
                },
            }
        }
        // The receiving worker need not wait for silence to learn the link ended (when it
        // asked for the close itself, its end is gone and this is dropped there).
        let bye: Box<dyn webrtc::rtcp::packet::Packet + Send + Sync> = Box::new(Goodbye {
            sources: vec![LINK_SSRC],
            reason: Bytes::new(),
        });
        let _ = self.sender.send_rtcp(&liveness::marshal(&[bye])).await;
    }

    /// Reads the receiver reports (the relay's round trip, loss and jitter) and hands
    /// anything else to the room.
    fn on_rtcp(&self, rtcp: Bytes) {
        let Ok(packets) = webrtc::rtcp::packet::unmarshal(&mut rtcp.as_ref()) else {
            return;
        };
        let ntp = ntp_time(SystemTime::now());
        let mut feedback = false;
        for packet in &packets {
            match packet.as_any().downcast_ref::<ReceiverReport>() {
                Some(report) => {
                    for quality in SendReports::on_receiver_report(&report.reports, ntp) {
                        if let Some(rtt) = quality.rtt {
                            metrics().rtt.observe(rtt.as_secs_f64());
                        }
                        metrics().loss.observe(quality.fraction_lost);
                        metrics().jitter.observe(quality.jitter.as_secs_f64());
                    }
                }
                None => feedback = true,
            }
        }
        if feedback {
            let (worker, link) = self.key.clone();
            // Full: the room is behind; feedback is repeated by its senders.
            let _ =
                self.events
                    .try_send(OutboundEvent::Feedback(LinkFeedback { worker, link, rtcp }));
        }
    }
}

/// Counts a sending link in `remotemedia_relay_links_sending` while it lives.
struct Sending;

impl Sending {
    fn start() -> Self {
        metrics().links_sending.inc();
        Self
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        metrics().links_sending.dec();
    }
}

/// The next item of `receiver`; never without one.
async fn recv_or_pending<T>(receiver: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
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
    /// Its codec's RTP clock rate (the link's jitter is measured in it).
    pub clock_rate: u32,
    /// Decodes the track into the room pipeline's mix (the room's lead: `room_lead.rs`).
    pub mix: Option<Arc<MixTap>>,
}

impl Wanted {
    fn producers(&self) -> Vec<u64> {
        self.tracks.values().map(|t| t.producer).collect()
    }
}

/// The other workers whose links went silent and could not be opened again: the room drops
/// their tracks until they answer again ([`SpanState::workers`]).
type LostWorkers = Arc<watch::Sender<BTreeSet<String>>>;

/// The links this room keeps open to its other workers, one per worker with tracks.
pub(crate) struct InboundLinks {
    host: Arc<dyn SpanHost>,
    room: RoomName,
    links: HashMap<String, InboundLink>,
    lost: LostWorkers,
}

struct InboundLink {
    wanted: watch::Sender<Wanted>,
    /// RTCP for the publishing worker, sent on the link's back channel.
    rtcp: mpsc::Sender<Bytes>,
    /// Ends the link's task (which closes the link).
    _stop: DropGuard,
}

impl InboundLinks {
    pub fn new(host: Arc<dyn SpanHost>, room: RoomName) -> Self {
        Self {
            host,
            room,
            links: HashMap::new(),
            lost: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }

    /// One link per worker of `wanted` (opened, or its tracks updated); the links of other
    /// workers close, but for lost ones, whose links keep trying to open again.
    pub fn set(&mut self, wanted: BTreeMap<String, Wanted>, tasks: &TaskTracker) {
        {
            let lost = self.lost.borrow();
            self.links
                .retain(|worker, _| wanted.contains_key(worker) || lost.contains(worker));
        }
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
            let (rtcp, rtcp_rx) = mpsc::channel(FEEDBACK_QUEUE);
            let stop = CancellationToken::new();
            let link = ReceivingLink {
                host: Arc::clone(&self.host),
                room: self.room.clone(),
                worker: worker.clone(),
                lost: Arc::clone(&self.lost),
            };
            tasks.spawn(link.run(rx, rtcp_rx, stop.clone()));
            self.links.insert(
                worker,
                InboundLink {
                    wanted: tx,
                    rtcp,
                    _stop: stop.drop_guard(),
                },
            );
        }
    }

    /// Sends `rtcp` (a marshalled RTCP packet, compound or not) to `worker` on the back
    /// channel of this room's link to it: the feedback of subscribers here about a relayed
    /// track (PLI, FIR, NACK), its media SSRC the track's relay SSRC ([`relay_ssrc`] of the
    /// publishing worker's producer id). False, and dropped, when there is no link to
    /// `worker` or its queue is full; a link without a back channel (yet) drops it too.
    // The feedback API of PLI/FIR/NACK over the relay (their sender is still to come).
    #[allow(dead_code)]
    pub fn send_rtcp(&self, worker: &str, rtcp: Bytes) -> bool {
        self.links
            .get(worker)
            .is_some_and(|link| link.rtcp.try_send(rtcp).is_ok())
    }
}

/// Keeps one inbound link open to `worker` with the wanted tracks and feeds its packets to
/// their fanouts; closes it when the room lets go.
struct ReceivingLink {
    host: Arc<dyn SpanHost>,
    room: RoomName,
    worker: String,
    lost: LostWorkers,
}

/// Why a link's open loop went round again.
enum Reopen {
    /// The link went silent, or the relay socket closed it: a failure to open it again
    /// means the other worker is lost.
    Lost,
    /// The wanted tracks or the other worker changed.
    Changed,
    /// The publishing worker ended the link (RTCP BYE: its room ended there): opened
    /// again after [`REOPEN_AFTER`] unless the record says meanwhile that it is gone.
    Ended,
}

impl ReceivingLink {
    /// A failed call is tried again after [`reopen_delay`], or at once when the wanted
    /// tracks or the other worker change. A link silent for [`RECEIVE_SILENCE`] is opened
    /// again; when that fails, or opening fails twice in a row, the worker is marked lost
    /// (the room drops its tracks) until a link opens again.
    async fn run(
        self,
        mut wanted: watch::Receiver<Wanted>,
        mut rtcp: mpsc::Receiver<Bytes>,
        stop: CancellationToken,
    ) {
        let (room, worker) = (&self.room, self.worker.as_str());
        let audio = ForwardCounters::new("audio");
        let video = ForwardCounters::new("video");
        let mut failures: u32 = 0;
        let mut was_lost = false;
        'open: while !stop.is_cancelled() {
            let current = wanted.borrow_and_update().clone();
            // Each setup is a trace of its own (the other worker's `worker.open_relay` joins
            // it): what opened the link is a record change, not a request.
            let setup = tracing::info_span!(
                "relay.link_open",
                otel.kind = "client",
                %room,
                worker,
                tracks = current.tracks.len(),
                reopen = was_lost,
                link = tracing::field::Empty,
                error = tracing::field::Empty,
            );
            let opened = self
                .host
                .open_link(room, worker, &current.remote, &current.producers())
                .instrument(setup.clone())
                .await;
            match &opened {
                Ok(opened) => setup.record("link", opened.link),
                Err(err) => setup.record("error", tracing::field::display(err)),
            };
            drop(setup);
            let OpenedLink {
                link,
                mut packets,
                mut back,
            } = match opened {
                Ok(opened) => opened,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    if was_lost || failures >= 2 {
                        self.set_lost(true);
                    }
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
            if failures > 0 || was_lost {
                tracing::info!(%room, worker, link, failures, "relay link open again");
                failures = 0;
                was_lost = false;
            }
            self.set_lost(false);
            tracing::debug!(%room, worker, link, back = back.is_some(), "relay link open");
            let mut remote = current.remote;
            let start = Instant::now().into_std();
            let mut reports = ReceiveReports::new(start);
            let mut silence = Silence::new(start, RECEIVE_SILENCE);
            let mut check = tokio::time::interval(RECEIVE_SILENCE / 4);
            check.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let reopen = loop {
                tokio::select! {
                    () = stop.cancelled() => {
                        self.host.close_link(room, &remote, link).await;
                        return;
                    }
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            self.host.close_link(room, &remote, link).await;
                            return;
                        }
                        let next = wanted.borrow_and_update().clone();
                        let updated = if next.remote == remote {
                            self.host.update_link(room, &remote, link, &next.producers()).await
                        } else {
                            Err(RelayError::UnknownLink(link))
                        };
                        if let Err(err) = updated {
                            // The other worker lost the link (its room ended meanwhile) or
                            // moved: open a fresh one.
                            tracing::debug!(%room, worker, link, %err, "relay link reopened");
                            self.host.close_link(room, &remote, link).await;
                            break Reopen::Changed;
                        }
                        reports.retain(|ssrc| next.tracks.contains_key(&ssrc));
                        remote = next.remote;
                    }
                    packet = packets.recv() => {
                        let now = Instant::now().into_std();
                        match packet {
                            Some(RelayPacket::Rtp(bytes)) => {
                                silence.heard(now);
                                deliver(&bytes, &wanted, &audio, &video, &mut reports, now).await;
                            }
                            Some(RelayPacket::Rtcp(bytes)) => {
                                silence.heard(now);
                                match answer(&bytes, &mut reports, now) {
                                    Answer::Report(report) => send_back(&mut back, &report).await,
                                    Answer::Bye => {
                                        tracing::debug!(%room, worker, link, "relay link ended by the sending worker");
                                        self.host.close_link(room, &remote, link).await;
                                        break Reopen::Ended;
                                    }
                                    Answer::None => {}
                                }
                            }
                            None => {
                                self.host.close_link(room, &remote, link).await;
                                break Reopen::Lost;
                            }
                        }
                    }
                    feedback = rtcp.recv() => {
                        // `None`: the room let go, and `stop` follows.
                        if let Some(feedback) = feedback {
                            send_back(&mut back, &feedback).await;
                        }
                    }
                    _ = check.tick() => {
                        if silence.is_silent(Instant::now().into_std()) {
                            tracing::warn!(%room, worker, link, silent = ?RECEIVE_SILENCE, "relay link silent: opening it again");
                            metrics().silent.with_label_values(&["receiving"]).inc();
                            // Closed in the background: a call to a dead worker may take its
                            // whole deadline.
                            let (host, room, remote) = (Arc::clone(&self.host), room.clone(), remote.clone());
                            tokio::spawn(async move { host.close_link(&room, &remote, link).await });
                            break Reopen::Lost;
                        }
                    }
                }
            };
            match reopen {
                Reopen::Lost => was_lost = true,
                Reopen::Changed => {}
                Reopen::Ended => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REOPEN_AFTER) => {}
                        changed = wanted.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Marks the worker lost (its tracks leave the room) or found again.
    fn set_lost(&self, lost: bool) {
        self.lost.send_if_modified(|workers| match lost {
            true => workers.insert(self.worker.clone()),
            false => workers.remove(&self.worker),
        });
    }
}

/// What a receiving link does about an RTCP packet of the publishing worker.
enum Answer {
    /// Sends this receiver report back.
    Report(Bytes),
    /// The link ended there.
    Bye,
    None,
}

/// Reads a report of the publishing worker (LSR of its sender reports) and makes the
/// receiver report that answers it.
fn answer(rtcp: &Bytes, reports: &mut ReceiveReports, now: std::time::Instant) -> Answer {
    let Ok(packets) = webrtc::rtcp::packet::unmarshal(&mut rtcp.as_ref()) else {
        return Answer::None;
    };
    let mut reported = false;
    for packet in &packets {
        let packet = packet.as_any();
        if let Some(sr) = packet.downcast_ref::<SenderReport>() {
            reports.on_sender_report(sr.ssrc, sr.ntp_time, now);
            reported = true;
        } else if packet.is::<ReceiverReport>() {
            reported = true;
        } else if packet
            .downcast_ref::<Goodbye>()
            .is_some_and(|bye| bye.sources.contains(&LINK_SSRC))
        {
            return Answer::Bye;
        }
    }
    match reported {
        true => Answer::Report(liveness::marshal(&[Box::new(reports.report(now))])),
        false => Answer::None,
    }
}

/// Sends `rtcp` on a link's back channel, if it has one.
async fn send_back(back: &mut Option<RelaySender>, rtcp: &[u8]) {
    if let Some(back) = back {
        if let Err(err) = back.send_rtcp(rtcp).await {
            tracing::debug!(%err, "sending back on a relay link failed");
        }
    }
}

/// Hands one relayed packet to its track's fanout (a packet of a track no longer wanted is
/// dropped), and counts it for the link's reports.
async fn deliver(
    bytes: &Bytes,
    wanted: &watch::Receiver<Wanted>,
    audio: &ForwardCounters,
    video: &ForwardCounters,
    reports: &mut ReceiveReports,
    now: std::time::Instant,
) {
    let Ok(packet) = Packet::unmarshal(&mut bytes.as_ref()) else {
        return;
    };
    let Some(track) = wanted.borrow().tracks.get(&packet.header.ssrc).cloned() else {
        return;
    };
    reports.on_rtp(
        packet.header.ssrc,
        packet.header.sequence_number,
        packet.header.timestamp,
        track.clock_rate,
        now,
    );
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
    /// The workers whose links went silent and could not be opened again.
    lost: watch::Receiver<BTreeSet<String>>,
    /// Each lost worker's record entry when it was found lost: when the entry changes (the
    /// worker came back, or published anew) it is tried again.
    lost_as: BTreeMap<String, RemoteWorker>,
    pub inbound: InboundLinks,
    pub outbound: OutboundLinks,
    reported: Option<Vec<RelayedTrack>>,
}

impl SpanState {
    pub fn new(host: Arc<dyn SpanHost>, room: RoomName) -> Self {
        let inbound = InboundLinks::new(Arc::clone(&host), room.clone());
        Self {
            workers: host.follow(&room),
            lost: inbound.lost.subscribe(),
            lost_as: BTreeMap::new(),
            inbound,
            outbound: OutboundLinks::default(),
            reported: None,
            host,
            room,
        }
    }

    /// The other workers' tracks now, but for lost workers': a worker whose link went
    /// silent and could not be opened again has its tracks dropped, until its link opens
    /// again or its record entry changes.
    pub fn workers(&mut self) -> RemoteWorkers {
        let mut workers = self.workers.borrow_and_update().clone();
        let lost = self.lost.borrow_and_update().clone();
        self.lost_as.retain(|worker, _| lost.contains(worker));
        let mut found = Vec::new();
        for worker in &lost {
            match (workers.get(worker), self.lost_as.get(worker)) {
                // Gone from the record: nothing left to drop.
                (None, _) => found.push(worker.clone()),
                (Some(now), Some(then)) if now != then => {
                    tracing::info!(room = %self.room, worker, "a lost worker's tracks changed: trying it again");
                    found.push(worker.clone());
                }
                (Some(now), None) => {
                    tracing::warn!(room = %self.room, worker, tracks = now.tracks.len(), "relay link lost: the worker's tracks leave the room");
                    metrics().workers_lost.inc();
                    self.lost_as.insert(worker.clone(), now.clone());
                }
                (Some(_), Some(_)) => {}
            }
        }
        if !found.is_empty() {
            self.inbound.lost.send_modify(|lost| {
                for worker in &found {
                    lost.remove(worker);
                }
            });
            self.lost.borrow_and_update();
        }
        workers.retain(|worker, _| !lost.contains(worker) || found.contains(worker));
        workers
    }

    /// Writes the local tracks to the record when they changed since the last write.
    pub fn report(&mut self, tracks: Vec<RelayedTrack>) {
        if self.reported.as_ref() != Some(&tracks) {
            self.host.set_local_tracks(&self.room, tracks.clone());
            self.reported = Some(tracks);
        }
    }
}

/// What a room's relay state asks of the room.
pub(crate) enum SpanEvent {
    /// The other workers' tracks changed, or a worker was lost or found: sync the remote
    /// producers ([`SpanState::workers`]).
    RemoteChanged,
    /// RTCP another worker sent back on a link here ([`OutboundLinks::feedback`]).
    Feedback(LinkFeedback),
}

/// The next event of `span`; never without one. Cancel-safe.
pub(crate) async fn span_event(span: &mut Option<SpanState>) -> SpanEvent {
    let Some(span) = span else {
        return std::future::pending().await;
    };
    tokio::select! {
        changed = span.workers.changed() => {
            if changed.is_err() {
                // The host stopped following: nothing will change any more.
                return std::future::pending().await;
            }
            SpanEvent::RemoteChanged
        }
        // Never closed: `inbound` holds the sender.
        _ = span.lost.changed() => SpanEvent::RemoteChanged,
        feedback = span.outbound.feedback() => SpanEvent::Feedback(feedback),
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
