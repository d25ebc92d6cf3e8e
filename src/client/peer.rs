//! One load peer: a webrtc-crate client that replays the test signal's Opus packets and
//! counts (and on a sample of peers, decodes) what comes back.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecParameters, RTPCodecType};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

use super::error::ClientError;
use super::signal::{MarkerDetector, TestSignal, PERIOD_PACKETS};
use crate::media::{OpusDecoder, FRAME_DURATION, FRAME_SAMPLES};
use crate::peer::opus_capability;

/// Marker send times kept per peer to match returned markers against (5 s of them).
const MARKERS_KEPT: usize = 5;

/// The webrtc API every load peer is built from: Opus only, no interceptors (the client's
/// own CPU must stay low; the server's path is what is measured), host candidates on one
/// address.
pub struct ClientStack {
    api: API,
}

impl ClientStack {
    /// Clients gather candidates on `ice_ip` only.
    ///
    /// # Errors
    /// [`ClientError::WebRtc`] when the codec cannot be registered.
    pub fn new(ice_ip: IpAddr) -> Result<Self, ClientError> {
        let mut media = MediaEngine::default();
        media.register_codec(
            RTCRtpCodecParameters {
                capability: opus_capability(),
                payload_type: 111,
                ..Default::default()
            },
            RTPCodecType::Audio,
        )?;
        let mut settings = SettingEngine::default();
        settings.set_include_loopback_candidate(ice_ip.is_loopback());
        settings.set_ip_filter(Box::new(move |ip| ip == ice_ip));
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(Registry::new())
            .with_setting_engine(settings)
            .build();
        Ok(Self { api })
    }
}

/// Counters of one peer's audio, shared with its tasks.
#[derive(Default)]
pub struct PeerCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Server-added delays (ms) of the markers found in the returned audio (sampled peers).
    pub latencies_ms: Mutex<Vec<f64>>,
    /// When the last marker packets were sent, newest last.
    markers_sent: Mutex<VecDeque<Instant>>,
    /// Decoded returned audio, kept up to `keep_samples` (a measured peer; the probe).
    pub decoded: Mutex<Vec<f32>>,
    keep_samples: AtomicUsize,
}

/// A client peer connection with its audio track.
pub struct LoadPeer {
    pub pc: Arc<RTCPeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    pub counters: Arc<PeerCounters>,
    /// Local candidates as gathered; `None` ends gathering.
    pub candidates: mpsc::Receiver<Option<RTCIceCandidateInit>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    cancel: CancellationToken,
}

