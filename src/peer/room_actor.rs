//! One room on this process: a task that owns the room's state ([`crate::room::Room`]) and,
//! per participant, its m-line plan and renegotiation, and applies their decisions to the
//! participants' peer connections. Everything about a room happens in this one task, in the
//! order its commands arrive; the packet path ([`super::room_forward`]) only reads what it
//! set up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCRtpTransceiver, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

use super::activity::Activity;
use super::advertise::PortMap;
use super::close_reason::CloseReason;
use super::metrics::metrics;
use super::room_channel::open_room_channel;
use super::room_forward::{
    forward_published, read_forwarded_rtcp, request_keyframe, Fanout, FeedbackTarget,
    KeyframeTarget, LayerMeter, Sink, Taps,
};
use super::room_lead::{lead_event, Lead, LeadEvent, LeadMessage};
use super::room_pipeline::{
    MixTap, Mixer, RoomPipeline, RunningPipeline, ROOM_AUDIO_TRACK, ROOM_PUBLISHER,
};
use super::room_relay_link::{
    codec_capability, relayed_track, span_event, LinkFeedback, RelayRequest, SpanEvent, SpanHost,
    SpanState, Wanted, WantedTrack,
};
use super::sdp::Sdp;
use super::wiring::PublishedRemote;
use crate::media::OpusConfig;
use crate::pipeline::Pipeline;
use crate::room::{
    extension_id, ClientMessage, Consumer, ConsumerConfig, ExtensionMap, ForwardedTrack, Layer,
    LayerChoice, LayerRequest, LineState, MLinePlan, MediaKind, MuteDetector, Origin,
    ParticipantId, ProducerId, PublishedTrack, Renegotiation, RenegotiationOutput, Room,
    RoomAction, RoomError, RoomLimits, RoomName, SimulcastLayers, SpeakerDetector, AUDIO_LEVEL_URI,
};
use crate::room_relay::{relay_ssrc, RelayedTrack};
use crate::signaling::{SessionError, SessionEvent};

/// How often the room reads its tracks' meters (speakers, mutes): within the speaker
/// list's 200 ms rate limit and well inside its 300 ms window.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What the rooms of a process share.
pub(crate) struct RoomContext {
    pub limits: RoomLimits,
    /// `--room-manifest`: the pipeline a room runs unless its creator names another.
    pub pipeline: Option<RoomPipelineChoice>,
    /// `--pipeline-queue-frames` and `--pipeline-queue-bytes` for it.
    pub pipeline_queue: (usize, usize),
    /// `--room-video-last-n`: video from this many most recent speakers (0: everyone's).
    pub video_last_n: usize,
    pub events: mpsc::Sender<SessionEvent>,
    pub tasks: TaskTracker,
    /// `--public-port`: server offers advertise it as answers do.
    pub port_map: Option<PortMap>,
    pub enable_data_channel: bool,
    /// `--max-datachannel-message-bytes`, advertised in server offers as in answers.
    pub max_message_bytes: usize,
    /// A worker's rooms span workers through it (#16); set once the worker runs, unset on a
    /// single server.
    pub span: std::sync::OnceLock<Arc<dyn SpanHost>>,
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
    /// The participant's offer on its live connection (renegotiation it started).
    ClientOffer {
        peer: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, SessionError>>,
    },
    /// The room's video codec (its video publishers'), for a newcomer's offer.
    VideoCodec {
        reply: oneshot::Sender<Option<String>>,
    },
    /// The participant's signaling stream broke (its resume grace) or came back.
    Detached {
        peer: ParticipantId,
        detached: bool,
    },
    /// The room pipeline's data output, for every participant's room channel.
    PipelineData {
        data: serde_json::Value,
    },
    /// A message from the participant's room channel.
    Message {
        peer: ParticipantId,
        session: u64,
        message: ClientMessage,
    },
    /// What the participant reported about one of its forwarded lines (its layer choice).
    LineFeedback {
        peer: ParticipantId,
        session: u64,
        /// The line's index among the participant's forwarded lines.
        line: usize,
        /// Its receiver report's fraction lost for the line (1/256).
        fraction_lost: Option<u8>,
        /// Its REMB, bits per second.
        remb_bps: Option<u64>,
    },
    /// Another worker of the room opens, changes or closes a relay link here.
    Relay(RelayRequest),
}

