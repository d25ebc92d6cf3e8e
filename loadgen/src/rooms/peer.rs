//! One peer connection of a room participant: it may publish the stamped test signal and
//! receives any number of forwarded tracks, reading each packet's stamp into the [`Meter`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
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

use remotemedia_webrtc::client::TestSignal;
use remotemedia_webrtc::media::{FRAME_DURATION, FRAME_SAMPLES};
use remotemedia_webrtc::peer::opus_capability;

use super::stamp::{now_us, with_stamp_room, write_stamp, Meter};
use crate::error::LoadgenError;

/// The webrtc API every room peer is built from: Opus only, no interceptors (the generator's
/// own CPU must stay low), host candidates on one address.
pub struct RoomStack {
    api: API,
}

impl RoomStack {
    /// # Errors
    /// When the codec cannot be registered.
    pub fn new(ice_ip: IpAddr) -> Result<Self, LoadgenError> {
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

/// The test signal's packets with room for a stamp (see `stamp`).
pub struct StampedSignal {
    packets: Vec<Bytes>,
}

impl StampedSignal {
    /// # Errors
    /// When the signal cannot be encoded, or its packets are not plain one-frame Opus.
    pub fn new() -> Result<Self, LoadgenError> {
        let signal = TestSignal::new()?;
        let packets = signal
            .packets
            .iter()
            .map(|p| with_stamp_room(p))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LoadgenError::Room("the test signal is not code 0 Opus".into()))?;
        Ok(Self { packets })
    }
}

/// A room participant's peer connection.
pub struct RoomPeer {
    pub pc: Arc<RTCPeerConnection>,
    track: Option<Arc<TrackLocalStaticRTP>>,
    /// Local candidates as gathered; `None` ends gathering.
    pub candidates: Option<mpsc::Receiver<Option<RTCIceCandidateInit>>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Remote tracks that delivered at least one packet.
    pub live_tracks: Arc<AtomicUsize>,
    cancel: CancellationToken,
}

impl RoomPeer {
    /// A peer connection; with `publish`, one send-receive Opus track.
    ///
    /// # Errors
    /// When the peer connection or its track cannot be made.
    pub async fn new(
        stack: &RoomStack,
        meter: Arc<Meter>,
        publish: bool,
    ) -> Result<Self, LoadgenError> {
        let pc = Arc::new(
            stack
                .api
                .new_peer_connection(RTCConfiguration::default())
                .await?,
        );
        let cancel = CancellationToken::new();
        let track = if publish {
            let track = Arc::new(TrackLocalStaticRTP::new(
                opus_capability(),
                "audio".into(),
                "loadgen".into(),
            ));
            let sender = pc
                .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
                .await?;
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
            Some(track)
        } else {
            None
        };
        let live_tracks = Arc::new(AtomicUsize::new(0));
        let (live, stop) = (Arc::clone(&live_tracks), cancel.clone());
        pc.on_track(Box::new(move |track, _, _| {
            let (live, meter, stop) = (Arc::clone(&live), Arc::clone(&meter), stop.clone());
            tokio::spawn(async move {
                let receive = async {
                    let mut first = true;
                    while let Ok((packet, _)) = track.read_rtp().await {
                        if first {
                            first = false;
                            live.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(stamp) = super::stamp::read_stamp(&packet.payload) {
                            meter.received(stamp, now_us());
                        }
                    }
                    if !first {
                        live.fetch_sub(1, Ordering::Relaxed);
                    }
                };
                tokio::select! {
                    () = receive => {}
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
                if let Ok(init) = c.map(|c| c.to_json()).transpose() {
                    let _ = tx.send(init).await;
                }
            })
        }));
        Ok(Self {
            pc,
            track,
            candidates: Some(candidates),
            state,
            live_tracks,
            cancel,
        })
    }

    /// Creates and applies an offer; with `gathered`, returns it with every candidate in it.
    ///
    /// # Errors
    /// When the stack refuses the offer.
    pub async fn offer(&self, gathered: bool) -> Result<String, LoadgenError> {
        let offer = self.pc.create_offer(None).await?;
        apply_local(&self.pc, offer, gathered).await
    }

    /// # Errors
    /// When the answer does not parse or does not fit the offer.
    pub async fn accept_answer(&self, sdp: String) -> Result<(), LoadgenError> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp)?)
            .await?;
        Ok(())
    }

    /// Waits until connected.
    ///
    /// # Errors
    /// When the peer connection is dropped first.
    pub async fn connected(&mut self) -> Result<(), LoadgenError> {
        self.state
            .wait_for(|s| *s == RTCPeerConnectionState::Connected)
            .await
            .map_err(|_| LoadgenError::Room("peer connection dropped".into()))?;
        Ok(())
    }

    /// Replays the stamped signal in real time until `stop` fires, counting each packet
    /// once per participant it should reach (`copies`).
    pub fn start_sending(
        &self,
        signal: Arc<StampedSignal>,
        meter: Arc<Meter>,
        copies: u64,
        stop: CancellationToken,
    ) {
        let Some(track) = self.track.clone() else {
            return;
        };
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
                let mut payload =
                    signal.packets[(i % signal.packets.len() as u64) as usize].to_vec();
                let stamp = now_us();
                write_stamp(&mut payload, stamp);
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
                    payload: Bytes::from(payload),
                };
                if track.write_rtp(&packet).await.is_ok() {
                    meter.sent(stamp, copies);
                }
            }
        });
    }

    /// Stops the peer's tasks and closes the connection.
    pub async fn close(&self) {
        self.cancel.cancel();
        if let Err(err) = self.pc.close().await {
            tracing::debug!(%err, "closing a room peer");
        }
    }
}

/// Answers a remote offer; with `gathered`, returns the answer with every candidate in it.
///
/// # Errors
/// When the offer does not parse or the stack refuses it.
pub async fn answer_offer(
    pc: &RTCPeerConnection,
    sdp: String,
    gathered: bool,
) -> Result<String, LoadgenError> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    let answer = pc.create_answer(None).await?;
    apply_local(pc, answer, gathered).await
}

async fn apply_local(
    pc: &RTCPeerConnection,
    description: RTCSessionDescription,
    gathered: bool,
) -> Result<String, LoadgenError> {
    let sdp = description.sdp.clone();
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await?;
    if !gathered {
        return Ok(sdp);
    }
    let _ = done.recv().await;
    Ok(pc
        .local_description()
        .await
        .map_or(sdp, |description| description.sdp))
}
