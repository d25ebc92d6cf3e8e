//! Simulcast in a room (#15 item 9): a publisher sends three VP8 layers (rids q, h, f with
//! keyframes 180, 360 and 720 pixels high and distinct bitrates); each subscriber gets one
//! layer, the highest its path carries and its `max_height` allows. Subscriber alice is on a
//! clean path, bob behind a relay that drops 30 % of the server's RTP towards him: alice gets
//! the 720 p layer, bob a lower one (the lowest, once his reports have brought his estimate
//! down). Each sees one stream (one SSRC, consecutive sequence numbers, VP8 picture ids and
//! TL0PICIDX continuing) across layer switches; alice's `max_height: 360` moves her to the
//! 360 p layer, and lifting it brings her back. Subscribers ask for a keyframe as a browser's
//! decoder does when frames of a layer arrive whose keyframe was lost.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::client::{
    connect_to_server, send_room_json, ClientOptions, ClientPeer, ReceivedRtp, SimulcastLayer,
    VideoOptions,
};
use common::relay::{connect_via_relay, Impairment, RelayStats};
use common::signaling::{SignalingClient, SERVER};
use common::video::VP8;
use common::{http_get, metric_value, TestServer};
use parking_lot::Mutex;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::RTCDataChannel;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::TrackLocalWriter;

const ROOM: &str = "simulcast";
const PUBLISHER: &str = "carol";
/// Layer switches wait for loss reports (one a second) and hysteresis: generous waits, so a
/// slow machine fails only when something is wrong.
const LONG_WAIT: Duration = Duration::from_secs(45);
/// bob's downlink loss.
const LOSS: f64 = 0.3;

/// What each layer sends: its keyframe height, packet size (one packet per 20 ms frame, so
/// about 100, 240 and 460 kbps) and where its picture ids start.
const LAYERS: [(&str, u16, usize, u16); 3] = [
    ("q", 180, 250, 100),
    ("h", 360, 600, 9_000),
    ("f", 720, 1_150, 30_000),
];

/// One participant of the test: its signaling is driven by a task that answers server
/// offers (without their candidates when it is behind the relay).
struct Participant {
    id: String,
    video: Arc<Mutex<Vec<ReceivedRtp>>>,
    room_channel: Arc<Mutex<Option<Arc<RTCDataChannel>>>>,
    stop: CancellationToken,
}

impl Participant {
    /// `early`: server offers that came while connecting.
    async fn start(
        signaling: SignalingClient,
        peer: ClientPeer,
        id: &str,
        behind_relay: bool,
        early: Vec<pb::OfferNotification>,
    ) -> (Self, Vec<SimulcastLayer>) {
        let video = Arc::clone(&peer.received_video);
        let room_channel = Arc::clone(&peer.room_channel);
        let stop = CancellationToken::new();
        tokio::spawn(decoder_keyframe_requests(
            Arc::clone(&peer.pc),
            Arc::clone(&video),
            stop.clone(),
        ));
        let mut peer = peer;
        let layers = std::mem::take(&mut peer.simulcast);
        tokio::spawn(drive(signaling, peer, behind_relay, early, stop.clone()));
        let participant = Self {
            id: id.to_owned(),
            video,
            room_channel,
            stop,
        };
        (participant, layers)
    }

    fn received(&self) -> Vec<ReceivedRtp> {
        self.video.lock().clone()
    }

    /// The height of the latest keyframe received: the layer forwarded now.
    fn layer_height(&self) -> Option<u16> {
        self.video
            .lock()
            .iter()
            .rev()
            .find_map(|r| keyframe_height(&r.packet.payload))
    }

    async fn subscribe(&self, json: serde_json::Value) {
        wait_for(&format!("{}'s room channel", self.id), LONG_WAIT, || {
            self.room_channel.lock().is_some()
        })
        .await;
        let channel = self.room_channel.lock().clone().unwrap();
        send_room_json(&channel, &json).await;
    }
}

