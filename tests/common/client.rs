//! A real WebRTC client peer (webrtc crate) on loopback UDP, and the signaling exchange that
//! connects it to the server or to another client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use remotemedia_webrtc::peer::opus_capability;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use tokio::sync::{mpsc, watch};
use webrtc::api::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only, register_default_interceptors,
};
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::{SctpMaxMessageSize, SettingEngine};
use webrtc::api::APIBuilder;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_gatherer_state::RTCIceGathererState;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::nack::responder::Responder;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use super::repair::RepairRecorder;
use super::signaling::{SignalingClient, SERVER};
use super::WAIT;
use remotemedia_webrtc::room::AUDIO_LEVEL_URI;

/// Audio the client received: one entry per RTP packet, plus the decoded samples.
#[derive(Default)]
pub struct ReceivedAudio {
    pub arrivals: Vec<Instant>,
    pub timestamps: Vec<u32>,
    pub samples: Vec<f32>,
}

fn vp8_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: webrtc::api::media_engine::MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A video RTP packet as the client's stack received it.
#[derive(Debug, Clone)]
pub struct ReceivedRtp {
    pub at: Instant,
    pub packet: Packet,
    /// The msid stream id of the track it came on (in a room: the publisher's peer id).
    pub stream: String,
}

/// RTX for VP8 (RFC 4588), as browsers offer it.
fn rtx_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: "video/rtx".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "apt=96".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The client's video side (see [`ClientPeer::new_with_video_options`]).
#[derive(Clone, Copy, Default)]
pub struct VideoOptions {
    /// Offer `video/rtx` (payload type 97, apt=96) next to VP8.
    pub rtx: bool,
    /// Leave out the client's own NACK generator, so the only NACKs the server gets are the
    /// ones the test sends (the offer still announces generic NACK).
    pub without_nack_generator: bool,
    /// Offer H264 (payload type 102) before VP8, as Safari does.
    pub h264_first: bool,
    /// Send the camera as three VP8 simulcast layers (rids `q`, `h`, `f`, lowest first) on
    /// one sender, as a browser with `sendEncodings` does: see [`ClientPeer::simulcast`].
    pub simulcast: bool,
}

/// The simulcast layers a client sends, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];

/// One simulcast layer of the client's camera.
pub struct SimulcastLayer {
    pub rid: String,
    pub track: Arc<TrackLocalStaticRTP>,
    /// PLIs received for this layer's SSRC.
    pub keyframe_requests: Arc<std::sync::atomic::AtomicUsize>,
}

/// What to put in the offer.
#[derive(Clone, Copy)]
pub struct ClientOptions {
    pub audio: bool,
    pub data: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            audio: true,
            data: true,
        }
    }
}

