//! One room on this process: a task that owns the room's state ([`crate::room::Room`]) and,
//! per participant, its m-line plan and renegotiation, and applies their decisions to the
//! participants' peer connections. Everything about a room happens in this one task, in the
//! order its commands arrive; the packet path ([`super::room_forward`]) only reads what it
//! set up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::data_channel::RTCDataChannel;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCRtpTransceiver, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

use super::activity::Activity;
use super::advertise::PortMap;
use super::close_reason::CloseReason;
use super::room_forward::{
    forward_published, read_forwarded_rtcp, request_keyframe, Fanout, KeyframeTarget, Sink,
};
use super::sdp::Sdp;
use super::wiring::PublishedRemote;
use crate::proto::common::{data_buffer::DataType, DataBuffer, JsonData};
use crate::room::{
    Consumer, ConsumerConfig, ExtensionMap, ForwardedTrack, LineState, MLinePlan, MediaKind,
    ParticipantId, ProducerId, PublishedTrack, Renegotiation, RenegotiationOutput, Room,
    RoomAction, RoomError, RoomLimits, RoomName,
};
use crate::signaling::{SessionError, SessionEvent};

/// The room channel's label.
pub(crate) const ROOM_CHANNEL: &str = "remotemedia-room";
/// Room channel messages waiting for the channel to open or the client to take them; more
/// are dropped (a track map is sent again after every renegotiation).
const ROOM_CHANNEL_QUEUE: usize = 16;

/// What the rooms of a process share.
pub(crate) struct RoomContext {
    pub limits: RoomLimits,
    pub events: mpsc::Sender<SessionEvent>,
    pub tasks: TaskTracker,
    /// `--public-port`: server offers advertise it as answers do.
    pub port_map: Option<PortMap>,
    pub enable_data_channel: bool,
    /// `--max-datachannel-message-bytes`, advertised in server offers as in answers.
    pub max_message_bytes: usize,
}

/// One participant's connection as the room needs it.
pub(crate) struct Member {
    pub peer: ParticipantId,
    /// The session's id: a replaced session's late commands are ignored.
    pub session: u64,
    pub pc: Arc<RTCPeerConnection>,
    /// The session's media activity (forwarding to it and its RTCP count).
    pub activity: Arc<Activity>,
    /// The session's cancellation: ends its forwarding tasks.
    pub cancel: CancellationToken,
    /// Asks the session manager to close the session (answer timeout).
    pub close: mpsc::Sender<CloseReason>,
}

