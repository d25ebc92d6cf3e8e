//! Simulcast and RTCP across the relay (#16): a simulcast publisher on one worker, a
//! subscriber on another. Real processes: a private Redis, a frontend with
//! `--room-span-workers`, two media workers with `--capacity 1` (so the second participant
//! spills to the second worker), a relay socket each and `--insecure-relay`. The publisher
//! is a webrtc-crate client sending three VP8 layers (rids q, h, f; keyframes 180, 360 and
//! 720 pixels high).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{
    connect_to_server, ClientOptions, ClientPeer, ReceivedRtp, SimulcastLayer, VideoOptions,
};
use common::cluster::{free_udp_port, one_at_a_time, Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::video::VP8;
use common::WAIT;
use parking_lot::Mutex;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};
use tokio_util::sync::CancellationToken;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::TrackLocalWriter;

const ROOM: &str = "relayed-simulcast";
/// Layer switches wait for reception reports (one a second) and hysteresis.
const LONG_WAIT: Duration = Duration::from_secs(45);
/// What each layer sends: rid, keyframe height, packet size (one packet per 20 ms frame:
/// about 100, 240 and 460 kbps) and its first picture id.
const LAYERS: [(&str, u16, usize, u16); 3] = [
    ("q", 180, 250, 100),
    ("h", 360, 600, 9_000),
    ("f", 720, 1_150, 30_000),
];
/// The VP8 payload descriptor the publisher sends (X, S, partition 0; I with a 15-bit
/// picture id; L with TL0PICIDX); the frame starts after it.
const DESCRIPTOR: usize = 5;

/// A one-packet VP8 frame of layer `rid` (a keyframe with its size when `key`), padded to
/// `size` bytes.
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

/// The publisher's camera: each layer sends a 20 ms frame; a keyframe first, then every
/// `keyframe_every` and after each PLI for its SSRC.
fn spawn_camera(layers: Vec<SimulcastLayer>, keyframe_every: Duration, stop: CancellationToken) {
    let frames_per_keyframe = (keyframe_every.as_millis() / 20).max(1) as u64;
    for layer in layers {
        let &(rid, height, size, first_picture) =
            LAYERS.iter().find(|(rid, ..)| *rid == layer.rid).unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(20));
            let mut answered = 0;
            for i in 0u64.. {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = stop.cancelled() => break,
                }
                let asked = layer.keyframe_requests.load(Ordering::Relaxed);
                let key = i % frames_per_keyframe == 0 || asked > answered;
                answered = asked;
                let n = first_picture.wrapping_add(i as u16);
                let payload = vp8_frame(rid, height, size, n, i as u8, key);
                let packet = Packet {
                    header: Header {
                        version: 2,
                        payload_type: VP8,
                        sequence_number: n,
                        timestamp: (i as u32).wrapping_mul(1800),
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

/// A participant whose signaling a task drives (server offers answered, candidates added)
/// until `stop`.
struct Participant {
    video: Arc<Mutex<Vec<ReceivedRtp>>>,
    stop: CancellationToken,
}

impl Participant {
    /// Joins the room through `frontend`; `simulcast`: sends the three layers (returned).
    async fn join(frontend: &Node, id: &str, simulcast: bool) -> (Self, Vec<SimulcastLayer>) {
        let metadata = HashMap::from([("room".to_owned(), ROOM.to_owned())]);
        let (mut signaling, _) =
            SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
        let options = ClientOptions {
            audio: false,
            data: false,
        };
        let video = VideoOptions {
            simulcast,
            ..VideoOptions::default()
        };
        let mut peer = ClientPeer::new_with_video_options(options, video).await;
        let early = connect_to_server(&mut signaling, &mut peer)
            .await
            .server_offers;
        let layers = std::mem::take(&mut peer.simulcast);
        let video = Arc::clone(&peer.received_video);
        let stop = CancellationToken::new();
        tokio::spawn(drive(signaling, peer, early, stop.clone()));
        (Self { video, stop }, layers)
    }

    /// The height of the latest keyframe received: the layer forwarded now.
    fn layer_height(&self) -> Option<u16> {
        self.video
            .lock()
            .iter()
            .rev()
            .find_map(|r| keyframe_height(&r.packet.payload))
    }

    /// When the first keyframe came.
    fn first_keyframe_at(&self) -> Option<Instant> {
        self.video
            .lock()
            .iter()
            .find(|r| keyframe_height(&r.packet.payload).is_some())
            .map(|r| r.at)
    }
}

async fn drive(
    mut signaling: SignalingClient,
    peer: ClientPeer,
    early: Vec<pb::OfferNotification>,
    stop: CancellationToken,
) {
    for offer in early {
        answer(&mut signaling, &peer, offer).await;
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
            })) => answer(&mut signaling, &peer, offer).await,
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::IceCandidate(candidate)),
            })) => peer.add_remote_candidate(&candidate).await,
            _ => {}
        }
    }
    peer.close().await;
    signaling.leave().await;
}