pub struct ClientPeer {
    pub pc: Arc<RTCPeerConnection>,
    pub audio: Option<Arc<TrackLocalStaticRTP>>,
    /// A VP8 track (only from [`ClientPeer::new_with_video`]).
    pub video: Option<Arc<TrackLocalStaticRTP>>,
    /// The camera's simulcast layers, lowest first ([`VideoOptions::simulcast`]; then `video`
    /// is `None`).
    pub simulcast: Vec<SimulcastLayer>,
    /// The video RTP packets received, with their arrival times.
    pub received_video: Arc<Mutex<Vec<ReceivedRtp>>>,
    /// RTX packets received on repair streams (webrtc-rs reads those only for its
    /// interceptors; a recording interceptor keeps them here).
    pub received_repair: Arc<Mutex<Vec<ReceivedRtp>>>,
    /// PLI/FIR packets received about the client's own video.
    pub keyframe_requests: Arc<std::sync::atomic::AtomicUsize>,
    pub data: Option<Arc<RTCDataChannel>>,
    pub received: Arc<Mutex<ReceivedAudio>>,
    /// The decoded audio of each received track, by its msid stream id (in a room: the
    /// publisher's peer id).
    pub heard: Arc<Mutex<HashMap<String, Vec<f32>>>>,
    /// The same, by `<stream id> <track id>` (a publisher with two audio tracks).
    pub heard_tracks: Arc<Mutex<HashMap<String, Vec<f32>>>>,
    pub messages: mpsc::Receiver<Bytes>,
    /// Local candidates as gathered; `None` ends gathering.
    pub candidates: mpsc::Receiver<Option<RTCIceCandidateInit>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub gathering_done: watch::Receiver<bool>,
    /// Audio packets sent so far (the next RTP sequence number).
    packets_sent: std::sync::atomic::AtomicU64,
    /// Trickled remote candidates are dropped, as clients that only log them do (see
    /// [`ClientPeer::ignoring_trickled_candidates`]).
    ignore_trickled: bool,
    /// Remote candidates dropped so.
    pub trickled_ignored: std::sync::atomic::AtomicUsize,
    /// The server's `remotemedia-room` channel, once it opened it.
    pub room_channel: Arc<Mutex<Option<Arc<RTCDataChannel>>>>,
    /// The room channel's messages (the JSON of each `DataBuffer{json}`), in order.
    pub room_messages: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl ClientPeer {
    pub async fn new(options: ClientOptions) -> Self {
        Self::build(options, None, RTCConfiguration::default()).await
    }

    /// A client that also sends a VP8 video track.
    pub async fn new_with_video(options: ClientOptions) -> Self {
        Self::build(
            options,
            Some(VideoOptions::default()),
            RTCConfiguration::default(),
        )
        .await
    }

    /// A client that also sends a VP8 video track, its video side set up by `video`.
    pub async fn new_with_video_options(options: ClientOptions, video: VideoOptions) -> Self {
        Self::build(options, Some(video), RTCConfiguration::default()).await
    }

    /// A client whose ICE may only use relay candidates through these TURN servers.
    pub async fn new_relay_only(options: ClientOptions, ice_servers: Vec<RTCIceServer>) -> Self {
        let configuration = RTCConfiguration {
            ice_servers,
            ice_transport_policy: RTCIceTransportPolicy::Relay,
            ..Default::default()
        };
        Self::build(options, None, configuration).await
    }

    async fn build(
        options: ClientOptions,
        video_options: Option<VideoOptions>,
        configuration: RTCConfiguration,
    ) -> Self {
        let with_video = video_options.is_some();
        let video_options = video_options.unwrap_or_default();
        let mut media = MediaEngine::default();
        if with_video && video_options.h264_first {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        capability: RTCRtpCodecCapability {
                            mime_type: webrtc::api::media_engine::MIME_TYPE_H264.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line:
                                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                                    .to_owned(),
                            rtcp_feedback: vec![],
                        },
                        payload_type: 102,
                        ..Default::default()
                    },
                    RTPCodecType::Video,
                )
                .unwrap();
        }
        if with_video && video_options.simulcast {
            // Simulcast layers are told apart by mid and rid header extensions.
            for uri in [
                webrtc::sdp::extmap::SDES_MID_URI,
                webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
            ] {
                media
                    .register_header_extension(
                        webrtc::rtp_transceiver::rtp_codec::RTCRtpHeaderExtensionCapability {
                            uri: uri.to_owned(),
                        },
                        RTPCodecType::Video,
                        None,
                    )
                    .unwrap();
            }
        }
        if with_video {
            media
                .register_codec(
                    RTCRtpCodecParameters {
                        capability: vp8_capability(),
                        payload_type: 96,
                        ..Default::default()
                    },
                    RTPCodecType::Video,
                )
                .unwrap();
            if video_options.rtx {
                media
                    .register_codec(
                        RTCRtpCodecParameters {
                            capability: rtx_capability(),
                            payload_type: 97,
                            ..Default::default()
                        },
                        RTPCodecType::Video,
                    )
                    .unwrap();
            }
        }
        media
            .register_codec(
                RTCRtpCodecParameters {
                    capability: opus_capability(),
                    payload_type: 111,
                    ..Default::default()
                },
                RTPCodecType::Audio,
            )
            .unwrap();
        // RFC 6464 audio levels, as browsers send them (the room's active speakers).
        media
            .register_header_extension(
                webrtc::rtp_transceiver::rtp_codec::RTCRtpHeaderExtensionCapability {
                    uri: AUDIO_LEVEL_URI.to_owned(),
                },
                RTPCodecType::Audio,
                None,
            )
            .unwrap();
        let mut registry = if video_options.without_nack_generator {
            // register_default_interceptors without the NACK generator.
            for parameter in ["", "pli"] {
                media.register_feedback(
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: parameter.to_owned(),
                    },
                    RTPCodecType::Video,
                );
            }
            let mut registry = Registry::new();
            registry.add(Box::new(Responder::builder()));
            registry = configure_rtcp_reports(registry);
            configure_twcc_receiver_only(registry, &mut media).unwrap()
        } else {
            register_default_interceptors(Registry::new(), &mut media).unwrap()
        };
        let received_repair = Arc::new(Mutex::new(Vec::new()));
        registry.add(Box::new(RepairRecorder {
            packets: Arc::clone(&received_repair),
        }));
        let mut settings = SettingEngine::default();
        settings.set_include_loopback_candidate(true);
        settings.set_ip_filter(Box::new(|ip| ip.is_loopback() && ip.is_ipv4()));
        // Data-channel messages as large as the server's answer allows (webrtc-rs caps its
        // own sends at 64 KiB otherwise).
        settings.set_sctp_max_message_size_can_send(SctpMaxMessageSize::Unbounded);
        let api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .build();
        let pc = Arc::new(api.new_peer_connection(configuration).await.unwrap());

        let audio = if options.audio {
            let track = Arc::new(TrackLocalStaticRTP::new(
                opus_capability(),
                "mic".into(),
                "client".into(),
            ));
            let sender = pc
                .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1500];
                while sender.read(&mut buf).await.is_ok() {}
            });
            Some(track)
        } else {
            None
        };

        let keyframe_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut simulcast = Vec::new();
        if with_video && video_options.simulcast {
            let layers: Vec<SimulcastLayer> = SIMULCAST_RIDS
                .iter()
                .map(|rid| SimulcastLayer {
                    rid: (*rid).to_owned(),
                    track: Arc::new(TrackLocalStaticRTP::new_with_rid(
                        vp8_capability(),
                        "camera".into(),
                        (*rid).to_owned(),
                        "client".into(),
                    )),
                    keyframe_requests: Arc::default(),
                })
                .collect();
            let sender = pc
                .add_track(Arc::clone(&layers[0].track) as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
            for layer in &layers[1..] {
                sender
                    .add_encoding(Arc::clone(&layer.track) as Arc<dyn TrackLocal + Send + Sync>)
                    .await
                    .unwrap();
            }
            for layer in &layers {
                let (sender, rid) = (Arc::clone(&sender), layer.rid.clone());
                let requests = Arc::clone(&layer.keyframe_requests);
                tokio::spawn(async move {
                    use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
                    while let Ok((packets, _)) = sender.read_rtcp_simulcast(&rid).await {
                        let plis = packets
                            .iter()
                            .filter(|p| {
                                p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                            })
                            .count();
                        requests.fetch_add(plis, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            simulcast = layers;
        }
        let video = if with_video && !video_options.simulcast {
            let track = Arc::new(TrackLocalStaticRTP::new(
                vp8_capability(),
                "camera".into(),
                "client".into(),
            ));
            let sender = pc
                .add_track(Arc::clone(&track) as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
            let requests = Arc::clone(&keyframe_requests);
            tokio::spawn(async move {
                use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
                while let Ok((packets, _)) = sender.read_rtcp().await {
                    let plis = packets
                        .iter()
                        .filter(|p| p.as_any().downcast_ref::<PictureLossIndication>().is_some())
                        .count();
                    requests.fetch_add(plis, std::sync::atomic::Ordering::Relaxed);
                }
            });
            Some(track)
        } else {
            None
        };

        let (message_tx, messages) = mpsc::channel(64);
        let data = if options.data {
            let channel = pc.create_data_channel("data", None).await.unwrap();
            channel.on_message(Box::new(move |message: DataChannelMessage| {
                let tx = message_tx.clone();
                Box::pin(async move {
                    let _ = tx.send(message.data).await;
                })
            }));
            Some(channel)
        } else {
            None
        };

        let room_channel: Arc<Mutex<Option<Arc<RTCDataChannel>>>> = Arc::default();
        let room_messages: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let (channel_slot, message_log) = (Arc::clone(&room_channel), Arc::clone(&room_messages));
        pc.on_data_channel(Box::new(move |channel: Arc<RTCDataChannel>| {
            let (slot, log) = (Arc::clone(&channel_slot), Arc::clone(&message_log));
            Box::pin(async move {
                if channel.label() != ROOM_CHANNEL {
                    return;
                }
                channel.on_message(Box::new(move |message: DataChannelMessage| {
                    log.lock().push(room_message_json(&message.data));
                    Box::pin(async {})
                }));
                *slot.lock() = Some(channel);
            })
        }));

        let received = Arc::new(Mutex::new(ReceivedAudio::default()));
        let heard: Arc<Mutex<HashMap<String, Vec<f32>>>> = Arc::default();
        let heard_tracks: Arc<Mutex<HashMap<String, Vec<f32>>>> = Arc::default();
        let tracks_sink = Arc::clone(&heard_tracks);
        let received_video = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&received);
        let heard_sink = Arc::clone(&heard);
        let video_sink = Arc::clone(&received_video);
        pc.on_track(Box::new(move |track, _, _| {
            let sink = Arc::clone(&sink);
            let heard = Arc::clone(&heard_sink);
            let by_track = Arc::clone(&tracks_sink);
            let video_sink = Arc::clone(&video_sink);
            Box::pin(async move {
                if track.kind() == RTPCodecType::Video {
                    tokio::spawn(async move {
                        let stream = track.stream_id();
                        while let Ok((packet, _)) = track.read_rtp().await {
                            video_sink.lock().push(ReceivedRtp {
                                at: Instant::now(),
                                packet,
                                stream: stream.clone(),
                            });
                        }
                    });
                    return;
                }
                tokio::spawn(async move {
                    let stream = track.stream_id();
                    let stream_track = format!("{stream} {}", track.id());
                    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Mono).unwrap();
                    let mut pcm = vec![0f32; 5760];
                    while let Ok((packet, _)) = track.read_rtp().await {
                        let n = decoder
                            .decode_float(&packet.payload, &mut pcm, false)
                            .unwrap_or(0);
                        heard
                            .lock()
                            .entry(stream.clone())
                            .or_default()
                            .extend_from_slice(&pcm[..n]);
                        by_track
                            .lock()
                            .entry(stream_track.clone())
                            .or_default()
                            .extend_from_slice(&pcm[..n]);
                        let mut received = sink.lock();
                        received.arrivals.push(Instant::now());
                        received.timestamps.push(packet.header.timestamp);
                        received.samples.extend_from_slice(&pcm[..n]);
                    }
                });
            })
        }));

        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let _ = state_tx.send(s);
            Box::pin(async {})
        }));
        let (candidate_tx, candidates) = mpsc::channel(64);
        pc.on_ice_candidate(Box::new(move |c: Option<RTCIceCandidate>| {
            let tx = candidate_tx.clone();
            Box::pin(async move {
                let _ = tx.send(c.map(|c| c.to_json().unwrap())).await;
            })
        }));
        let (gathering_tx, gathering_done) = watch::channel(false);
        pc.on_ice_gathering_state_change(Box::new(move |s| {
            if s == RTCIceGathererState::Complete {
                let _ = gathering_tx.send(true);
            }
            Box::pin(async {})
        }));

        Self {
            pc,
            audio,
            video,
            simulcast,
            received_video,
            received_repair,
            keyframe_requests,
            data,
            received,
            heard,
            heard_tracks,
            messages,
            candidates,
            state,
            gathering_done,
            packets_sent: std::sync::atomic::AtomicU64::new(0),
            ignore_trickled: false,
            trickled_ignored: std::sync::atomic::AtomicUsize::new(0),
            room_channel,
            room_messages,
        }
    }

    /// This client never adds a remote candidate: it only knows what the answer carries
    /// (the original's browser path logs trickled candidates and drops them).
    pub fn ignoring_trickled_candidates(mut self) -> Self {
        self.ignore_trickled = true;
        self
    }

    /// Payloads of the video RTP packets received so far, in arrival order.
    pub fn video_payloads(&self) -> Vec<Bytes> {
        self.received_video
            .lock()
            .iter()
            .map(|r| r.packet.payload.clone())
            .collect()
    }

    /// Creates and applies an offer; returns its SDP (no candidates: they trickle).
    pub async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        let sdp = offer.sdp.clone();
        self.pc.set_local_description(offer).await.unwrap();
        sdp
    }

    pub async fn accept_answer(&self, sdp: String) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(sdp).unwrap())
            .await
            .unwrap();
    }

    pub async fn answer_offer(&self, sdp: String) -> String {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
            .await
            .unwrap();
        let answer = self.pc.create_answer(None).await.unwrap();
        let sdp = answer.sdp.clone();
        self.pc.set_local_description(answer).await.unwrap();
        sdp
    }

    pub async fn add_remote_candidate(&self, c: &pb::IceCandidateNotification) {
        if c.candidate.is_empty() {
            return;
        }
        if self.ignore_trickled {
            self.trickled_ignored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate.clone(),
                sdp_mid: (!c.sdp_mid.is_empty()).then(|| c.sdp_mid.clone()),
                sdp_mline_index: Some(c.sdp_mline_index as u16),
                username_fragment: None,
            })
            .await
            .unwrap();
    }

    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == RTCPeerConnectionState::Connected
    }

    pub async fn wait_connected(&mut self) {
        tokio::time::timeout(
            WAIT,
            self.state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .expect("timed out waiting for connected")
        .expect("state channel");
    }

    /// Sends `seconds` of a sine as Opus packets of `packet_ms` (20, 40 or 60), paced in
    /// real time.
    pub async fn send_tone(&self, freq: f32, seconds: f32, packet_ms: u32, amplitude: f32) {
        let packets = (seconds * 1000.0 / packet_ms as f32) as usize;
        let samples = remotemedia_webrtc::media::SineGenerator::new(freq, 48_000, amplitude)
            .generate(packets * (48 * packet_ms) as usize);
        self.send_samples(&samples, packet_ms).await;
    }

    /// Sends arbitrary 48 kHz mono `samples` as Opus packets of `packet_ms` (20, 40 or 60),
    /// paced in real time; a last partial packet is padded with silence.
    pub async fn send_samples(&self, samples: &[f32], packet_ms: u32) {
        self.send_samples_noting(samples, packet_ms, usize::MAX)
            .await;
    }

    /// [`ClientPeer::send_samples`], returning when packet number `noted` (from 0) was
    /// written (`None` when there are fewer packets).
    pub async fn send_samples_noting(
        &self,
        samples: &[f32],
        packet_ms: u32,
        noted: usize,
    ) -> Option<Instant> {
        let mut noted_at = None;
        let track = self.audio.as_ref().expect("client has an audio track");
        let packet_samples = (48 * packet_ms) as usize;
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(64_000)).unwrap();
        let mut out = vec![0u8; 4000];
        let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(packet_ms)));
        for (k, chunk) in samples.chunks(packet_samples).enumerate() {
            // Sequence numbers and timestamps continue across calls, as one stream.
            let i = self
                .packets_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut pcm = chunk.to_vec();
            pcm.resize(packet_samples, 0.0);
            let n = encoder.encode_float(&pcm, &mut out).unwrap();
            ticker.tick().await;
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: i as u16,
                    timestamp: (i * packet_samples as u64) as u32,
                    ssrc: 1,
                    marker: i == 0,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&out[..n]),
            };
            if k == noted {
                noted_at = Some(Instant::now());
            }
            track.write_rtp(&packet).await.unwrap();
        }
        noted_at
    }

    /// Sends a tone and checks it comes back (the server session is alive and carries media).
    pub async fn expect_tone_back(&self, frequency: f32) {
        let got = self.tone_round_trip(frequency).await;
        assert!(
            (got - frequency).abs() <= 5.0,
            "sent {frequency} Hz, got {got} Hz"
        );
    }

    /// Sends 0.6 s of a tone and returns the dominant frequency of what came back meanwhile
    /// (its steady part); panics when too little came back.
    pub async fn tone_round_trip(&self, frequency: f32) -> f32 {
        let before = self.received.lock().samples.len();
        self.send_tone(frequency, 0.6, 20, 0.5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let received = self.received.lock();
        let fresh = &received.samples[before..];
        assert!(
            fresh.len() >= 19_200,
            "only {} samples came back",
            fresh.len()
        );
        remotemedia_webrtc::media::dominant_frequency(&fresh[4_800..19_200], 48_000)
    }

    /// Closes the connection. webrtc-rs may fail its own teardown when the server ended the
    /// association first ("sending reset packet in non-Established state"): that is the
    /// client stack's error, not the server's, so it is logged, not a test failure.
    pub async fn close(&self) {
        if let Err(err) = self.pc.close().await {
            eprintln!("client peer close: {err}");
        }
    }
}

