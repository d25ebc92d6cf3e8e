//! One server peer: a WebRTC peer connection whose callbacks become channels, wired to a
//! pipeline session. Callbacks hold no `Arc` of their own peer connection (0.17 leaked those).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

use super::activity::Activity;
use super::error::PeerError;
use super::quality::MediaCounters;
use super::session_trace::SessionTrace;
use super::stack::WebRtcStack;
use super::udp_filter::UfragRegistration;
pub(crate) use super::wiring::PublishedRemote;
use super::wiring::Wiring;
use crate::pipeline::{AudioMode, OpusSettings, Pipeline, VideoMode};
use crate::signaling::IceCandidate;

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
    /// A room participant's published tracks, as they start arriving.
    pub published: Option<mpsc::Receiver<PublishedRemote>>,
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
    /// What happens to audio: the manifest's `media.audio`, or `none` for a room participant
    /// without a manifest of its own.
    pub audio: AudioMode,
    /// What happens to video (the manifest's `media.video`; a room participant's default does
    /// not loop it back).
    pub video: VideoMode,
    /// The session is a room participant: the tracks it publishes go to the room
    /// ([`ServerPeer::published`]) instead of its own pipeline or loopback.
    pub room: bool,
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
        let wiring = Wiring {
            stack,
            settings,
            pc: &pc,
            tasks,
            cancel,
            trace,
        };
        match wiring.wire(pipeline, offer, offer_sdp, on_candidate).await {
            Ok(peer) => Ok(peer),
            Err(err) => {
                cancel.cancel();
                let _ = pc.close().await;
                Err(err)
            }
        }
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