/// One forwarded m-line on a subscriber's connection, kept for reuse.
struct Line {
    transceiver: Arc<RTCRtpTransceiver>,
    track: Arc<TrackLocalStaticRTP>,
    /// The publisher the subscriber's keyframe requests go to.
    keyframes: KeyframeTarget,
    /// The line's RTP mapping while no track is on it (a recycled line's sequence numbers
    /// continue under its new SSRC).
    consumer: Option<Consumer>,
    /// The line carries a simulcast track: its reception reports go to the room.
    feedback: Arc<AtomicBool>,
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
    /// The track's SSRC (a simulcast track's first layer to arrive).
    ssrc: u32,
    /// A simulcast track's layers (one forwarding task each, into the same fanout).
    simulcast: Option<Simulcast>,
    codec: RTCRtpCodecCapability,
    /// The publisher's negotiated header extensions.
    extensions: Vec<(u8, String)>,
    publisher: ParticipantId,
}

/// The layers of a published simulcast track.
struct Simulcast {
    /// The publisher's m-line carrying them: later layers of it join this track.
    mid: String,
    layers: SimulcastLayers,
    /// Each layer's meter, by rid.
    meters: Vec<(String, Arc<LayerMeter>)>,
}

/// This room's share of the process-wide room gauges, given back when the room ends.
#[derive(Default)]
struct RoomGauges {
    participants: i64,
    paused_video: i64,
}

impl RoomGauges {
    fn new() -> Self {
        metrics().rooms_active.inc();
        Self::default()
    }

    fn set(&mut self, participants: usize, paused_video: usize) {
        let (participants, paused_video) = (as_i64(participants), as_i64(paused_video));
        metrics()
            .room_participants
            .add(participants - self.participants);
        metrics()
            .room_paused_video_streams
            .add(paused_video - self.paused_video);
        (self.participants, self.paused_video) = (participants, paused_video);
    }
}