/// Figures of one connection to the server.
#[derive(Debug)]
pub struct ConnectReport {
    pub offer_to_answer: Duration,
    pub offer_to_connected: Duration,
    /// Server candidates that trickled in before the client was connected.
    pub server_candidates_before_connected: usize,
    /// The answer SDP said gathering was complete (the server waited for it).
    pub answer_claimed_end_of_candidates: bool,
    pub offer_id: String,
    /// Every non-empty candidate the server trickled before the client was connected.
    pub server_candidates: Vec<String>,
    /// The `a=candidate:` lines of the answer (without `a=`).
    pub answer_candidates: Vec<String>,
    /// The answer as the server sent it.
    pub answer_sdp: String,
    /// Server offers that came while connecting (a room's first renegotiation may come
    /// before the client sees itself connected), for the caller to answer.
    pub server_offers: Vec<pb::OfferNotification>,
}

/// Announces `id`, connects a client with audio and a data channel to a server session, and
/// waits for the data channel to open.
pub async fn connect_with_data_channel(
    grpc_url: &str,
    id: &str,
) -> (
    SignalingClient,
    ClientPeer,
    Arc<webrtc::data_channel::RTCDataChannel>,
) {
    let (mut signaling, _) = SignalingClient::announce(grpc_url, id).await;
    let mut peer = ClientPeer::new(ClientOptions {
        audio: true,
        data: true,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    let channel = peer.data.clone().unwrap();
    super::eventually("the data channel to open", || {
        let state = channel.ready_state();
        async move { state == webrtc::data_channel::data_channel_state::RTCDataChannelState::Open }
    })
    .await;
    (signaling, peer, channel)
}

/// Offers to `remotemedia-server`, trickles candidates both ways, waits for connected.
pub async fn connect_to_server(
    signaling: &mut SignalingClient,
    peer: &mut ClientPeer,
) -> ConnectReport {
    connect_to_server_rewriting(signaling, peer, |answer| answer).await
}

/// [`connect_to_server`], applying `rewrite(answer)` instead of the server's answer (a
/// client that ignores what the server says).
pub async fn connect_to_server_rewriting(
    signaling: &mut SignalingClient,
    peer: &mut ClientPeer,
    rewrite: impl Fn(String) -> String,
) -> ConnectReport {
    let sdp = peer.offer().await;
    let mut answer_sdp = String::new();
    let started = Instant::now();
    let offer_request = signaling.offer(SERVER, sdp).await;
    let mut offer_to_answer = None;
    let mut offer_id = None;
    let mut server_candidates = 0;
    let mut server_candidate_lines = Vec::new();
    let mut answer_claimed_end = false;
    let mut server_offers = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if peer.is_connected() && offer_id.is_some() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("connecting to the server timed out"),
            _ = peer.state.changed() => {}
            Some(candidate) = peer.candidates.recv() => {
                signaling.candidate(SERVER, candidate).await;
            }
            response = signaling.next() => {
                let response = response.expect("signaling stream").expect("signaling open");
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Answer(answer)) })) => {
                        assert_eq!(answer.from_peer_id, SERVER);
                        assert_eq!(answer.r#type, "answer");
                        assert!(offer_to_answer.is_none(), "one answer per offer");
                        offer_to_answer = Some(started.elapsed());
                        answer_claimed_end = answer.sdp.contains("a=end-of-candidates");
                        answer_sdp = answer.sdp.clone();
                        peer.accept_answer(rewrite(answer.sdp)).await;
                    }
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) => {
                        assert_eq!(c.from_peer_id, SERVER);
                        assert!(offer_to_answer.is_some(), "server candidate before the answer");
                        if !c.candidate.is_empty() && !peer.is_connected() {
                            server_candidates += 1;
                            server_candidate_lines.push(c.candidate.clone());
                        }
                        peer.add_remote_candidate(&c).await;
                    }
                    Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::Offer(offer)) })) => {
                        server_offers.push(offer);
                    }
                    Some(Resp::Ack(ack)) if response.request_id == offer_request => {
                        assert!(offer_to_answer.is_some(), "the answer comes before the ack");
                        let data: serde_json::Value = serde_json::from_str(&ack.data).unwrap();
                        assert_eq!(data["answer_sent"], true);
                        assert_eq!(data["to_peer_id"], SERVER);
                        offer_id = Some(data["offer_id"].as_str().unwrap().to_owned());
                    }
                    Some(Resp::Error(err)) => panic!("signaling error: {err:?}"),
                    _ => {}
                }
            }
        }
    }
    ConnectReport {
        offer_to_answer: offer_to_answer.expect("answer"),
        offer_to_connected: started.elapsed(),
        server_candidates_before_connected: server_candidates,
        answer_claimed_end_of_candidates: answer_claimed_end,
        offer_id: offer_id.expect("offer id"),
        server_candidates: server_candidate_lines,
        answer_candidates: answer_candidates(&answer_sdp),
        answer_sdp,
        server_offers,
    }
}

