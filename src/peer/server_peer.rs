//! One server peer: a WebRTC peer connection whose callbacks become channels, wired to a
//! pipeline session. Callbacks hold no `Arc` of their own peer connection (0.17 leaked those).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;

use super::activity::Activity;
use super::audio::{receive_audio, send_pipeline_output, InboundAudio};
use super::data_channel::{read_when_open, DataInput};
use super::data_output::DataOutput;
use super::error::PeerError;
use super::forward::{drain, forward_rtp};
use super::quality::MediaCounters;
use super::sdp::Sdp;
use super::session_trace::SessionTrace;
use super::stack::{opus_capability, WebRtcStack};
use super::udp_filter::UfragRegistration;
use super::video::{is_video, offered_video_codec, relay_keyframe_requests};
use crate::pipeline::{AudioMode, OpusSettings, Pipeline, VideoMode};
use crate::signaling::IceCandidate;

/// Data channels and incoming tracks, announced by callbacks to the session's tasks.
const CALLBACK_QUEUE: usize = 8;
/// How long the answer waits for host-only gathering (which takes well under a millisecond).
const GATHERING_WAIT: Duration = Duration::from_secs(1);

/// What the session manager needs to run and close a server peer.
pub(crate) struct ServerPeer {
    pub pc: Arc<RTCPeerConnection>,
    /// The answer, with the local candidates gathered before it was made.
    pub answer_sdp: String,
    /// Those candidates (and end-of-candidates) to trickle as well, before any later one.
    pub held_candidates: Vec<IceCandidate>,
    /// Peer connection state changes.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// When media last arrived.
    pub activity: Arc<Activity>,
    /// Quality counters the media tasks update.
    pub counters: Arc<MediaCounters>,
    /// The shared UDP port admits this session's checks while this lives.
    pub ufrag: Option<UfragRegistration>,
}

/// Per-session settings.
#[derive(Debug, Clone)]
pub(crate) struct PeerSettings {
    pub enable_data_channel: bool,
    /// Upper bound of the inbound jitter buffer's delay.
    pub jitter_buffer: Duration,
    /// Outbound Opus encoder settings (flags merged with the manifest's `media.opus`).
    pub opus: OpusSettings,
    /// Items the pipeline's input holds (`--pipeline-queue-frames`).
    pub pipeline_queue_frames: usize,
    /// Message bytes the pipeline's input holds (`--pipeline-queue-bytes`).
    pub pipeline_queue_bytes: usize,
    /// Largest inbound data-channel message (`--max-datachannel-message-bytes`).
    pub max_datachannel_message_bytes: usize,
    /// Pipeline output waiting for the data channels (`--datachannel-send-queue-bytes`).
    pub datachannel_send_queue_bytes: usize,
    /// Data channels read at once (`--max-datachannels`).
    pub max_datachannels: usize,
}