async fn answer(signaling: &mut SignalingClient, peer: &ClientPeer, offer: pb::OfferNotification) {
    assert_eq!(offer.from_peer_id, SERVER);
    let sdp = peer.answer_offer(offer.sdp).await;
    signaling.answer_server(sdp, Some(offer.offer_id)).await;
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis, a spanning frontend and two one-participant workers with relay sockets.
struct Cluster {
    _redis: RedisProcess,
    workers: Vec<Node>,
    frontend: Node,
}

impl Cluster {
    async fn start() -> Self {
        let redis = RedisProcess::start();
        let url = redis.url();
        let mut workers = Vec::new();
        for name in ["worker-a", "worker-b"] {
            let relay = free_udp_port().to_string();
            let args = [
                "--capacity",
                "1",
                "--relay-port",
                relay.as_str(),
                "--insecure-relay",
            ];
            workers.push(Node::worker(name, &url, &args).await);
        }
        let frontend = Node::start("frontend", "frontend", &url, &["--room-span-workers"]).await;
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 2.0)
            .await;
        Self {
            _redis: redis,
            workers,
            frontend,
        }
    }

    /// The worker holding a participant, once one does, and the other one.
    async fn holder(&self) -> (&Node, &Node) {
        let deadline = Instant::now() + WAIT;
        loop {
            for (i, worker) in self.workers.iter().enumerate() {
                if worker.sessions_active().await == 1.0 {
                    return (worker, &self.workers[1 - i]);
                }
            }
            assert!(Instant::now() < deadline, "no worker holds the publisher");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Joins the publisher (on worker A) and waits until the frontend knows A is full.
    async fn publisher(
        &self,
        keyframe_every: Duration,
        camera: &CancellationToken,
    ) -> (Participant, &Node, &Node) {
        let (carol, layers) = Participant::join(&self.frontend, "carol", true).await;
        assert_eq!(layers.len(), 3);
        spawn_camera(layers, keyframe_every, camera.clone());
        let (a, b) = self.holder().await;
        self.frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
            .await;
        (carol, a, b)
    }
}

/// A worker's relayed packets of layers 0, 1 and 2 (q, h, f).
async fn layer_counts(node: &Node) -> Vec<f64> {
    let mut counts = Vec::new();
    for layer in 0..3 {
        let sample = format!("remotemedia_relay_layer_packets_total{{layer=\"{layer}\"}}");
        counts.push(node.metric(&sample).await);
    }
    counts
}

/// #16's "A relays the layers that B's subscribers need, not all of them": carol publishes
/// three layers on worker A, alice subscribes on worker B. B chooses alice's layer as a
/// local subscriber's would be chosen (a clean path: up to the 720p layer) and asks A for
/// that layer only: A's per-layer relay counter shows the 180p layer never crossed, and once
/// alice is on 720p only that layer keeps crossing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_another_worker_gets_its_layer_and_only_wanted_layers_are_relayed() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let cluster = Cluster::start().await;
    let camera = CancellationToken::new();
    let (carol, a, b) = cluster.publisher(Duration::from_secs(1), &camera).await;

    let (alice, _) = Participant::join(&cluster.frontend, "alice", false).await;
    assert_eq!(
        b.sessions_active().await,
        1.0,
        "alice is on the other worker"
    );
    wait_for("alice to get carol's video at all", LONG_WAIT, || {
        alice.layer_height().is_some()
    })
    .await;
    let first = alice.layer_height();
    wait_for(
        "alice, on a clean path, to get carol's 720p layer over the relay",
        LONG_WAIT,
        || alice.layer_height() == Some(720),
    )
    .await;
    // Her switch to 720p is done once its keyframe came: from then on only f is asked for.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = layer_counts(a).await;
    let received = alice.video.lock().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = layer_counts(a).await;
    println!(
        "alice on worker B: first layer {first:?}p, 720p after {:?}; A's relayed packets by \
         layer q/h/f: {before:?} then {after:?} two seconds later",
        started.elapsed()
    );
    assert!(
        alice.video.lock().len() > received + 50,
        "alice's video goes on"
    );
    assert_eq!(
        after[0], 0.0,
        "nobody on B needs the 180p layer: it never crossed"
    );
    assert_eq!(
        after[1], before[1],
        "h no longer crosses once alice is on f"
    );
    assert!(
        after[2] >= before[2] + 50.0,
        "f crosses: {before:?} {after:?}"
    );
    assert_eq!(
        a.metric("remotemedia_relay_packets_dropped_total{reason=\"send_queue_full\"}")
            .await,
        0.0
    );
    assert_eq!(
        b.metric("remotemedia_relay_packets_dropped_total{reason=\"auth\"}")
            .await,
        0.0
    );
    camera.cancel();
    for p in [&carol, &alice] {
        p.stop.cancel();
    }
}

/// #16's "RTCP goes back": carol's camera sends a keyframe only every minute (and when
/// asked); alice joins later on the other worker. Worker B asks A for a keyframe of the layer
/// it chose for her as soon as her line is negotiated, A passes it to carol, and alice's
/// video starts at once instead of at carol's next scheduled keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_on_another_worker_gets_a_keyframe_at_once() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let cluster = Cluster::start().await;
    let camera = CancellationToken::new();
    let keyframe_every = Duration::from_secs(60);
    let camera_started = Instant::now();
    let (carol, a, _b) = cluster.publisher(keyframe_every, &camera).await;
    // Well past carol's first keyframe: nothing on the link can start alice's video but a
    // keyframe asked for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forwarded_before = a.metric(KEYFRAMES_FORWARDED).await;

    let joined = Instant::now();
    let (alice, _) = Participant::join(&cluster.frontend, "alice", false).await;
    let connected = joined.elapsed();
    wait_for("alice's first keyframe", LONG_WAIT, || {
        alice.first_keyframe_at().is_some()
    })
    .await;
    let first = alice.first_keyframe_at().unwrap();
    let after_join = first.duration_since(joined);
    let scheduled = camera_started + keyframe_every;
    println!(
        "alice on worker B: connected {connected:?} after joining, first keyframe \
         ({:?}p) {after_join:?} after joining; carol's next scheduled keyframe was {:?} away",
        alice.layer_height(),
        scheduled.saturating_duration_since(joined)
    );
    assert!(
        first < scheduled,
        "the keyframe was asked for, not the scheduled one"
    );
    assert!(
        a.metric(KEYFRAMES_FORWARDED).await > forwarded_before,
        "A passed a keyframe request from B to carol"
    );
    camera.cancel();
    for p in [&carol, &alice] {
        p.stop.cancel();
    }
}

/// Keyframe requests from other workers that a publishing worker passed to a publisher.
const KEYFRAMES_FORWARDED: &str = "remotemedia_relay_keyframe_requests_total{result=\"forwarded\"}";