/// The `a=candidate:` lines of an SDP, without `a=`.
pub fn answer_candidates(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|line| line.trim_end().strip_prefix("a="))
        .filter(|line| line.starts_with("candidate:"))
        .map(str::to_owned)
        .collect()
}

/// Sends everything still queued in the client's candidate channel to `to` (for tests that
/// keep trickling after connecting).
pub async fn flush_candidates(signaling: &mut SignalingClient, peer: &mut ClientPeer, to: &str) {
    while let Ok(candidate) = peer.candidates.try_recv() {
        signaling.candidate(to, candidate).await;
    }
}

/// One side of a direct call: its signaling stream, its peer, its id.
pub type Side<'a> = (&'a mut SignalingClient, &'a mut ClientPeer, &'a str);

/// `a` calls `b` directly: offer, answer and candidates through signaling, until both are
/// connected.
pub async fn call_directly(a: Side<'_>, b: Side<'_>) {
    let ((a_sig, a_peer, a_id), (b_sig, b_peer, b_id)) = (a, b);
    let offer = a_sig.offer(b_id, a_peer.offer().await).await;
    a_sig.expect_ack(&offer).await;
    let forwarded = b_sig
        .expect_notification(|n| match n {
            Notification::Offer(o) if o.from_peer_id == a_id => Some(o.clone()),
            _ => None,
        })
        .await;
    let answer_sdp = b_peer.answer_offer(forwarded.sdp).await;
    let answer = b_sig
        .send(pb::signaling_request::Request::Answer(pb::AnswerRequest {
            to_peer_id: a_id.into(),
            sdp: answer_sdp,
            r#type: "answer".into(),
            offer_id: None,
        }))
        .await;
    b_sig.expect_ack(&answer).await;
    let answered = a_sig
        .expect_notification(|n| match n {
            Notification::Answer(answer) if answer.from_peer_id == b_id => Some(answer.clone()),
            _ => None,
        })
        .await;
    a_peer.accept_answer(answered.sdp).await;
    trickle_until_connected((a_sig, a_peer, a_id), (b_sig, b_peer, b_id)).await;
}