/// What a room's task is asked to do.
pub(crate) enum Command {
    Join {
        member: Member,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Leave {
        peer: ParticipantId,
        session: u64,
    },
    Connected {
        peer: ParticipantId,
        session: u64,
    },
    Published {
        peer: ParticipantId,
        session: u64,
        published: PublishedRemote,
    },
    Unpublished {
        producer: ProducerId,
    },
    Answer {
        peer: ParticipantId,
        offer_id: Option<String>,
        sdp: String,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    OfferPending {
        peer: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
}

/// One forwarded m-line on a subscriber's connection, kept for reuse.
struct Line {
    transceiver: Arc<RTCRtpTransceiver>,
    track: Arc<TrackLocalStaticRTP>,
    /// The publisher the subscriber's keyframe requests go to.
    keyframes: KeyframeTarget,
    /// The line's RTP mapping while no track is on it (so a recycled line stays one stream).
    consumer: Option<Consumer>,
}

struct Participant {
    member: Member,
    plan: MLinePlan,
    renegotiation: Renegotiation,
    /// Parallel to `plan.lines()`.
    lines: Vec<Line>,
    /// The room channel (JSON texts), when data channels are enabled.
    channel: Option<mpsc::Sender<String>>,
}

impl Participant {
    fn tell(&self, json: String) {
        if let Some(channel) = &self.channel {
            if channel.try_send(json).is_err() {
                tracing::debug!(peer = %self.member.peer, "room channel full; message dropped");
            }
        }
    }
}

/// A published track's source, for the lines that forward it.
struct Source {
    fanout: Arc<Fanout>,
    ssrc: u32,
    codec: RTCRtpCodecCapability,
    /// The publisher's negotiated header extensions.
    extensions: Vec<(u8, String)>,
    publisher: ParticipantId,
}

pub(crate) struct RoomActor {
    room: Room,
    participants: BTreeMap<ParticipantId, Participant>,
    sources: HashMap<ProducerId, Source>,
    context: Arc<RoomContext>,
    /// Given to forwarding tasks to report a track's end; weak so the room can end.
    commands: mpsc::WeakSender<Command>,
}

impl RoomActor {
    pub fn new(
        name: RoomName,
        context: Arc<RoomContext>,
        commands: mpsc::WeakSender<Command>,
    ) -> Self {
        Self {
            // Video last-N is not applied yet: every participant's video flows.
            room: Room::new(name, 0),
            participants: BTreeMap::new(),
            sources: HashMap::new(),
            context,
            commands,
        }
    }

    /// Runs until every handle on the room is gone (its last participant left).
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let deadline = self
                .participants
                .values()
                .filter_map(|p| p.renegotiation.poll_timeout())
                .min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    for participant in self.participants.values_mut() {
                        participant.renegotiation.handle_timeout(now);
                    }
                }
            }
            self.pump().await;
        }
        tracing::debug!(room = %self.room.name(), "room ended");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join { member, reply } => {
                let _ = reply.send(self.join(member).await);
            }
            Command::Leave { peer, session } => {
                if self.is_session(&peer, session) {
                    self.participants.remove(&peer);
                    for source in self.sources.values() {
                        source.fanout.take(&peer);
                    }
                    self.room.leave(&peer);
                }
            }
            Command::Connected { peer, session } => {
                if self.is_session(&peer, session) {
                    if let Some(participant) = self.participants.get_mut(&peer) {
                        participant.renegotiation.set_connected(true);
                    }
                }
            }
            Command::Published {
                peer,
                session,
                published,
            } => {
                if self.is_session(&peer, session) {
                    self.publish(&peer, published).await;
                }
            }
            Command::Unpublished { producer } => self.room.unpublish(producer),
            Command::Answer {
                peer,
                offer_id,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.answer(&peer, offer_id.as_deref(), sdp).await);
            }
            Command::OfferPending { peer, reply } => {
                let pending = self
                    .participants
                    .get(&peer)
                    .is_some_and(|p| p.renegotiation.pending_offer_id().is_some());
                let _ = reply.send(pending);
            }
        }
    }

    fn is_session(&self, peer: &ParticipantId, session: u64) -> bool {
        self.participants
            .get(peer)
            .is_some_and(|p| p.member.session == session)
    }

    async fn join(&mut self, member: Member) -> Result<(), SessionError> {
        self.room
            .join(member.peer.clone(), &self.context.limits)
            .map_err(room_refusal)?;
        let channel = match self.context.enable_data_channel {
            true => open_room_channel(&member, &self.context.tasks).await,
            false => None,
        };
        let renegotiation = Renegotiation::new(uuid::Uuid::new_v4().to_string());
        self.participants.insert(
            member.peer.clone(),
            Participant {
                member,
                plan: MLinePlan::new(self.context.limits.max_mlines()),
                renegotiation,
                lines: Vec::new(),
                channel,
            },
        );
        Ok(())
    }

    /// A participant's track started arriving: the room gets a producer and the track a
    /// forwarding task.
    async fn publish(&mut self, peer: &ParticipantId, published: PublishedRemote) {
        let Some(participant) = self.participants.get(peer) else {
            return;
        };
        let remote = published.remote;
        let kind = match remote.kind() {
            RTPCodecType::Video => MediaKind::Video,
            _ => MediaKind::Audio,
        };
        let extensions = negotiated(&published.receiver.get_parameters().await.header_extensions);
        let track = PublishedTrack {
            kind,
            track_id: remote.id(),
            mid: published.mid,
            layers: vec![],
        };
        let producer = match self.room.publish(peer, track) {
            Ok(producer) => producer,
            Err(err) => {
                tracing::warn!(%peer, %err, "published track not taken");
                return;
            }
        };
        let fanout = Arc::new(Fanout::default());
        self.sources.insert(
            producer,
            Source {
                fanout: Arc::clone(&fanout),
                ssrc: remote.ssrc(),
                codec: remote.codec().capability,
                extensions,
                publisher: peer.clone(),
            },
        );
        tracing::debug!(%peer, %producer, %kind, "track published to the room");
        self.context.tasks.spawn(forward_published(
            remote,
            fanout,
            Arc::clone(&participant.member.activity),
            producer,
            self.commands.clone(),
            participant.member.cancel.clone(),
        ));
    }

    /// Applies the room's actions, then each participant's renegotiation outputs, until
    /// neither has more.
    async fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(action) = self.room.poll_action() {
                busy = true;
                self.apply(action).await;
            }
            let peers: Vec<ParticipantId> = self.participants.keys().cloned().collect();
            for peer in peers {
                while let Some(output) = self
                    .participants
                    .get_mut(&peer)
                    .and_then(|p| p.renegotiation.poll_output())
                {
                    busy = true;
                    self.renegotiate(&peer, output).await;
                }
            }
            if !busy {
                break;
            }
        }
        let room = &self.room;
        self.sources.retain(|id, _| room.producer(*id).is_some());
    }

    async fn apply(&mut self, action: RoomAction) {
        match action {
            RoomAction::AddTrack {
                subscriber,
                producer,
                paused,
            } => self.add_track(&subscriber, producer, paused).await,
            RoomAction::RemoveTrack {
                subscriber,
                producer,
            } => self.remove_track(&subscriber, producer).await,
            RoomAction::Pause {
                subscriber,
                producer,
            } => {
                if let Some(source) = self.sources.get(&producer) {
                    source.fanout.set_paused(&subscriber, true);
                }
            }
            RoomAction::Resume {
                subscriber,
                producer,
                keyframe,
            } => {
                let Some(source) = self.sources.get(&producer) else {
                    return;
                };
                source.fanout.set_paused(&subscriber, false);
                if keyframe {
                    if let Some(publisher) = self.participants.get(&source.publisher) {
                        let pli = PictureLossIndication {
                            sender_ssrc: 0,
                            media_ssrc: source.ssrc,
                        };
                        if let Err(err) = publisher.member.pc.write_rtcp(&[Box::new(pli)]).await {
                            tracing::debug!(%err, "asking for a keyframe failed");
                        }
                    }
                }
            }
            RoomAction::MaxHeight { .. } => {}
            RoomAction::Send { to, message } => {
                if let Some(participant) = self.participants.get(&to) {
                    participant.tell(message.to_json());
                }
            }
        }
    }

    /// A sendonly line for `producer` on the subscriber's connection: a free line of its kind
    /// recycled, or a new transceiver.
    async fn add_track(&mut self, subscriber: &ParticipantId, producer: ProducerId, paused: bool) {
        let (Some(source), Some(forwarded)) = (
            self.sources.get(&producer),
            self.room.producer(producer).map(ForwardedTrack::from),
        ) else {
            return;
        };
        let Some(participant) = self.participants.get_mut(subscriber) else {
            return;
        };
        let placement = match participant.plan.add(forwarded.clone()) {
            Ok(placement) => placement,
            Err(err) => {
                tracing::warn!(%subscriber, %err, "forwarded track not added");
                return;
            }
        };
        if !placement.reused {
            let track = Arc::new(TrackLocalStaticRTP::new(
                source.codec.clone(),
                forwarded.track.clone(),
                forwarded.peer.clone(),
            ));
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            };
            let added = participant
                .member
                .pc
                .add_transceiver_from_track(
                    Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>,
                    Some(init),
                )
                .await;
            let transceiver = match added {
                Ok(transceiver) => transceiver,
                Err(err) => {
                    // Only a closed connection refuses; its participant is leaving.
                    tracing::debug!(%subscriber, %err, "forwarded line not added");
                    return;
                }
            };
            let keyframes = KeyframeTarget::default();
            self.context.tasks.spawn(read_forwarded_rtcp(
                transceiver.sender().await,
                Arc::clone(&keyframes),
                Arc::clone(&participant.member.activity),
                participant.member.cancel.clone(),
            ));
            participant.lines.push(Line {
                transceiver,
                track,
                keyframes,
                consumer: None,
            });
        }
        let Some(line) = participant.lines.get_mut(placement.index) else {
            return;
        };
        if placement.reused {
            line.transceiver
                .set_direction(RTCRtpTransceiverDirection::Sendonly)
                .await;
        }
        let subscriber_extensions = negotiated(
            &line
                .transceiver
                .sender()
                .await
                .get_parameters()
                .await
                .rtp_parameters
                .header_extensions,
        );
        let extensions = ExtensionMap::new(
            &as_refs(&source.extensions),
            &as_refs(&subscriber_extensions),
        );
        let mut consumer = match line.consumer.take() {
            Some(mut consumer) => {
                consumer.set_extensions(extensions);
                consumer.rtp().switch_to(source.ssrc);
                consumer
            }
            None => Consumer::new(ConsumerConfig {
                // The track binding sets the sender's SSRC on every packet.
                out_ssrc: 0,
                clock_rate: source.codec.clock_rate,
                video: forwarded.kind == MediaKind::Video,
                vp8: source.codec.mime_type.eq_ignore_ascii_case("video/vp8"),
                extensions,
            }),
        };
        if paused {
            consumer.rtp().pause();
        }
        let publisher = self
            .participants
            .get(&source.publisher)
            .map(|p| Arc::downgrade(&p.member.pc));
        let Some(participant) = self.participants.get_mut(subscriber) else {
            return;
        };
        let Some(line) = participant.lines.get_mut(placement.index) else {
            return;
        };
        *line.keyframes.lock() = publisher.map(|pc| (pc, source.ssrc));
        source.fanout.add(Sink {
            subscriber: subscriber.clone(),
            track: Arc::clone(&line.track),
            consumer,
            activity: Arc::clone(&participant.member.activity),
        });
        participant.renegotiation.request();
    }

    /// The line of `producer` goes inactive (recyclable once the next offer is answered).
    async fn remove_track(&mut self, subscriber: &ParticipantId, producer: ProducerId) {
        let Some(participant) = self.participants.get_mut(subscriber) else {
            return;
        };
        let Some(index) = participant.plan.remove(producer) else {
            return;
        };
        if let Some(line) = participant.lines.get_mut(index) {
            line.transceiver
                .set_direction(RTCRtpTransceiverDirection::Inactive)
                .await;
            let sink = self
                .sources
                .get(&producer)
                .and_then(|source| source.fanout.take(subscriber));
            line.consumer = sink.map(|sink| sink.consumer);
        }
        participant.renegotiation.request();
    }

    async fn renegotiate(&mut self, peer: &ParticipantId, output: RenegotiationOutput) {
        let Some(participant) = self.participants.get_mut(peer) else {
            return;
        };
        match output {
            RenegotiationOutput::CreateOffer { offer_id } => {
                match create_offer(participant, &self.context).await {
                    Ok(sdp) => {
                        participant
                            .renegotiation
                            .offer_created(&offer_id, sdp, Instant::now())
                    }
                    Err(err) => {
                        tracing::warn!(%peer, %err, "creating a server offer failed");
                        participant.renegotiation.offer_failed(&offer_id);
                    }
                }
            }
            RenegotiationOutput::SendOffer { offer_id, sdp } => {
                tracing::debug!(%peer, offer_id, "server offer");
                let event = SessionEvent::ServerOffer {
                    peer_id: peer.to_string(),
                    offer_id,
                    sdp,
                };
                let _ = self.context.events.send(event).await;
                participant.tell(participant.plan.track_map().to_json());
            }
            RenegotiationOutput::AnswerTimeout => {
                tracing::info!(%peer, "no answer to the server offer: closing the session");
                let _ = participant
                    .member
                    .close
                    .try_send(CloseReason::AnswerTimeout);
            }
        }
    }

    /// The client's answer to the pending server offer.
    async fn answer(
        &mut self,
        peer: &ParticipantId,
        offer_id: Option<&str>,
        sdp: String,
    ) -> Result<(), SessionError> {
        let Some(participant) = self.participants.get_mut(peer) else {
            return Err(room_refusal(RoomError::NoOfferPending));
        };
        match (participant.renegotiation.pending_offer_id(), offer_id) {
            (None, _) => return Err(room_refusal(RoomError::NoOfferPending)),
            (Some(pending), Some(got)) if pending != got => {
                return Err(room_refusal(RoomError::StaleAnswer {
                    pending: pending.to_owned(),
                    got: got.chars().take(128).collect(),
                }))
            }
            _ => {}
        }
        let lines = Sdp::parse(&sdp)
            .map_err(|e| SessionError::InvalidSdp(e.to_string()))?
            .media_count();
        let max = self.context.limits.max_mlines();
        if lines > max {
            return Err(SessionError::InvalidSdp(format!(
                "the answer has {lines} m-lines; a room participant's may have {max}"
            )));
        }
        let description = RTCSessionDescription::answer(sdp)
            .map_err(|e| SessionError::InvalidSdp(e.to_string()))?;
        participant
            .member
            .pc
            .set_remote_description(description)
            .await
            .map_err(|e| SessionError::InvalidSdp(e.to_string()))?;
        participant
            .renegotiation
            .answer(offer_id)
            .map_err(room_refusal)?;
        participant.plan.answered();
        participant.tell(participant.plan.track_map().to_json());
        // The lines just negotiated start at a keyframe: ask their video publishers for one.
        for (line, planned) in participant.lines.iter().zip(participant.plan.lines()) {
            if planned.kind == MediaKind::Video && matches!(planned.state, LineState::Live(_)) {
                let target = line.keyframes.lock().clone();
                if let Some((pc, ssrc)) = target {
                    request_keyframe(&pc, ssrc).await;
                }
            }
        }
        Ok(())
    }
}