impl ServerPeer {
    /// Creates the peer connection, starts the pipeline and its media tasks (on `tasks`,
    /// stopped by `cancel`) and answers `offer_sdp`. The answer waits for host-only gathering
    /// (immediate) and carries the candidates; those gathered later go to `on_candidate`.
    /// The session's steps are reported to `trace`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        stack: &WebRtcStack,
        pipeline: &Pipeline,
        settings: &PeerSettings,
        offer_sdp: &str,
        on_candidate: mpsc::Sender<IceCandidate>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
        trace: &Arc<SessionTrace>,
    ) -> Result<Self, PeerError> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| PeerError::InvalidOffer(e.to_string()))?;
        let pc = Arc::new(
            stack
                .api()
                .new_peer_connection(stack.rtc_configuration())
                .await
                .map_err(|e| PeerError::step("creating the peer connection", e))?,
        );
        match Self::wire(
            stack,
            pipeline,
            settings,
            &pc,
            offer,
            offer_sdp,
            on_candidate,
            tasks,
            cancel,
            trace,
        )
        .await
        {
            Ok(peer) => Ok(peer),
            Err(err) => {
                cancel.cancel();
                let _ = pc.close().await;
                Err(err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn wire(
        stack: &WebRtcStack,
        pipeline: &Pipeline,
        settings: &PeerSettings,
        pc: &Arc<RTCPeerConnection>,
        offer: RTCSessionDescription,
        offer_sdp: &str,
        on_candidate: mpsc::Sender<IceCandidate>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
        trace: &Arc<SessionTrace>,
    ) -> Result<Self, PeerError> {
        let activity = Arc::new(Activity::new());
        let counters = Arc::new(MediaCounters::default());
        let pipeline_session = info_span!(
            "pipeline.build",
            pipeline = pipeline.manifest().metadata.name
        )
        .in_scope(|| {
            pipeline.start_with_queue(
                cancel.child_token(),
                settings.pipeline_queue_frames,
                settings.pipeline_queue_bytes,
            )
        })
        .map_err(|e| PeerError::Pipeline(e.to_string()))?;
        let pipeline_input = pipeline_session.input;

        // Outbound audio: pipeline audio encoded and paced by the output task, or in
        // `media.audio: forward` the client's own Opus RTP sent back without transcoding.
        let forward_audio = pipeline.manifest().media.audio == AudioMode::Forward;
        let (track, forward_track, local): (_, _, Arc<dyn TrackLocal + Send + Sync>) =
            if forward_audio {
                let track = Arc::new(TrackLocalStaticRTP::new(
                    opus_capability(),
                    "audio".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                (None, Some(Arc::clone(&track)), track)
            } else {
                let track = Arc::new(TrackLocalStaticSample::new(
                    opus_capability(),
                    "audio".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                (Some(Arc::clone(&track)), None, track)
            };
        let sender = pc
            .add_track(local)
            .await
            .map_err(|e| PeerError::step("adding the audio track", e))?;
        // RTCP must be read for the interceptors (NACK, reports) to work.
        let rtcp_cancel = cancel.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                tokio::select! {
                    read = sender.read(&mut buf) => if read.is_err() { break },
                    () = rtcp_cancel.cancelled() => break,
                }
            }
        });

        // Video loopback: the client's video comes back on a track of ours (SFU path).
        let (video_source_tx, video_source_rx) = watch::channel(None);
        let video_track = match (
            offered_video_codec(offer_sdp),
            pipeline.manifest().media.video,
        ) {
            (Some(codec), VideoMode::Loopback) => {
                let track = Arc::new(TrackLocalStaticRTP::new(
                    codec,
                    "video".to_owned(),
                    "remotemedia-server".to_owned(),
                ));
                let sender = pc
                    .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
                    .await
                    .map_err(|e| PeerError::step("adding the video track", e))?;
                tasks.spawn(relay_keyframe_requests(
                    sender,
                    Arc::downgrade(pc),
                    video_source_rx,
                    cancel.clone(),
                ));
                Some(track)
            }
            _ => None,
        };

        // Callbacks → channels.
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let state_trace = Arc::clone(trace);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if state == RTCPeerConnectionState::Connected {
                state_trace.dtls_connected();
            }
            let _ = state_tx.send(state);
            Box::pin(async {})
        }));
        let ice_trace = Arc::clone(trace);
        pc.on_ice_connection_state_change(Box::new(move |state| {
            if matches!(
                state,
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
            ) {
                ice_trace.ice_connected();
            }
            Box::pin(async {})
        }));

        // Local candidates: held for the answer until it is made, trickled after that.
        // Under BUNDLE every candidate belongs to the first section (an offer that does not
        // parse fails at set_remote_description below).
        let mid = Sdp::parse(offer_sdp)
            .ok()
            .and_then(|sdp| sdp.first_mid().map(str::to_owned))
            .unwrap_or_default();
        let port_map = stack.port_map();
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let (gathered_tx, mut gathered_rx) = watch::channel(false);
        let candidate_held = Arc::clone(&held);
        let candidate_cancel = cancel.clone();
        let gathering_trace = Arc::clone(trace);
        pc.on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
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

        let (track_tx, mut track_rx) = mpsc::channel(CALLBACK_QUEUE);
        pc.on_track(Box::new(move |remote, _receiver, _transceiver| {
            let track_tx = track_tx.clone();
            Box::pin(async move {
                let _ = track_tx.send(remote).await;
            })
        }));
        let audio_input = pipeline_input.clone();
        let audio_activity = Arc::clone(&activity);
        let audio_cancel = cancel.clone();
        let audio_tasks = tasks.clone();
        let audio_counters = Arc::clone(&counters);
        let max_delay = settings.jitter_buffer;
        let media_trace = Arc::clone(trace);
        tasks.spawn(async move {
            loop {
                let remote = tokio::select! {
                    remote = track_rx.recv() => match remote { Some(r) => r, None => break },
                    () = audio_cancel.cancelled() => break,
                };
                if is_video(&remote) {
                    let activity = Arc::clone(&audio_activity);
                    match &video_track {
                        Some(local) => audio_tasks.spawn(forward_rtp(
                            remote,
                            Arc::clone(local),
                            video_source_tx.clone(),
                            activity,
                            Arc::clone(&media_trace),
                            audio_cancel.clone(),
                        )),
                        None => audio_tasks.spawn(drain(
                            remote,
                            activity,
                            Arc::clone(&media_trace),
                            audio_cancel.clone(),
                        )),
                    };
                    continue;
                }
                if let Some(local) = &forward_track {
                    audio_tasks.spawn(forward_rtp(
                        remote,
                        Arc::clone(local),
                        watch::channel(None).0,
                        Arc::clone(&audio_activity),
                        Arc::clone(&media_trace),
                        audio_cancel.clone(),
                    ));
                    continue;
                }
                let inbound = InboundAudio {
                    input: audio_input.clone(),
                    activity: Arc::clone(&audio_activity),
                    counters: Arc::clone(&audio_counters),
                    max_delay,
                    trace: Arc::clone(&media_trace),
                };
                audio_tasks.spawn(receive_audio(remote, inbound, audio_cancel.clone()));
            }
        });

        let (channel_tx, channel_rx) = mpsc::channel(CALLBACK_QUEUE);
        if settings.enable_data_channel {
            let data = DataInput {
                input: pipeline_input.clone(),
                activity: Arc::clone(&activity),
                max_message_bytes: settings.max_datachannel_message_bytes,
                open: Arc::default(),
                max_channels: settings.max_datachannels,
                accepted: channel_tx,
                tasks: tasks.clone(),
                cancel: cancel.clone(),
            };
            pc.on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
                read_when_open(&channel, data.clone());
                Box::pin(async {})
            }));
        }
        drop(pipeline_input);

        let (data_output, send_data) = DataOutput::start(
            settings.datachannel_send_queue_bytes,
            channel_rx,
            cancel.clone(),
        );
        tasks.spawn(send_data);
        tasks.spawn(send_pipeline_output(
            pipeline_session.output,
            track,
            data_output,
            settings.opus.clone(),
            Arc::clone(&counters),
            Arc::clone(trace),
            cancel.clone(),
        ));

        let (answer_sdp, ufrag, held_candidates) = async {
            pc.set_remote_description(offer)
                .await
                .map_err(|e| PeerError::InvalidOffer(e.to_string()))?;
            let answer = pc
                .create_answer(None)
                .await
                .map_err(|e| PeerError::step("creating the answer", e))?;
            // Before the client can know the ufrag: its first check must find it admitted.
            let ufrag = stack.admit_ufrag(&answer.sdp)?;
            let mut answer_sdp = Sdp::parse(&answer.sdp)
                .map_err(|e| PeerError::Setup(format!("our own answer: {e}")))?;
            if let Some(map) = stack.port_map() {
                answer_sdp.map_candidates(|c| map.candidate(c));
            }
            answer_sdp.advertise_max_message_size(settings.max_datachannel_message_bytes);
            answer_sdp.remove_ice_lite();
            trace.answering();
            pc.set_local_description(answer)
                .await
                .map_err(|e| PeerError::step("setting the local description", e))?;
            // An ICE-lite agent gathers host candidates only, which takes well under a
            // millisecond: the answer carries them and end-of-candidates, for clients that
            // never use trickled candidates. They still trickle for those that expect them.
            let complete = tokio::time::timeout(GATHERING_WAIT, gathered_rx.wait_for(|done| *done))
                .await
                .is_ok_and(|done| done.is_ok());
            let held_candidates = held.lock().take().unwrap_or_default();
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
            Ok::<_, PeerError>((answer_sdp.to_text(), ufrag, held_candidates))
        }
        .instrument(info_span!("sdp.answer"))
        .await?;

        Ok(Self {
            pc: Arc::clone(pc),
            answer_sdp,
            held_candidates,
            state: state_rx,
            activity,
            counters,
            ufrag,
        })
    }

    /// Adds a remote candidate (empty: end of candidates).
    pub async fn add_candidate(
        pc: &RTCPeerConnection,
        candidate: IceCandidate,
    ) -> Result<(), PeerError> {
        if candidate.candidate.is_empty() {
            // webrtc-rs has no end-of-candidates signal; nothing to do.
            return Ok(());
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: (!candidate.sdp_mid.is_empty()).then_some(candidate.sdp_mid),
            sdp_mline_index: u16::try_from(candidate.sdp_mline_index).ok(),
            username_fragment: None,
        };
        pc.add_ice_candidate(init)
            .await
            .map_err(|e| PeerError::InvalidCandidate(e.to_string()))
    }
}