/// Trickles ICE candidates both ways between two clients that exchanged offer and answer,
/// until both are connected.
pub async fn trickle_until_connected(a: Side<'_>, b: Side<'_>) {
    let ((a_sig, a_peer, a_id), (b_sig, b_peer, b_id)) = (a, b);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(a_peer.is_connected() && b_peer.is_connected()) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("{a_id} and {b_id} did not connect"),
            Some(c) = a_peer.candidates.recv() => { a_sig.candidate(b_id, c).await; }
            Some(c) = b_peer.candidates.recv() => { b_sig.candidate(a_id, c).await; }
            r = a_sig.next() => if let Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) = r.unwrap().unwrap().response {
                assert_eq!(c.from_peer_id, b_id);
                a_peer.add_remote_candidate(&c).await;
            },
            r = b_sig.next() => if let Some(Resp::Notification(pb::SignalingNotification { notification: Some(Notification::IceCandidate(c)) })) = r.unwrap().unwrap().response {
                assert_eq!(c.from_peer_id, a_id);
                b_peer.add_remote_candidate(&c).await;
            },
            _ = a_peer.state.changed() => {}
            _ = b_peer.state.changed() => {}
        }
    }
}

/// Sends `json` on a room channel as `DataBuffer{json{schema_type:"room"}}`.
pub async fn send_room_json(channel: &RTCDataChannel, json: &serde_json::Value) {
    use prost::Message;
    use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer, JsonData};
    let buffer = DataBuffer {
        data_type: Some(DataType::Json(JsonData {
            json_payload: json.to_string(),
            schema_type: "room".into(),
        })),
        metadata: HashMap::default(),
    };
    channel
        .send(&Bytes::from(buffer.encode_to_vec()))
        .await
        .unwrap();
}