/// Answers the server's offers (renegotiations adding the forwarded line and the room
/// channel) until `stop`. Behind the relay, offers lose their candidates: the client must
/// keep reaching the server through the relay.
async fn drive(
    mut signaling: SignalingClient,
    peer: ClientPeer,
    behind_relay: bool,
    early: Vec<pb::OfferNotification>,
    stop: CancellationToken,
) {
    for offer in early {
        answer(&mut signaling, &peer, offer, behind_relay).await;
    }
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = signaling.next_within(Duration::from_millis(50)) => next,
        };
        let Some(next) = next else { continue };
        let Ok(Some(response)) = next else { break };
        match response.response {
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::Offer(offer)),
            })) => answer(&mut signaling, &peer, offer, behind_relay).await,
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::IceCandidate(candidate)),
            })) if !behind_relay => peer.add_remote_candidate(&candidate).await,
            Some(Resp::Error(err)) => eprintln!("signaling error: {err:?}"),
            _ => {}
        }
    }
    peer.close().await;
    signaling.leave().await;
}

async fn answer(
    signaling: &mut SignalingClient,
    peer: &ClientPeer,
    offer: pb::OfferNotification,
    behind_relay: bool,
) {
    assert_eq!(offer.from_peer_id, SERVER);
    let sdp = match behind_relay {
        true => without_candidates(&offer.sdp),
        false => offer.sdp,
    };
    let answer = peer.answer_offer(sdp).await;
    signaling.answer_server(answer, Some(offer.offer_id)).await;
}

/// What a browser's decoder does when it cannot decode: a PLI. Here, when the frames
/// arriving are of another layer than the last keyframe received (that layer's keyframe was
/// lost on the way), or no keyframe came yet, at most every 300 ms.
async fn decoder_keyframe_requests(
    pc: Arc<webrtc::peer_connection::RTCPeerConnection>,
    video: Arc<Mutex<Vec<ReceivedRtp>>>,
    stop: CancellationToken,
) {
    use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    let mut ticker = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        let undecodable = {
            let video = video.lock();
            let Some(last) = video.last() else { continue };
            let keyframe_rid = video
                .iter()
                .rev()
                .find(|r| keyframe_height(&r.packet.payload).is_some())
                .and_then(|r| frame_rid(&r.packet.payload));
            (keyframe_rid != frame_rid(&last.packet.payload)).then_some(last.packet.header.ssrc)
        };
        if let Some(ssrc) = undecodable {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            let _ = pc.write_rtcp(&[Box::new(pli)]).await;
        }
    }
}

fn without_candidates(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=candidate:") && *l != "a=end-of-candidates")
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn announce(server: &TestServer, id: &str) -> SignalingClient {
    let metadata = HashMap::from([("room".to_owned(), ROOM.to_owned())]);
    SignalingClient::announce_with(&server.grpc_url(), id, metadata)
        .await
        .0
}

/// The VP8 payload descriptor the publisher sends: X, S, partition 0; I with a 15-bit
/// picture id; L with TL0PICIDX. The frame starts after it.
const DESCRIPTOR: usize = 5;

/// A one-packet VP8 frame of layer `rid`: the descriptor, the frame tag (a keyframe's with
/// the start code and its size, RFC 6386 §9.1), the rid, then padding up to `size` bytes.
fn vp8_frame(rid: &str, height: u16, size: usize, picture_id: u16, tl0: u8, key: bool) -> Vec<u8> {
    let [high, low] = (picture_id & 0x7fff).to_be_bytes();
    let mut payload = vec![0x90, 0xc0, 0x80 | high, low, tl0];
    if key {
        let width = height * 16 / 9;
        payload.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a]);
        payload.extend_from_slice(&width.to_le_bytes());
        payload.extend_from_slice(&height.to_le_bytes());
    } else {
        payload.extend_from_slice(&[0x01, 0x00, 0x00]);
    }
    payload.extend_from_slice(rid.as_bytes());
    payload.resize(size, 0x55);
    payload
}

/// A received payload's keyframe height, if it starts a keyframe.
fn keyframe_height(payload: &[u8]) -> Option<u16> {
    let frame = payload.get(DESCRIPTOR..)?;
    if frame.first()? & 0x01 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff)
}

/// The rid a received frame says it is from.
fn frame_rid(payload: &[u8]) -> Option<char> {
    let frame = payload.get(DESCRIPTOR..)?;
    let body = if frame.first()? & 0x01 == 0 { 10 } else { 3 };
    frame.get(body).map(|b| char::from(*b))
}

