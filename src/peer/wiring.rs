//! How a server peer is wired, stage by stage: what the session sends ([`Wiring::outbound_tracks`]),
//! how its connection reports ([`Wiring::connection_state`]), its local candidates
//! ([`Wiring::candidates`]), what it receives ([`Wiring::inbound_tracks`]), its data channels
//! ([`Wiring::data_channels`]), the pipeline between them ([`Wiring::pipeline_output`]) and the
//! answer ([`Wiring::answer`]). Each stage owns what it creates (tracks, callbacks, tasks) and
//! hands the next stages only channels and handles.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice_transport::ice_candidate::RTCIceCandidate;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_receiver::RTCRtpReceiver;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use super::activity::Activity;
use super::audio::{receive_audio, send_pipeline_output, InboundAudio};
use super::data_channel::{read_when_open, DataInput};
use super::data_output::DataOutput;
use super::error::PeerError;
use super::forward::{drain, forward_rtp};
use super::quality::MediaCounters;
use super::sdp::Sdp;
use super::server_peer::{PeerSettings, ServerPeer};
use super::session_trace::SessionTrace;
use super::stack::{opus_capability, WebRtcStack};
use super::udp_filter::UfragRegistration;
use super::video::{is_video, offered_video_codec, relay_keyframe_requests};
use crate::pipeline::{AudioMode, Envelope, Pipeline, PipelineInput, Playback, VideoMode};
use crate::signaling::IceCandidate;

/// Data channels and incoming tracks, announced by callbacks to the session's tasks.
const CALLBACK_QUEUE: usize = 8;
/// How long the answer waits for host-only gathering (which takes well under a millisecond).
const GATHERING_WAIT: Duration = Duration::from_secs(1);

/// What every stage shares: the connection being wired, the session's settings, and where
/// its tasks run (all stopped by `cancel`).
pub(crate) struct Wiring<'a> {
    pub stack: &'a WebRtcStack,
    pub settings: &'a PeerSettings,
    pub pc: &'a Arc<RTCPeerConnection>,
    pub tasks: &'a TaskTracker,
    pub cancel: &'a CancellationToken,
    pub trace: &'a Arc<SessionTrace>,
}

/// The server's own outbound tracks ([`Wiring::outbound_tracks`]).
pub(crate) struct OutboundTracks {
    /// Pipeline audio, encoded and paced (`media.audio: transcode`).
    pub pipeline_audio: Option<Arc<TrackLocalStaticSample>>,
    /// The client's own Opus RTP sent back (`media.audio: forward`).
    pub forward_audio: Option<Arc<TrackLocalStaticRTP>>,
    /// The client's video sent back (`media.video: loopback` with video offered).
    pub video: Option<Arc<TrackLocalStaticRTP>>,
    /// The SSRC of the video being looped back, for keyframe requests upstream.
    pub video_source: watch::Sender<Option<u32>>,
}

/// Local candidates held for the answer ([`Wiring::candidates`]).
pub(crate) struct Candidates {
    /// `Some` until the answer takes them; later ones trickle.
    held: Arc<Mutex<Option<Vec<IceCandidate>>>>,
    /// Becomes true when gathering completes.
    gathered: watch::Receiver<bool>,
}

/// A track a room participant publishes, as the inbound stage hands it to the room.
pub(crate) struct PublishedRemote {
    pub remote: Arc<TrackRemote>,
    pub receiver: Arc<RTCRtpReceiver>,
    /// The publisher's m-line carrying it.
    pub mid: String,
}

/// What the answer stage returns.
struct Answer {
    sdp: String,
    ufrag: Option<UfragRegistration>,
    held_candidates: Vec<IceCandidate>,
}