/// The room channel's label.
pub const ROOM_CHANNEL: &str = "remotemedia-room";

/// A room channel message's JSON (`DataBuffer{json}`; text as a JSON string otherwise).
fn room_message_json(data: &[u8]) -> serde_json::Value {
    use prost::Message;
    use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer};
    match DataBuffer::decode(data).ok().and_then(|b| b.data_type) {
        Some(DataType::Json(json)) => serde_json::from_str(&json.json_payload).unwrap(),
        _ => serde_json::Value::String(String::from_utf8_lossy(data).into_owned()),
    }
}

/// Sends a tone of `frequency` on `track` as 20 ms Opus packets, paced in real time, until
/// `stop` fires (a room participant's microphone).
pub fn spawn_tone(
    track: Arc<TrackLocalStaticRTP>,
    frequency: f32,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_tone_at(track, frequency, 0.5, stop)
}

/// [`spawn_tone`] at `amplitude` (peak, of full scale), each packet carrying its RFC 6464
/// audio level as a browser's does (a 0.5 sine is −9 dBov; 0.001 is −63, silence to a room).
pub fn spawn_tone_at(
    track: Arc<TrackLocalStaticRTP>,
    frequency: f32,
    amplitude: f32,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut sine = remotemedia_webrtc::media::SineGenerator::new(frequency, 48_000, amplitude);
    spawn_microphone(track, move || sine.generate(960), stop)
}