fn picture_id(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[2] & 0x7f, payload[3]])
}

/// The publisher's camera: each layer sends a 20 ms frame, a keyframe first and after each
/// PLI for its SSRC.
fn spawn_layers(layers: Vec<SimulcastLayer>, stop: CancellationToken) {
    for layer in layers {
        let &(rid, height, size, first_picture) =
            LAYERS.iter().find(|(rid, ..)| *rid == layer.rid).unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            let mut answered = 0;
            for i in 0u16.. {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.cancelled() => break,
                }
                let asked = layer.keyframe_requests.load(Ordering::Relaxed);
                let key = i == 0 || asked > answered;
                answered = asked;
                let payload = vp8_frame(
                    rid,
                    height,
                    size,
                    first_picture.wrapping_add(i),
                    i as u8,
                    key,
                );
                let packet = Packet {
                    header: Header {
                        version: 2,
                        payload_type: VP8,
                        sequence_number: first_picture.wrapping_add(i),
                        timestamp: u32::from(i) * 1800,
                        marker: true,
                        ..Default::default()
                    },
                    payload: payload.into(),
                };
                if layer.track.write_rtp(&packet).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// One SSRC and consecutive sequence numbers, picture ids and TL0PICIDX: what a subscriber
/// of a clean path received is one stream.
fn assert_one_stream(who: &str, received: &[ReceivedRtp]) {
    for pair in received.windows(2) {
        let (a, b) = (&pair[0].packet, &pair[1].packet);
        assert_eq!(a.header.ssrc, b.header.ssrc, "{who}: one SSRC");
        assert_eq!(
            b.header.sequence_number,
            a.header.sequence_number.wrapping_add(1),
            "{who}: consecutive sequence numbers"
        );
        assert_eq!(
            picture_id(&b.payload),
            (picture_id(&a.payload) + 1) & 0x7fff,
            "{who}: consecutive picture ids ({:?} then {:?})",
            frame_rid(&a.payload),
            frame_rid(&b.payload)
        );
        assert_eq!(
            b.payload[4],
            a.payload[4].wrapping_add(1),
            "{who}: consecutive TL0PICIDX"
        );
    }
}

/// What left the server towards bob (the relay saw every packet, the ones it then dropped
/// too): one SSRC, consecutive sequence numbers.
fn assert_one_stream_sent(who: &str, relay: &RelayStats) {
    let sent = relay.to_client_rtp.lock();
    assert!(sent.len() > 50, "{who}: only {} packets sent", sent.len());
    for pair in sent.windows(2) {
        assert_eq!(pair[0].ssrc, pair[1].ssrc, "{who}: one SSRC");
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "{who}: consecutive sequence numbers as sent"
        );
    }
}

async fn layer_switches(server: &TestServer) -> f64 {
    let exposition = http_get(server.http, "/metrics").await;
    metric_value(&exposition, "remotemedia_room_layer_switches_total").unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_different_paths_get_different_layers_of_one_simulcast_track() {
    common::init_tracing();
    let started = std::time::Instant::now();
    let server = TestServer::start().await;
    let no_audio = ClientOptions {
        audio: false,
        data: false,
    };

    // carol publishes three layers.
    let mut signaling = announce(&server, PUBLISHER).await;
    let simulcast = VideoOptions {
        simulcast: true,
        ..VideoOptions::default()
    };
    let mut peer = ClientPeer::new_with_video_options(no_audio, simulcast).await;
    let early = connect_to_server(&mut signaling, &mut peer)
        .await
        .server_offers;
    let (carol, layers) = Participant::start(signaling, peer, PUBLISHER, false, early).await;
    assert_eq!(layers.len(), 3);
    let camera = CancellationToken::new();
    spawn_layers(layers, camera.clone());

    // alice on a clean path.
    let mut signaling = announce(&server, "alice").await;
    let mut peer = ClientPeer::new_with_video_options(no_audio, VideoOptions::default()).await;
    let early = connect_to_server(&mut signaling, &mut peer)
        .await
        .server_offers;
    let (alice, _) = Participant::start(signaling, peer, "alice", false, early).await;

    // bob behind a relay that loses 30 % of what the server sends him. His client does not
    // NACK, so his receiver reports show the path's loss (a browser's do too: its repairs
    // come on an RTX stream of their own).
    let mut signaling = announce(&server, "bob").await;
    let no_nack = VideoOptions {
        without_nack_generator: true,
        ..VideoOptions::default()
    };
    let mut peer = ClientPeer::new_with_video_options(no_audio, no_nack).await;
    let clean_uplink = Impairment {
        drop: 0.0,
        delay: 0.0,
        max_delay: Duration::ZERO,
        seed: 15,
    };
    let mut relay = connect_via_relay(&mut signaling, &mut peer, clean_uplink).await;
    relay.stats.lose_to_client(LOSS, 9);
    let early = std::mem::take(&mut relay.server_offers);
    let (bob, _) = Participant::start(signaling, peer, "bob", true, early).await;
    println!("three participants connected after {:?}", started.elapsed());

    wait_for("alice to get carol's 720p layer", LONG_WAIT, || {
        alice.layer_height() == Some(720)
    })
    .await;
    // Both start from the same estimate (1 Mbps), so bob may first get what alice gets; his
    // reports of 30 % loss then lower his estimate report by report down to the lowest layer,
    // where it stays (it never grows under that loss).
    wait_for(
        "bob, on the lossy path, to end on the 180p layer",
        LONG_WAIT,
        || bob.layer_height() == Some(180),
    )
    .await;
    // bob stays there: a few more reports, and alice keeps 720p meanwhile.
    let bob_count = bob.received().len();
    wait_for("bob's video to go on", LONG_WAIT, || {
        bob.received().len() > bob_count + 50
    })
    .await;
    let (alice_height, bob_height) = (alice.layer_height(), bob.layer_height());
    println!(
        "after {:?}: alice gets {alice_height:?}p, bob {bob_height:?}p; relay lost {} of {} to bob",
        started.elapsed(),
        relay.stats.lost_to_client.load(Ordering::Relaxed),
        relay.stats.to_client_rtp.lock().len()
    );
    assert_eq!(
        alice_height,
        Some(720),
        "alice's clean path carries the top layer"
    );
    assert_eq!(
        bob_height,
        Some(180),
        "bob's lossy path keeps the lowest layer"
    );
    {
        // After its latest keyframe, every frame bob got is of that keyframe's layer.
        let received = bob.received();
        let last_key = received
            .iter()
            .rposition(|r| keyframe_height(&r.packet.payload).is_some())
            .unwrap();
        let rid = frame_rid(&received[last_key].packet.payload);
        assert!(received[last_key..]
            .iter()
            .all(|r| frame_rid(&r.packet.payload) == rid));
    }
    assert_one_stream_sent("bob", &relay.stats);
    let bob_switches = layer_switches(&server).await;

    // alice asks for at most 360 lines: she moves to the 360p layer (at its keyframe).
    alice
        .subscribe(json!({"type": "subscribe", "peer": PUBLISHER, "kind": "video", "mode": "auto", "max_height": 360}))
        .await;
    wait_for(
        "alice to get the 360p layer under max_height 360",
        LONG_WAIT,
        || alice.layer_height() == Some(360),
    )
    .await;
    let capped = alice.received().len();
    wait_for("alice's capped video to go on", LONG_WAIT, || {
        alice.received().len() > capped + 25
    })
    .await;
    assert_eq!(alice.layer_height(), Some(360), "max_height holds");
    // Lifting the cap brings her back up (after the up-switch hold).
    alice
        .subscribe(json!({"type": "subscribe", "peer": PUBLISHER, "kind": "video", "mode": "auto", "max_height": 2160}))
        .await;
    wait_for(
        "alice to get 720p again once the cap is lifted",
        LONG_WAIT,
        || alice.layer_height() == Some(720),
    )
    .await;
    assert_one_stream("alice", &alice.received());
    let switches = layer_switches(&server).await;
    assert!(
        switches >= bob_switches + 2.0,
        "alice's two switches are counted: {bob_switches} then {switches}"
    );
    println!(
        "alice: {} packets, one stream across 2 switches; layer switches counted: {switches}; took {:?}",
        alice.received().len(),
        started.elapsed()
    );

    camera.cancel();
    for p in [&carol, &alice, &bob] {
        p.stop.cancel();
    }
    server.stop().await;
}