impl Wiring<'_> {
    /// Runs every stage in order and answers `offer`.
    pub async fn wire(
        &self,
        pipeline: &Pipeline,
        offer: RTCSessionDescription,
        offer_sdp: &str,
        on_candidate: mpsc::Sender<IceCandidate>,
    ) -> Result<ServerPeer, PeerError> {
        let activity = Arc::new(Activity::new());
        let counters = Arc::new(MediaCounters::default());
        let session = info_span!(
            "pipeline.build",
            pipeline = pipeline.manifest().metadata.name
        )
        .in_scope(|| {
            pipeline.start_with_queue(
                self.cancel.child_token(),
                self.settings.pipeline_queue_frames,
                self.settings.pipeline_queue_bytes,
            )
        })
        .map_err(|e| PeerError::Pipeline(e.to_string()))?;
        let outbound = self.outbound_tracks(offer_sdp).await?;
        let state = self.connection_state();
        let candidates = self.candidates(offer_sdp, on_candidate);
        let (published_tx, published) = match self.settings.room {
            true => {
                let (tx, rx) = mpsc::channel(CALLBACK_QUEUE);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        self.inbound_tracks(
            &outbound,
            published_tx,
            &session.input,
            &activity,
            &counters,
        );
        let channels = self.data_channels(&session.input, &activity);
        self.pipeline_output(
            session.output,
            session.playback,
            outbound.pipeline_audio,
            channels,
            &counters,
        );
        let answer = self
            .answer(offer, candidates)
            .instrument(info_span!("sdp.answer"))
            .await?;
        Ok(ServerPeer {
            pc: Arc::clone(self.pc),
            answer_sdp: answer.sdp,
            held_candidates: answer.held_candidates,
            state,
            activity,
            counters,
            ufrag: answer.ufrag,
            published,
        })
    }

    /// Tracks stage: the server's own outbound audio (pipeline audio encoded and paced, or in
    /// `media.audio: forward` the client's own Opus RTP sent back without transcoding; none
    /// in `media.audio: none`) and, with `media.video: loopback` and video offered, the
    /// client's video sent back. Owns the tasks that read those senders' RTCP.
    async fn outbound_tracks(&self, offer_sdp: &str) -> Result<OutboundTracks, PeerError> {
        let (pipeline_audio, forward_audio, local): (
            _,
            _,
            Option<Arc<dyn TrackLocal + Send + Sync>>,
        ) = match self.settings.audio {
            AudioMode::Forward => {
                let track = Arc::new(TrackLocalStaticRTP::new(
                    opus_capability(),
                    "audio".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                (None, Some(Arc::clone(&track)), Some(track as _))
            }
            AudioMode::Transcode => {
                let track = Arc::new(TrackLocalStaticSample::new(
                    opus_capability(),
                    "audio".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                (Some(Arc::clone(&track)), None, Some(track as _))
            }
            AudioMode::None => (None, None, None),
        };
        if let Some(local) = local {
            let sender = self
                .pc
                .add_track(local)
                .await
                .map_err(|e| PeerError::step("adding the audio track", e))?;
            self.tasks.spawn(read_rtcp(sender, self.cancel.clone()));
        }

        let (video_source, video_source_rx) = watch::channel(None);
        let video = match (offered_video_codec(offer_sdp), self.settings.video) {
            (Some(codec), VideoMode::Loopback) => {
                let track = Arc::new(TrackLocalStaticRTP::new(
                    codec,
                    "video".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                let sender = self
                    .pc
                    .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
                    .await
                    .map_err(|e| PeerError::step("adding the video track", e))?;
                self.tasks.spawn(relay_keyframe_requests(
                    sender,
                    Arc::downgrade(self.pc),
                    video_source_rx,
                    self.cancel.clone(),
                ));
                Some(track)
            }
            _ => None,
        };
        Ok(OutboundTracks {
            pipeline_audio,
            forward_audio,
            video,
            video_source,
        })
    }

    /// Connection stage: the peer connection's state as a watch channel; DTLS and ICE
    /// connected are reported to the trace.
    fn connection_state(&self) -> watch::Receiver<RTCPeerConnectionState> {
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let state_trace = Arc::clone(self.trace);
        self.pc
            .on_peer_connection_state_change(Box::new(move |state| {
                if state == RTCPeerConnectionState::Connected {
                    state_trace.dtls_connected();
                }
                let _ = state_tx.send(state);
                Box::pin(async {})
            }));
        let ice_trace = Arc::clone(self.trace);
        self.pc
            .on_ice_connection_state_change(Box::new(move |state| {
                if matches!(
                    state,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                ) {
                    ice_trace.ice_connected();
                }
                Box::pin(async {})
            }));
        state_rx
    }

    /// Candidates stage: local candidates are held for the answer until it is made, and
    /// trickled to `on_candidate` after that. Under BUNDLE every candidate belongs to the
    /// first section (an offer that does not parse fails at set_remote_description).
    fn candidates(&self, offer_sdp: &str, on_candidate: mpsc::Sender<IceCandidate>) -> Candidates {
        let mid = Sdp::parse(offer_sdp)
            .ok()
            .and_then(|sdp| sdp.first_mid().map(str::to_owned))
            .unwrap_or_default();
        let port_map = self.stack.port_map();
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let (gathered_tx, gathered) = watch::channel(false);
        let candidate_held = Arc::clone(&held);
        let candidate_cancel = self.cancel.clone();
        let gathering_trace = Arc::clone(self.trace);
        self.pc
            .on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
                let complete = candidate.is_none();
                // Converted here, not in the future: the order of calls is the gathering order.
                let line = match candidate.map(|c| c.to_json()) {
                    Some(Ok(init)) => Some(match port_map {
                        Some(map) => map.candidate(&init.candidate),
                        None => init.candidate,
                    }),
                    Some(Err(err)) => {
                        tracing::warn!(%err, "unserializable local candidate");
                        None
                    }
                    None => Some(String::new()),
                };
                let candidate = line.map(|line| IceCandidate {
                    candidate: line,
                    sdp_mid: mid.clone(),
                    sdp_mline_index: 0,
                });
                let candidate = match (candidate, candidate_held.lock().as_mut()) {
                    (Some(candidate), Some(held)) => {
                        held.push(candidate);
                        None
                    }
                    (candidate, _) => candidate,
                };
                if complete {
                    gathering_trace.gathering_complete();
                    let _ = gathered_tx.send(true);
                }
                let on_candidate = on_candidate.clone();
                let cancel = candidate_cancel.clone();
                Box::pin(async move {
                    if let Some(candidate) = candidate.filter(|_| !cancel.is_cancelled()) {
                        let _ = on_candidate.send(candidate).await;
                    }
                })
            }));
        Candidates { held, gathered }
    }

    /// Inbound stage: each track the client sends gets a task of its own. A room
    /// participant's tracks go to `room` (the room forwards them). Otherwise video is looped
    /// back (or drained); audio is forwarded back as RTP in `media.audio: forward`, drained
    /// in `none`, else decoded into the pipeline's `input`.
    fn inbound_tracks(
        &self,
        outbound: &OutboundTracks,
        room: Option<mpsc::Sender<PublishedRemote>>,
        input: &PipelineInput,
        activity: &Arc<Activity>,
        counters: &Arc<MediaCounters>,
    ) {
        if let Some(room) = room {
            self.pc
                .on_track(Box::new(move |remote, receiver, transceiver| {
                    let room = room.clone();
                    Box::pin(async move {
                        let mid = transceiver.mid().map(|m| m.to_string()).unwrap_or_default();
                        let published = PublishedRemote {
                            remote,
                            receiver,
                            mid,
                        };
                        let _ = room.send(published).await;
                    })
                }));
            return;
        }
        let (track_tx, mut track_rx) = mpsc::channel::<Arc<TrackRemote>>(CALLBACK_QUEUE);
        self.pc
            .on_track(Box::new(move |remote, _receiver, _transceiver| {
                let track_tx = track_tx.clone();
                Box::pin(async move {
                    let _ = track_tx.send(remote).await;
                })
            }));
        let drain_audio = self.settings.audio == AudioMode::None;
        let input = input.clone();
        let activity = Arc::clone(activity);
        let counters = Arc::clone(counters);
        let cancel = self.cancel.clone();
        let tasks = self.tasks.clone();
        let max_delay = self.settings.jitter_buffer;
        let trace = Arc::clone(self.trace);
        let video_track = outbound.video.clone();
        let video_source = outbound.video_source.clone();
        let forward_track = outbound.forward_audio.clone();
        self.tasks.spawn(async move {
            loop {
                let remote = tokio::select! {
                    remote = track_rx.recv() => match remote { Some(r) => r, None => break },
                    () = cancel.cancelled() => break,
                };
                let activity = Arc::clone(&activity);
                let trace = Arc::clone(&trace);
                let cancel = cancel.clone();
                let loopback = if is_video(&remote) {
                    video_track.as_ref().map(|t| (t, video_source.clone()))
                } else {
                    forward_track.as_ref().map(|t| (t, watch::channel(None).0))
                };
                match loopback {
                    Some((local, source)) => tasks.spawn(forward_rtp(
                        remote,
                        Arc::clone(local),
                        source,
                        activity,
                        trace,
                        cancel,
                    )),
                    None if is_video(&remote) || drain_audio => {
                        tasks.spawn(drain(remote, activity, trace, cancel))
                    }
                    None => {
                        let inbound = InboundAudio {
                            input: input.clone(),
                            activity,
                            counters: Arc::clone(&counters),
                            max_delay,
                            trace,
                        };
                        tasks.spawn(receive_audio(remote, inbound, cancel))
                    }
                };
            }
        });
    }

    /// Data channels stage: with data channels enabled, each channel the client opens is
    /// read into the pipeline's `input` and announced on the returned channel for output.
    fn data_channels(
        &self,
        input: &PipelineInput,
        activity: &Arc<Activity>,
    ) -> mpsc::Receiver<Arc<RTCDataChannel>> {
        let (channel_tx, channel_rx) = mpsc::channel(CALLBACK_QUEUE);
        if self.settings.enable_data_channel {
            let data = DataInput {
                input: input.clone(),
                activity: Arc::clone(activity),
                max_message_bytes: self.settings.max_datachannel_message_bytes,
                open: Arc::default(),
                max_channels: self.settings.max_datachannels,
                accepted: channel_tx,
                tasks: self.tasks.clone(),
                cancel: self.cancel.clone(),
            };
            self.pc
                .on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
                    read_when_open(&channel, data.clone());
                    Box::pin(async {})
                }));
        }
        channel_rx
    }

    /// Pipeline stage: what the pipeline outputs goes out, audio on `audio` (encoded and
    /// paced, reported to and flushed by `playback`), everything else to the data `channels`
    /// through a bounded queue of its own.
    fn pipeline_output(
        &self,
        output: mpsc::Receiver<Envelope>,
        playback: Playback,
        audio: Option<Arc<TrackLocalStaticSample>>,
        channels: mpsc::Receiver<Arc<RTCDataChannel>>,
        counters: &Arc<MediaCounters>,
    ) {
        let (data_output, send_data) = DataOutput::start(
            self.settings.datachannel_send_queue_bytes,
            channels,
            self.cancel.clone(),
        );
        self.tasks.spawn(send_data);
        self.tasks.spawn(send_pipeline_output(
            output,
            audio,
            playback,
            data_output,
            self.settings.opus.clone(),
            Arc::clone(counters),
            Arc::clone(self.trace),
            self.cancel.clone(),
        ));
    }

    /// Answer stage: applies the offer, admits the answer's ufrag on the shared port, and
    /// writes the answer with the candidates gathered meanwhile (and end-of-candidates).
    async fn answer(
        &self,
        offer: RTCSessionDescription,
        mut candidates: Candidates,
    ) -> Result<Answer, PeerError> {
        let pc = self.pc;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| PeerError::InvalidOffer(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| PeerError::step("creating the answer", e))?;
        // Before the client can know the ufrag: its first check must find it admitted.
        let ufrag = self.stack.admit_ufrag(&answer.sdp)?;
        let mut answer_sdp = Sdp::parse(&answer.sdp)
            .map_err(|e| PeerError::Setup(format!("our own answer: {e}")))?;
        if let Some(map) = self.stack.port_map() {
            answer_sdp.map_candidates(|c| map.candidate(c));
        }
        answer_sdp.advertise_max_message_size(self.settings.max_datachannel_message_bytes);
        answer_sdp.remove_ice_lite();
        self.trace.answering();
        pc.set_local_description(answer)
            .await
            .map_err(|e| PeerError::step("setting the local description", e))?;
        // An ICE-lite agent gathers host candidates only, which takes well under a
        // millisecond: the answer carries them and end-of-candidates, for clients that
        // never use trickled candidates. They still trickle for those that expect them.
        let complete =
            tokio::time::timeout(GATHERING_WAIT, candidates.gathered.wait_for(|done| *done))
                .await
                .is_ok_and(|done| done.is_ok());
        let held_candidates = candidates.held.lock().take().unwrap_or_default();
        let lines: Vec<&str> = held_candidates
            .iter()
            .map(|c| c.candidate.as_str())
            .filter(|line| !line.is_empty())
            .collect();
        if !complete {
            tracing::warn!(
                candidates = lines.len(),
                "gathering did not complete in time: the rest of the candidates trickle"
            );
        }
        answer_sdp.add_candidates(&lines, complete);
        Ok(Answer {
            sdp: answer_sdp.to_text(),
            ufrag,
            held_candidates,
        })
    }
}

/// Reads a sender's RTCP until the session ends: the interceptors (NACK, reports) only work
/// when it is read.
async fn read_rtcp(sender: Arc<RTCRtpSender>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        tokio::select! {
            read = sender.read(&mut buf) => if read.is_err() { break },
            () = cancel.cancelled() => break,
        }
    }
}