/// Sends `samples` (48 kHz mono) over and over as [`spawn_tone`] sends a tone: a recorded
/// voice on a microphone.
pub fn spawn_recording(
    track: Arc<TrackLocalStaticRTP>,
    samples: Arc<Vec<f32>>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut at = 0;
    spawn_microphone(
        track,
        move || {
            let frame: Vec<f32> = (0..960)
                .map(|k| {
                    samples
                        .get((at + k) % samples.len().max(1))
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect();
            at = (at + 960) % samples.len().max(1);
            frame
        },
        stop,
    )
}

/// 20 ms Opus packets of `next_frame()` (960 samples), paced in real time, each with its
/// RFC 6464 audio level, until `stop` fires.
fn spawn_microphone(
    track: Arc<TrackLocalStaticRTP>,
    mut next_frame: impl FnMut() -> Vec<f32> + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
    use webrtc::rtp::extension::HeaderExtension;
    tokio::spawn(async move {
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let mut out = vec![0u8; 4000];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let ssrc = rand::random::<u32>();
        for i in 0u64.. {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            let pcm = next_frame();
            let n = encoder.encode_float(&pcm, &mut out).unwrap();
            let rms = (pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len() as f32).sqrt();
            let level = AudioLevelExtension {
                level: (-20.0 * rms.max(1e-7).log10()).clamp(0.0, 127.0) as u8,
                voice: rms > 0.01,
            };
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: i as u16,
                    timestamp: (i * 960) as u32,
                    ssrc,
                    marker: i == 0,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&out[..n]),
            };
            let extensions = [HeaderExtension::AudioLevel(level)];
            if track
                .write_rtp_with_extensions(&packet, &extensions)
                .await
                .is_err()
            {
                break;
            }
        }
    })
}