impl Drop for RoomGauges {
    fn drop(&mut self) {
        self.set(0, 0);
        metrics().rooms_active.dec();
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts a server offer's end (one of [`super::metrics::RENEGOTIATION_RESULTS`]).
fn renegotiation_ended(result: &'static str) {
    metrics()
        .room_renegotiations
        .with_label_values(&[result])
        .inc();
}

/// A pipeline for a room to run: `--room-manifest`'s, or the one the participant that creates
/// the room names (announce metadata `room_manifest`).
#[derive(Clone)]
pub(crate) struct RoomPipelineChoice {
    /// The manifest's catalog name, which later joiners' `room_manifest` must repeat.
    pub name: String,
    pub pipeline: Pipeline,
    /// Its output's Opus settings.
    pub opus: OpusConfig,
}

pub(crate) struct RoomActor {
    room: Room,
    gauges: RoomGauges,
    participants: BTreeMap<ParticipantId, Participant>,
    sources: HashMap<ProducerId, Source>,
    /// Each subscriber's layer of each simulcast track it gets.
    layer_choices: HashMap<(ParticipantId, ProducerId), LayerChoice>,
    speakers: SpeakerDetector,
    mutes: MuteDetector,
    /// When to read the sources' meters next (none while nothing is published).
    next_sample: Option<Instant>,
    /// The room pipeline's input mix, when the room has a pipeline (fed while it runs here).
    mixer: Option<Arc<Mixer>>,
    /// The pipeline this room runs (`--room-manifest` or its creator's `room_manifest`).
    pipeline: Option<RoomPipelineChoice>,
    /// The running pipeline's track, and what stops the pipeline (dropped: the room ended,
    /// or another worker leads it now).
    running: Option<RunningPipeline>,
    /// Who leads the room when it spans workers (speakers, pipeline: `room_lead.rs`).
    lead: Option<Lead>,
    context: Arc<RoomContext>,
    /// Given to forwarding tasks to report a track's end; weak so the room can end.
    commands: mpsc::WeakSender<Command>,
    /// The relay to the room's other workers, when this worker relays.
    span: Option<SpanState>,
}

impl RoomActor {
    pub fn new(
        name: RoomName,
        context: Arc<RoomContext>,
        pipeline: Option<RoomPipelineChoice>,
        commands: mpsc::WeakSender<Command>,
    ) -> Self {
        let span = context
            .span
            .get()
            .map(|host| SpanState::new(Arc::clone(host), name.clone()));
        let lead = context.span.get().map(|host| host.follow_lead(&name));
        Self {
            span,
            lead,
            room: Room::new(name, context.video_last_n),
            gauges: RoomGauges::new(),
            participants: BTreeMap::new(),
            sources: HashMap::new(),
            layer_choices: HashMap::new(),
            speakers: SpeakerDetector::new(),
            mutes: MuteDetector::new(),
            next_sample: None,
            mixer: pipeline.as_ref().map(|_| Arc::new(Mixer::default())),
            pipeline,
            running: None,
            context,
            commands,
        }
    }

    /// Starts the room pipeline, published as `remotemedia-room room-audio`. A pipeline
    /// that does not start is logged; the room works without it.
    fn start_pipeline(&mut self) {
        let Some(RoomPipelineChoice { pipeline, opus, .. }) = &self.pipeline else {
            return;
        };
        let Some(mixer) = self.mixer.clone() else {
            return;
        };
        let cancel = CancellationToken::new();
        let (frames, bytes) = self.context.pipeline_queue;
        let session = match pipeline.start_with_queue(cancel.clone(), frames, bytes) {
            Ok(session) => session,
            Err(err) => {
                tracing::error!(room = %self.room.name(), %err, "the room pipeline did not start");
                return;
            }
        };
        let Ok(publisher) = ParticipantId::parse(ROOM_PUBLISHER) else {
            return;
        };
        let producer = self.room.publish_room_track(
            publisher.clone(),
            PublishedTrack {
                kind: MediaKind::Audio,
                track_id: ROOM_AUDIO_TRACK.to_owned(),
                mid: String::new(),
                layers: vec![],
            },
        );
        let fanout = Arc::new(Fanout::default());
        let ssrc: u32 = rand::random();
        self.sources.insert(
            producer,
            Source {
                fanout: Arc::clone(&fanout),
                ssrc,
                simulcast: None,
                codec: super::stack::opus_capability(),
                extensions: vec![],
                publisher,
            },
        );
        self.context.tasks.spawn(
            RoomPipeline {
                session,
                mixer: Arc::clone(&mixer),
                fanout,
                opus: opus.clone(),
                ssrc,
                commands: self.commands.clone(),
            }
            .run(cancel.clone()),
        );
        mixer.set_active(true);
        self.running = Some(RunningPipeline::new(producer, cancel));
        tracing::info!(room = %self.room.name(), pipeline = pipeline.manifest().metadata.name, "room pipeline started");
    }

    /// Stops the room pipeline here (another worker leads the room now) and takes its track
    /// out of the room.
    fn stop_pipeline(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        if let Some(mixer) = &self.mixer {
            mixer.set_active(false);
        }
        self.room.unpublish(running.track);
        tracing::info!(room = %self.room.name(), "room pipeline stopped: another worker leads the room");
    }

    /// Runs the pipeline where the lead says (here when the room does not span workers).
    fn follow_lead(&mut self) {
        let runs = self.lead.as_ref().is_none_or(Lead::runs_pipeline);
        match (runs, self.running.is_some()) {
            (true, false) => self.start_pipeline(),
            (false, true) => self.stop_pipeline(),
            _ => {}
        }
    }

    /// The lead changed (pipeline moved, relayed tracks to take or leave), or it said what
    /// the room's participants here must be told.
    fn on_lead(&mut self, event: LeadEvent) {
        match event {
            LeadEvent::Changed => {
                self.follow_lead();
                self.sync_remote();
            }
            LeadEvent::Said(LeadMessage::Speakers { peers }) => {
                let speakers: Vec<ParticipantId> = peers
                    .iter()
                    .filter_map(|peer| ParticipantId::parse(peer).ok())
                    .collect();
                self.room.set_active_speakers(&speakers);
            }
            LeadEvent::Said(LeadMessage::Pipeline { data }) => {
                let json = crate::room::ServerMessage::Pipeline { data }.to_json();
                for participant in self.participants.values() {
                    participant.tell(json.clone());
                }
            }
        }
    }

    /// Tells the room's other workers what this one computed, when it leads a spanning room.
    fn tell_followers(&self, message: LeadMessage) {
        if let (Some(lead), Some(host)) = (&self.lead, self.context.span.get()) {
            if lead.has_followers() {
                host.tell_followers(self.room.name(), message);
            }
        }
    }

    /// Runs until every handle on the room is gone (its last participant left).
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.follow_lead();
        loop {
            let deadline = self
                .participants
                .values()
                .filter_map(|p| p.renegotiation.poll_timeout())
                .chain(self.next_sample)
                .min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                event = span_event(&mut self.span) => match event {
                    SpanEvent::RemoteChanged => self.sync_remote(),
                    SpanEvent::Feedback(feedback) => self.relay_feedback(feedback),
                },
                event = lead_event(&mut self.lead) => self.on_lead(event),
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    for participant in self.participants.values_mut() {
                        participant.renegotiation.handle_timeout(now);
                    }
                    if self.next_sample.is_some_and(|at| at <= now) {
                        self.sample(now);
                        self.select_layers(now).await;
                    }
                }
            }
            self.pump().await;
            self.report_tracks();
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
                    self.layer_choices
                        .retain(|(subscriber, _), _| *subscriber != peer);
                    for source in self.sources.values() {
                        source.fanout.take(&peer);
                    }
                    self.speakers.remove(&peer);
                    self.room.leave(&peer);
                }
            }
            Command::ClientOffer { peer, sdp, reply } => {
                let _ = reply.send(self.client_offer(&peer, sdp).await);
            }
            Command::VideoCodec { reply } => {
                let _ = reply.send(self.video_codec());
            }
            Command::Detached { peer, detached } => {
                if let Some(participant) = self.participants.get_mut(&peer) {
                    match detached {
                        true => participant.renegotiation.detach(Instant::now()),
                        false => participant.renegotiation.resume(Instant::now()),
                    }
                }
            }
            Command::PipelineData { data } => {
                self.tell_followers(LeadMessage::Pipeline { data: data.clone() });
                let json = crate::room::ServerMessage::Pipeline { data }.to_json();
                for participant in self.participants.values() {
                    participant.tell(json.clone());
                }
            }
            Command::Message {
                peer,
                session,
                message,
            } => {
                if self.is_session(&peer, session) {
                    match message {
                        ClientMessage::Subscribe(request) => {
                            if let Err(err) = self.room.subscribe(&peer, &request) {
                                tracing::debug!(%peer, %err, "subscribe refused");
                            }
                        }
                    }
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
            Command::Relay(request) => {
                // Single-stream tracks only: a simulcast track's layers would share one SSRC.
                let local: BTreeMap<u64, Arc<Fanout>> = self
                    .room
                    .local_producers()
                    .filter_map(|p| {
                        let source = self.sources.get(&p.id)?;
                        source
                            .simulcast
                            .is_none()
                            .then(|| (p.id.0, Arc::clone(&source.fanout)))
                    })
                    .collect();
                if let Some(span) = self.span.as_mut() {
                    span.outbound.handle(request, &local, &self.context.tasks);
                }
            }
            Command::LineFeedback {
                peer,
                session,
                line,
                fraction_lost,
                remb_bps,
            } => {
                if !self.is_session(&peer, session) {
                    return;
                }
                let producer = self.participants.get(&peer).and_then(|p| {
                    match &p.plan.lines().get(line)?.state {
                        LineState::Live(track) => Some(track.producer),
                        _ => None,
                    }
                });
                let Some(choice) = producer.and_then(|p| self.layer_choices.get_mut(&(peer, p)))
                else {
                    return;
                };
                if let Some(fraction_lost) = fraction_lost {
                    choice.on_receiver_report(fraction_lost);
                }
                if let Some(bps) = remb_bps {
                    choice.on_remb(bps, Instant::now());
                }
            }
            Command::Answer {
                peer,
                offer_id,
                sdp,
                reply,
            } => {
                let answered = self.answer(&peer, offer_id.as_deref(), sdp).await;
                renegotiation_ended(match answered {
                    Ok(()) => "answered",
                    Err(_) => "refused",
                });
                let _ = reply.send(answered);
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

    /// Reads every source's meter: a track that sent nothing for a while is muted, one that
    /// sends again unmuted; audio levels make the active speaker list (and, through it, the
    /// last-N video order).
    fn sample(&mut self, now: Instant) {
        for (&producer, source) in &mut self.sources {
            if let Some(Simulcast { layers, meters, .. }) = source.simulcast.as_mut() {
                for (rid, meter) in meters.iter() {
                    let (bytes, height) = meter.sample();
                    if let Some(height) = layers.on_sample(rid, bytes, height, now) {
                        tracing::debug!(%producer, %rid, height, "simulcast layer height");
                        self.room.set_layer_height(producer, rid, height);
                    }
                }
            }
            let (packets, level) = source.fanout.meter.sample();
            if packets > 0 && self.mutes.on_packet(producer, now) == Some(false) {
                self.room.set_muted(producer, false);
            }
            if let Some(level) = level {
                self.speakers.observe(&source.publisher, level, now);
            }
        }
        for producer in self.mutes.handle_timeout(now) {
            self.room.set_muted(producer, true);
        }
        // A spanning room's speakers come from its lead, which hears everyone's levels.
        let computes = self.lead.as_ref().is_none_or(Lead::computes_speakers);
        if let Some(speakers) = self.speakers.poll(now).filter(|_| computes) {
            tracing::debug!(room = %self.room.name(), ?speakers, "active speakers");
            self.tell_followers(LeadMessage::Speakers {
                peers: speakers.iter().map(ToString::to_string).collect(),
            });
            self.room.set_active_speakers(&speakers);
        }
        self.next_sample = (!self.sources.is_empty()).then_some(now + SAMPLE_INTERVAL);
    }

    /// Each subscriber's simulcast layer: switches where its path or `max_height` asks for
    /// another layer (at that layer's next keyframe, asked for here), and keyframe requests
    /// again for switches still waiting. Paused copies keep their layer.
    async fn select_layers(&mut self, now: Instant) {
        let mut keyframes: Vec<(Weak<RTCPeerConnection>, u32)> = Vec::new();
        for ((subscriber, producer), choice) in &mut self.layer_choices {
            let Some(source) = self.sources.get(producer) else {
                continue;
            };
            let Some(simulcast) = &source.simulcast else {
                continue;
            };
            let Some((forwarded, paused)) = source.fanout.layer_state(subscriber) else {
                continue;
            };
            if paused {
                continue;
            }
            let max_height = self
                .room
                .subscription(subscriber, &source.publisher, MediaKind::Video)
                .max_height;
            let Some(request) = simulcast.layers.choose(choice, max_height, forwarded, now) else {
                continue;
            };
            let ssrc = match request {
                LayerRequest::Switch { rid, ssrc, initial } => {
                    tracing::debug!(%subscriber, %producer, %rid, initial, "simulcast layer");
                    source.fanout.switch_layer(subscriber, ssrc, !initial);
                    if let Some(line) = line_of(&self.participants, subscriber, *producer) {
                        let mut target = line.keyframes.lock();
                        if let Some((_, at)) = target.as_mut() {
                            *at = ssrc;
                        }
                    }
                    ssrc
                }
                LayerRequest::Keyframe { ssrc } => ssrc,
            };
            if let Some(publisher) = self.participants.get(&source.publisher) {
                keyframes.push((Arc::downgrade(&publisher.member.pc), ssrc));
            }
        }
        keyframes.sort_by_key(|(_, ssrc)| *ssrc);
        keyframes.dedup_by_key(|(_, ssrc)| *ssrc);
        for (pc, ssrc) in keyframes {
            request_keyframe(&pc, ssrc).await;
        }
    }

    /// The room's other workers' tracks as remote producers (added, or removed when gone),
    /// and one relay link per such worker carrying them (`room_relay_link.rs`). A track
    /// whose publisher is a participant here (it moved), or a simulcast track, is not taken.
    fn sync_remote(&mut self) {
        let Some(workers) = self.span.as_mut().map(SpanState::workers) else {
            return;
        };
        let mut present = self.room.remote_producers();
        let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
        for (worker, remote) in &workers {
            for track in &remote.tracks {
                let Ok(publisher) = ParticipantId::parse(&track.publisher) else {
                    continue;
                };
                // Simulcast tracks are not relayed yet (their layers would share one SSRC).
                if self.room.contains(&publisher) || !track.layers.is_empty() {
                    continue;
                }
                // The room's own track comes from the lead; leading, this worker has its own.
                let room_track = publisher.as_str() == ROOM_PUBLISHER;
                if room_track && self.running.is_some() {
                    continue;
                }
                let origin = Origin::Remote {
                    worker: worker.clone(),
                    producer: track.producer,
                };
                let producer = match present.remove(&origin) {
                    Some(producer) => producer,
                    None => self.add_remote(publisher, worker, track),
                };
                let Some(source) = self.sources.get(&producer) else {
                    continue;
                };
                let link = wanted.entry(worker.clone()).or_insert_with(|| Wanted {
                    remote: super::room_relay_link::RemoteWorker {
                        tracks: Vec::new(),
                        ..remote.clone()
                    },
                    tracks: BTreeMap::new(),
                });
                link.tracks.insert(
                    relay_ssrc(track.producer),
                    WantedTrack {
                        producer: track.producer,
                        fanout: Arc::clone(&source.fanout),
                        kind: track.kind,
                        audio_level: extension_id(&as_refs(&source.extensions), AUDIO_LEVEL_URI),
                        clock_rate: track.codec.clock_rate,
                        mix: match (&self.mixer, track.kind) {
                            (Some(mixer), MediaKind::Audio) if !room_track => {
                                Some(Arc::new(MixTap::new(Arc::clone(mixer), producer)))
                            }
                            _ => None,
                        },
                    },
                );
            }
        }
        for (_, gone) in present {
            self.room.unpublish(gone);
        }
        if let Some(span) = self.span.as_mut() {
            span.inbound.set(wanted, &self.context.tasks);
        }
    }

    /// RTCP another worker of the room sent back about tracks published here (PLI/FIR/NACK
    /// of its subscribers). Not acted on yet.
    fn relay_feedback(&mut self, feedback: LinkFeedback) {
        tracing::trace!(
            worker = feedback.worker,
            link = feedback.link,
            bytes = feedback.rtcp.len(),
            "relay feedback"
        );
    }

    /// A track of another worker of the room: a producer here, its source fed by the link.
    fn add_remote(
        &mut self,
        publisher: ParticipantId,
        worker: &str,
        track: &RelayedTrack,
    ) -> ProducerId {
        let producer = self.room.publish_remote(
            publisher.clone(),
            PublishedTrack {
                kind: track.kind,
                track_id: track.track_id.clone(),
                mid: String::new(),
                layers: vec![],
            },
            worker.to_owned(),
            track.producer,
        );
        tracing::debug!(%publisher, %producer, worker, "track relayed from another worker");
        self.sources.insert(
            producer,
            Source {
                fanout: Arc::new(Fanout::default()),
                ssrc: relay_ssrc(track.producer),
                simulcast: None,
                codec: codec_capability(&track.codec),
                extensions: track.extensions.clone(),
                publisher,
            },
        );
        self.mutes.on_packet(producer, Instant::now());
        self.next_sample
            .get_or_insert_with(|| Instant::now() + SAMPLE_INTERVAL);
        producer
    }

    /// Lists the tracks published here in the room's record when they changed.
    fn report_tracks(&mut self) {
        let Some(span) = self.span.as_mut() else {
            return;
        };
        let tracks = self
            .room
            .local_producers()
            .filter_map(|producer| {
                let source = self.sources.get(&producer.id)?;
                Some(relayed_track(producer, &source.codec, &source.extensions))
            })
            .collect();
        span.report(tracks);
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
            true => open_room_channel(&member, &self.context.tasks, self.commands.clone()).await,
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
    /// forwarding task. A simulcast track's layers arrive one by one (webrtc-rs reports one
    /// track per rid): the first makes the producer, with every rid its m-line announced;
    /// each later one joins it.
    async fn publish(&mut self, peer: &ParticipantId, published: PublishedRemote) {
        let Some(participant) = self.participants.get(peer) else {
            return;
        };
        let activity = Arc::clone(&participant.member.activity);
        let cancel = participant.member.cancel.clone();
        let remote = published.remote;
        let kind = match remote.kind() {
            RTPCodecType::Video => MediaKind::Video,
            _ => MediaKind::Audio,
        };
        let rid = remote.rid().to_owned();
        let codec = remote.codec().capability;
        let vp8 = codec.mime_type.eq_ignore_ascii_case("video/vp8");
        if !rid.is_empty() {
            let layer_of = self.sources.iter_mut().find(|(_, source)| {
                source.publisher == *peer
                    && source
                        .simulcast
                        .as_ref()
                        .is_some_and(|s| s.mid == published.mid)
            });
            if let Some((&producer, source)) = layer_of {
                let meter = Arc::new(LayerMeter::default());
                if let Some(simulcast) = source.simulcast.as_mut() {
                    simulcast.layers.set_ssrc(&rid, remote.ssrc());
                    simulcast.meters.push((rid.clone(), Arc::clone(&meter)));
                }
                tracing::debug!(%peer, %producer, %rid, ssrc = remote.ssrc(), "simulcast layer arrived");
                self.context.tasks.spawn(forward_published(
                    remote,
                    Arc::clone(&source.fanout),
                    activity,
                    producer,
                    Taps {
                        audio_level: None,
                        mixer: None,
                        layer: Some((meter, vp8)),
                    },
                    self.commands.clone(),
                    cancel,
                ));
                return;
            }
        }
        let extensions = negotiated(&published.receiver.get_parameters().await.header_extensions);
        let audio_level = extension_id(&as_refs(&extensions), AUDIO_LEVEL_URI);
        let (simulcast, layer) = if rid.is_empty() {
            (None, None)
        } else {
            let mut rids: Vec<String> = Vec::new();
            for track in published.receiver.tracks().await {
                let rid = track.rid().to_owned();
                if !rid.is_empty() && !rids.contains(&rid) {
                    rids.push(rid);
                }
            }
            let mut layers = SimulcastLayers::new(rids.iter().cloned());
            layers.set_ssrc(&rid, remote.ssrc());
            let meter = Arc::new(LayerMeter::default());
            let simulcast = Simulcast {
                mid: published.mid.clone(),
                layers,
                meters: vec![(rid.clone(), Arc::clone(&meter))],
            };
            (Some(simulcast), Some((meter, vp8)))
        };
        let track = PublishedTrack {
            kind,
            track_id: remote.id(),
            mid: published.mid,
            layers: simulcast
                .as_ref()
                .map(|s| {
                    s.layers
                        .rids_announced()
                        .map(|rid| Layer {
                            rid: rid.to_owned(),
                            height: None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let producer = match self.room.publish(peer, track) {
            Ok(producer) => producer,
            Err(err) => {
                tracing::warn!(%peer, %err, "published track not taken");
                return;
            }
        };
        let fanout = Arc::new(Fanout::default());
        tracing::debug!(%peer, %producer, %kind, %rid, "track published to the room");
        self.sources.insert(
            producer,
            Source {
                fanout: Arc::clone(&fanout),
                ssrc: remote.ssrc(),
                simulcast,
                codec,
                extensions,
                publisher: peer.clone(),
            },
        );
        self.mutes.on_packet(producer, Instant::now());
        self.next_sample
            .get_or_insert_with(|| Instant::now() + SAMPLE_INTERVAL);
        self.context.tasks.spawn(forward_published(
            remote,
            fanout,
            activity,
            producer,
            Taps {
                audio_level,
                mixer: self.mixer.clone(),
                layer,
            },
            self.commands.clone(),
            cancel,
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
        self.gauges
            .set(self.room.len(), self.room.paused_video_streams());
        let room = &self.room;
        self.layer_choices
            .retain(|(_, producer), _| room.producer(*producer).is_some());
        let (mutes, mixer) = (&mut self.mutes, &self.mixer);
        self.sources.retain(|id, _| {
            let live = room.producer(*id).is_some();
            if !live {
                mutes.remove(*id);
                if let Some(mixer) = mixer {
                    mixer.remove(*id);
                }
            }
            live
        });
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
                    // The line's keyframe target: the subscriber's simulcast layer, or the track.
                    let target = line_of(&self.participants, &subscriber, producer)
                        .and_then(|line| line.keyframes.lock().clone())
                        .or_else(|| {
                            let publisher = self.participants.get(&source.publisher)?;
                            Some((Arc::downgrade(&publisher.member.pc), source.ssrc))
                        });
                    if let Some((pc, ssrc)) = target {
                        request_keyframe(&pc, ssrc).await;
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
            let wants_feedback = Arc::new(AtomicBool::new(false));
            let feedback = FeedbackTarget {
                enabled: Arc::clone(&wants_feedback),
                commands: self.commands.clone(),
                peer: subscriber.clone(),
                session: participant.member.session,
                line: placement.index,
            };
            self.context.tasks.spawn(read_forwarded_rtcp(
                transceiver.sender().await,
                Arc::clone(&keyframes),
                Arc::clone(&participant.member.activity),
                feedback,
                participant.member.cancel.clone(),
            ));
            participant.lines.push(Line {
                transceiver,
                track,
                keyframes,
                consumer: None,
                feedback: wants_feedback,
            });
        }
        let Some(line) = participant.lines.get_mut(placement.index) else {
            return;
        };
        if placement.reused {
            // Another source on this line: a new SSRC, or Chromium renders nothing on it
            // (vendor/webrtc/PATCHES.md).
            let renewed = line
                .transceiver
                .sender()
                .await
                .replace_track_with_new_ssrc(
                    Arc::clone(&line.track) as Arc<dyn TrackLocal + Send + Sync>
                )
                .await;
            if let Err(err) = renewed {
                // Only a stopped sender refuses; its participant is leaving.
                tracing::debug!(%subscriber, %err, "recycled line not renewed");
                return;
            }
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
        // A simulcast track: the subscriber's first layer, chosen now (it starts at that
        // layer's keyframe, asked for once the line is negotiated).
        let mut choice = None;
        let mut ssrc = source.ssrc;
        if let Some(simulcast) = &source.simulcast {
            let max_height = self
                .room
                .subscription(subscriber, &source.publisher, MediaKind::Video)
                .max_height;
            let mut chosen = LayerChoice::default();
            if let Some(LayerRequest::Switch { ssrc: layer, .. }) =
                simulcast
                    .layers
                    .choose(&mut chosen, max_height, None, Instant::now())
            {
                ssrc = layer;
            }
            choice = Some(chosen);
        }
        let mut consumer = match line.consumer.take() {
            Some(mut consumer) => {
                consumer.set_extensions(extensions);
                consumer.rtp().switch_to(ssrc);
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
        if choice.is_some() {
            // Only this layer's keyframe starts the copy (not any layer's).
            consumer.rtp().switch_to(ssrc);
        }
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
        *line.keyframes.lock() = publisher.map(|pc| (pc, ssrc));
        line.feedback.store(choice.is_some(), Ordering::Relaxed);
        source.fanout.add(Sink {
            subscriber: subscriber.clone(),
            track: Arc::clone(&line.track),
            consumer,
            activity: Arc::clone(&participant.member.activity),
            switching: None,
        });
        if let Some(choice) = choice {
            self.layer_choices
                .insert((subscriber.clone(), producer), choice);
        }
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
        self.layer_choices.remove(&(subscriber.clone(), producer));
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
                        renegotiation_ended("failed");
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
                renegotiation_ended("timeout");
                let _ = participant
                    .member
                    .close
                    .try_send(CloseReason::AnswerTimeout);
            }
        }
    }

    /// The codec name (e.g. `VP8`) of the video published in the room now: one per room,
    /// so every subscriber can take every forwarded video.
    fn video_codec(&self) -> Option<String> {
        self.sources.values().find_map(|source| {
            let (kind, name) = source.codec.mime_type.split_once('/')?;
            kind.eq_ignore_ascii_case("video")
                .then(|| name.to_ascii_uppercase())
        })
    }

    /// The client's offer on its live connection: applied and answered here, so that the
    /// answer names each forwarded line's publisher as the server's offers do. New tracks
    /// it publishes arrive as usual (`Published`).
    async fn client_offer(
        &mut self,
        peer: &ParticipantId,
        sdp: String,
    ) -> Result<String, SessionError> {
        let video_codec = self.video_codec();
        let Some(participant) = self.participants.get_mut(peer) else {
            return Err(SessionError::Internal(format!("{peer} is not in the room")));
        };
        participant
            .renegotiation
            .client_offer()
            .map_err(room_refusal)?;
        let answered =
            answer_client_offer(participant, &self.context, sdp, video_codec.as_deref()).await;
        participant.renegotiation.client_offer_done();
        answered
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
    name_forwarded_lines(&mut sdp, &participant.plan);
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

/// Applies a participant's re-offer and returns the answer as the client gets it.
async fn answer_client_offer(
    participant: &mut Participant,
    context: &RoomContext,
    offer: String,
    video_codec: Option<&str>,
) -> Result<String, SessionError> {
    let mut parsed = Sdp::parse(&offer).map_err(|e| SessionError::InvalidSdp(e.to_string()))?;
    let lines = parsed.media_count();
    let max = context.limits.max_mlines();
    if lines > max {
        return Err(SessionError::InvalidSdp(format!(
            "the offer has {lines} m-lines; a room participant's may have {max}"
        )));
    }
    let offer = match video_codec {
        Some(codec) => {
            parsed.keep_video_codec(codec);
            parsed.to_text()
        }
        None => offer,
    };
    let pc = &participant.member.pc;
    let description =
        RTCSessionDescription::offer(offer).map_err(|e| SessionError::InvalidSdp(e.to_string()))?;
    pc.set_remote_description(description)
        .await
        .map_err(|e| SessionError::InvalidSdp(e.to_string()))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| SessionError::Internal(format!("answering the re-offer: {e}")))?;
    let mut sdp = Sdp::parse(&answer.sdp).map_err(|e| SessionError::Internal(e.to_string()))?;
    name_forwarded_lines(&mut sdp, &participant.plan);
    if let Some(map) = context.port_map {
        sdp.map_candidates(|c| map.candidate(c));
    }
    sdp.advertise_max_message_size(context.max_message_bytes);
    sdp.remove_ice_lite();
    pc.set_local_description(answer)
        .await
        .map_err(|e| SessionError::Internal(format!("applying the re-answer: {e}")))?;
    Ok(sdp.to_text())
}

/// Each forwarded line's msid as its current track's (webrtc-rs freezes a sender's msid at
/// its first track; a recycled line carries another publisher's).
fn name_forwarded_lines(sdp: &mut Sdp, plan: &MLinePlan) {
    for line in plan.lines() {
        let Some(mid) = &line.mid else { continue };
        match &line.state {
            LineState::Live(track) => sdp.set_msid(mid, &track.peer, &track.track),
            LineState::Stopping { .. } | LineState::Free => sdp.clear_msid(mid),
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
        RoomError::RoomManifestMismatch { .. } => SessionError::InvalidArgument(err.to_string()),
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

/// The subscriber's forwarded line that carries `producer` now.
fn line_of<'a>(
    participants: &'a BTreeMap<ParticipantId, Participant>,
    subscriber: &ParticipantId,
    producer: ProducerId,
) -> Option<&'a Line> {
    let participant = participants.get(subscriber)?;
    let index = participant.plan.lines().iter().position(
        |line| matches!(&line.state, LineState::Live(track) if track.producer == producer),
    )?;
    participant.lines.get(index)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