/// Creates the server offer from the connection's transceivers and applies it locally;
/// returns the text the client gets: each forwarded line with its current track's msid.
async fn create_offer(
    participant: &mut Participant,
    context: &RoomContext,
) -> Result<String, String> {
    let pc = &participant.member.pc;
    let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
    // The connection numbered its new lines as it created the offer.
    for index in 0..participant.plan.lines().len() {
        if participant.plan.lines()[index].mid.is_none() {
            if let Some(mid) = participant
                .lines
                .get(index)
                .and_then(|l| l.transceiver.mid())
            {
                participant.plan.set_mid(index, mid.to_string());
            }
        }
    }
    participant.plan.offer_created();
    let mut sdp = Sdp::parse(&offer.sdp).map_err(|e| e.to_string())?;
    for line in participant.plan.lines() {
        let Some(mid) = &line.mid else { continue };
        match &line.state {
            LineState::Live(track) => sdp.set_msid(mid, &track.peer, &track.track),
            LineState::Stopping { .. } | LineState::Free => sdp.clear_msid(mid),
        }
    }
    if let Some(map) = context.port_map {
        sdp.map_candidates(|c| map.candidate(c));
    }
    sdp.advertise_max_message_size(context.max_message_bytes);
    sdp.remove_ice_lite();
    pc.set_local_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(sdp.to_text())
}