impl LoadPeer {
    /// A peer with one send-receive Opus track. With `measure`, the returned audio is
    /// decoded and its markers timed against `signal`'s baseline.
    ///
    /// # Errors
    /// [`ClientError::WebRtc`] when the peer connection or its track cannot be made.
    pub async fn new(
        stack: &ClientStack,
        signal: &Arc<TestSignal>,
        measure: bool,
    ) -> Result<Self, ClientError> {
        let pc = Arc::new(
            stack
                .api
                .new_peer_connection(RTCConfiguration::default())
                .await?,
        );
        let track = Arc::new(TrackLocalStaticRTP::new(
            opus_capability(),
            "audio".into(),
            "loadgen".into(),
        ));
        let sender = pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
            .await?;
        let cancel = CancellationToken::new();
        // RTCP for our sender must be read or the stack's buffer fills.
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                tokio::select! {
                    read = sender.read(&mut buf) => if read.is_err() { break },
                    () = stop.cancelled() => break,
                }
            }
        });

        let counters = Arc::new(PeerCounters::default());
        let sink = Arc::clone(&counters);
        let baseline = signal.baseline_samples;
        let stop = cancel.clone();
        pc.on_track(Box::new(move |track, _, _| {
            let sink = Arc::clone(&sink);
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = receive(track, sink, measure.then_some(baseline)) => {}
                    () = stop.cancelled() => {}
                }
            });
            Box::pin(async {})
        }));
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));
        let (candidate_tx, candidates) = mpsc::channel(16);
        pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
            let tx = candidate_tx.clone();
            Box::pin(async move {
                let init = match c.map(|c| c.to_json()).transpose() {
                    Ok(init) => init,
                    Err(err) => {
                        tracing::debug!(%err, "unusable local candidate");
                        return;
                    }
                };
                let _ = tx.send(init).await;
            })
        }));
        Ok(Self {
            pc,
            track,
            counters,
            candidates,
            state,
            cancel,
        })
    }

    /// Creates and applies an offer. With `gathered`, waits for ICE gathering to finish and
    /// returns the SDP with every candidate in it (for servers that take no trickle).
    ///
    /// # Errors
    /// [`ClientError::WebRtc`] when the stack refuses the offer.
    pub async fn offer(&self, gathered: bool) -> Result<String, ClientError> {
        let offer = self.pc.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        let mut done = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await?;
        if !gathered {
            return Ok(sdp);
        }
        let _ = done.recv().await;
        Ok(self
            .pc
            .local_description()
            .await
            .map_or(sdp, |description| description.sdp))
    }

    /// # Errors
    /// [`ClientError::WebRtc`] when the answer does not parse or does not fit the offer.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), ClientError> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    /// # Errors
    /// [`ClientError::WebRtc`] when the candidate does not parse.
    pub async fn add_candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), ClientError> {
        if candidate.is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate,
                sdp_mid,
                sdp_mline_index,
                username_fragment: None,
            })
            .await?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == RTCPeerConnectionState::Connected
    }

    /// Keeps up to `samples` of the decoded returned audio in `counters.decoded` (a peer
    /// made with `measure`).
    pub fn keep_audio(&self, samples: usize) {
        self.counters.keep_samples.store(samples, Ordering::Relaxed);
    }

    /// Replays the signal in real time until `stop` fires: sequence numbers and timestamps
    /// follow the wall clock, so a tick the loadgen missed is a gap, not a burst.
    pub fn start_sending(&self, signal: Arc<TestSignal>, stop: CancellationToken) {
        let track = Arc::clone(&self.track);
        let counters = Arc::clone(&self.counters);
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut ticker = tokio::time::interval(FRAME_DURATION);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let ssrc = rand::random::<u32>();
            loop {
                let tick = tokio::select! {
                    tick = ticker.tick() => tick,
                    () = stop.cancelled() => break,
                    () = cancel.cancelled() => break,
                };
                let i = (tick.duration_since(started).as_millis() / 20) as u64;
                let period_index = (i % PERIOD_PACKETS as u64) as usize;
                let packet = Packet {
                    header: Header {
                        version: 2,
                        payload_type: 111,
                        sequence_number: i as u16,
                        timestamp: (i * FRAME_SAMPLES as u64) as u32,
                        ssrc,
                        marker: i == 0,
                        ..Default::default()
                    },
                    payload: signal.packets[period_index].clone(),
                };
                if period_index == 0 {
                    let mut markers = counters.markers_sent.lock();
                    if markers.len() == MARKERS_KEPT {
                        markers.pop_front();
                    }
                    markers.push_back(Instant::now());
                }
                if track.write_rtp(&packet).await.is_ok() {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// Stops the peer's tasks and closes the connection.
    pub async fn close(&self) {
        self.cancel.cancel();
        if let Err(err) = self.pc.close().await {
            tracing::debug!(%err, "closing a load peer");
        }
    }
}

/// Counts returned packets; with `baseline`, decodes them and times the markers.
async fn receive(track: Arc<TrackRemote>, counters: Arc<PeerCounters>, baseline: Option<usize>) {
    let mut measure = match baseline {
        Some(baseline) => match OpusDecoder::new() {
            Ok(decoder) => Some((decoder, MarkerDetector::default(), baseline)),
            Err(err) => {
                tracing::warn!(%err, "no decoder: latency not measured on this peer");
                None
            }
        },
        None => None,
    };
    let mut decoded_samples: u64 = 0;
    while let Ok((packet, _)) = track.read_rtp().await {
        let arrived = Instant::now();
        counters.received.fetch_add(1, Ordering::Relaxed);
        let Some((decoder, detector, baseline)) = measure.as_mut() else {
            continue;
        };
        let Ok(pcm) = decoder.decode(&packet.payload) else {
            continue;
        };
        let keep = counters.keep_samples.load(Ordering::Relaxed);
        if keep > 0 {
            let mut decoded = counters.decoded.lock();
            let room = keep.saturating_sub(decoded.len());
            decoded.extend_from_slice(&pcm[..pcm.len().min(room)]);
        }
        let packet_start = decoded_samples;
        decoded_samples += pcm.len() as u64;
        for onset in detector.push(pcm) {
            // Onset `o` samples into a packet that arrived at `arrived`, against the marker
            // `baseline` samples into a packet sent at `sent`.
            let offset_ms = (onset as f64 - packet_start as f64 - *baseline as f64) / 48.0;
            let delay = counters
                .markers_sent
                .lock()
                .iter()
                .rev()
                .map(|&sent| signed_ms(arrived, sent) + offset_ms)
                .find(|delay| *delay >= 0.0);
            if let Some(delay) = delay {
                counters.latencies_ms.lock().push(delay);
            }
        }
    }
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(b.duration_since(a).as_secs_f64() * 1000.0),
    }
}