/// Opens the room channel on the participant's connection (negotiated in its first server
/// offer when the client opened no channel) and starts the task that sends on it.
async fn open_room_channel(member: &Member, tasks: &TaskTracker) -> Option<mpsc::Sender<String>> {
    let channel = match member.pc.create_data_channel(ROOM_CHANNEL, None).await {
        Ok(channel) => channel,
        Err(err) => {
            tracing::warn!(peer = %member.peer, %err, "no room channel");
            return None;
        }
    };
    let (open_tx, open_rx) = watch::channel(false);
    channel.on_open(Box::new(move || {
        let _ = open_tx.send(true);
        Box::pin(async {})
    }));
    let (tx, rx) = mpsc::channel(ROOM_CHANNEL_QUEUE);
    tasks.spawn(send_room_messages(
        channel,
        open_rx,
        rx,
        member.cancel.clone(),
    ));
    Some(tx)
}

/// Sends the room channel's messages as `DataBuffer{json{schema_type:"room"}}` once it is open.
async fn send_room_messages(
    channel: Arc<RTCDataChannel>,
    mut open: watch::Receiver<bool>,
    mut messages: mpsc::Receiver<String>,
    cancel: CancellationToken,
) {
    tokio::select! {
        opened = open.wait_for(|open| *open) => if opened.is_err() { return },
        () = cancel.cancelled() => return,
    }
    loop {
        let json = tokio::select! {
            json = messages.recv() => match json { Some(json) => json, None => break },
            () = cancel.cancelled() => break,
        };
        let buffer = DataBuffer {
            data_type: Some(DataType::Json(JsonData {
                json_payload: json,
                schema_type: "room".into(),
            })),
            metadata: HashMap::default(),
        };
        let data = bytes::Bytes::from(prost::Message::encode_to_vec(&buffer));
        if let Err(err) = channel.send(&data).await {
            tracing::debug!(%err, "room channel send failed");
        }
    }
}

/// A room's refusal as the session error signaling maps to its codes.
pub(crate) fn room_refusal(err: RoomError) -> SessionError {
    match err {
        RoomError::TooManyRooms(max) => SessionError::TooManyRooms(max),
        RoomError::RoomFull { max, .. } => SessionError::AtCapacity(max),
        RoomError::NoOfferPending
        | RoomError::StaleAnswer { .. }
        | RoomError::ServerOfferPending
        | RoomError::InvalidRoomName(_)
        | RoomError::InvalidParticipantId(_) => SessionError::FailedPrecondition(err.to_string()),
        other => SessionError::Internal(other.to_string()),
    }
}

/// Negotiated header extensions as (id, uri).
fn negotiated(
    extensions: &[webrtc::rtp_transceiver::rtp_codec::RTCRtpHeaderExtensionParameters],
) -> Vec<(u8, String)> {
    extensions
        .iter()
        .filter_map(|e| Some((u8::try_from(e.id).ok()?, e.uri.clone())))
        .collect()
}

fn as_refs(extensions: &[(u8, String)]) -> Vec<(u8, &str)> {
    extensions
        .iter()
        .map(|(id, uri)| (*id, uri.as_str()))
        .collect()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
