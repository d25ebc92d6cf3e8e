//! Rooms (#15): webrtc-crate clients that announce with `room=...` hear each other through
//! the server, RTP forwarded without transcoding, on tracks whose msid stream id is the
//! publisher's peer id; tracks are added and removed by server offers the clients answer.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{
    connect_to_server, send_room_json, spawn_recording, spawn_tone_at, ClientOptions, ClientPeer,
    ReceivedRtp, VideoOptions,
};
use common::room_speaker::recorded_speech;
use common::signaling::{SignalingClient, SERVER};
use common::video::{vp8_payload, VP8};
use common::{eventually, TestServer};
use parking_lot::Mutex;
use remotemedia_webrtc::media::{band_energy_ratio, dominant_frequency};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::RTCDataChannel;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;

/// gRPC FAILED_PRECONDITION.
const FAILED_PRECONDITION: u32 = 9;
/// Audio each check needs from a track: 1 s.
const ENOUGH: usize = 48_000;

/// What a participant's signaling task saw.
#[derive(Default)]
struct Log {
    /// Server offers, in order.
    offers: Vec<String>,
    /// Error responses by request id.
    errors: HashMap<String, pb::ErrorResponse>,
    /// The request ids of the answers sent with a wrong offer id.
    stale_answers: Vec<String>,
    /// The request ids of the offers sent while a server offer was pending.
    glare_offers: Vec<String>,
}

enum Ask {
    /// Answer the server although it offered nothing (the current local description).
    AnswerUnasked(oneshot::Sender<String>),
    Leave(oneshot::Sender<()>),
}

struct Participant {
    id: String,
    frequency: f32,
    heard: Arc<Mutex<HashMap<String, Vec<f32>>>>,
    /// The client's VP8 track (a participant that joined with video).
    camera: Option<Arc<TrackLocalStaticRTP>>,
    /// Video RTP received.
    seen: Arc<Mutex<Vec<ReceivedRtp>>>,
    /// PLIs received about the camera track.
    keyframe_requests: Arc<AtomicUsize>,
    log: Arc<Mutex<Log>>,
    /// Answer the next server offer with a wrong offer id first.
    stale_first: Arc<AtomicBool>,
    /// Offer to the server when the next server offer arrives, before answering it.
    glare_first: Arc<AtomicBool>,
    asks: mpsc::Sender<Ask>,
    tone: CancellationToken,
    mic: Arc<TrackLocalStaticRTP>,
    room_channel: Arc<Mutex<Option<Arc<RTCDataChannel>>>>,
    /// The room channel's messages so far.
    room_messages: Arc<Mutex<Vec<Value>>>,
}

impl Participant {
    async fn join(server: &TestServer, id: &str, frequency: f32) -> Self {
        Self::join_with(server, id, frequency, false).await
    }

    /// Joins with a VP8 camera track as well when `video` (it sends only when asked).
    async fn join_with(server: &TestServer, id: &str, frequency: f32, video: bool) -> Self {
        Self::join_speaking(server, id, frequency, 0.5, video).await
    }

    /// [`Participant::join_with`], the tone at `amplitude` (0.001 is silence to the room).
    async fn join_speaking(
        server: &TestServer,
        id: &str,
        frequency: f32,
        amplitude: f32,
        video: bool,
    ) -> Self {
        Self::join_announcing(server, id, frequency, amplitude, video, &[]).await
    }

    /// [`Participant::join_speaking`] with more announce metadata than the room's name.
    async fn join_announcing(
        server: &TestServer,
        id: &str,
        frequency: f32,
        amplitude: f32,
        video: bool,
        more: &[(&str, &str)],
    ) -> Self {
        let mut metadata = HashMap::from([("room".to_owned(), "standup".to_owned())]);
        metadata.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (mut signaling, _) =
            SignalingClient::announce_with(&server.grpc_url(), id, metadata).await;
        let mut peer = match video {
            true => ClientPeer::new_with_video(ClientOptions::default()).await,
            false => ClientPeer::new(ClientOptions::default()).await,
        };
        connect_to_server(&mut signaling, &mut peer).await;
        let tone = CancellationToken::new();
        let mic = peer.audio.clone().unwrap();
        spawn_tone_at(Arc::clone(&mic), frequency, amplitude, tone.clone());
        let room_channel = Arc::clone(&peer.room_channel);
        let room_messages = Arc::clone(&peer.room_messages);
        let heard = Arc::clone(&peer.heard);
        let camera = peer.video.clone();
        let seen = Arc::clone(&peer.received_video);
        let keyframe_requests = Arc::clone(&peer.keyframe_requests);
        let log = Arc::new(Mutex::new(Log::default()));
        let stale_first = Arc::new(AtomicBool::new(false));
        let glare_first = Arc::new(AtomicBool::new(false));
        let (asks, asked) = mpsc::channel(4);
        tokio::spawn(drive(
            signaling,
            peer,
            Arc::clone(&log),
            [Arc::clone(&stale_first), Arc::clone(&glare_first)],
            asked,
        ));
        Self {
            id: id.to_owned(),
            frequency,
            heard,
            camera,
            seen,
            keyframe_requests,
            log,
            stale_first,
            glare_first,
            asks,
            tone,
            mic,
            room_channel,
            room_messages,
        }
    }

    /// Sends `json` on the room channel (once the server opened it).
    async fn tell_room(&self, json: Value) {
        eventually(&format!("{}'s room channel", self.id), || async {
            self.room_channel.lock().is_some()
        })
        .await;
        let channel = self.room_channel.lock().clone().unwrap();
        send_room_json(&channel, &json).await;
    }

    /// Waits for a room channel message equal to `wanted` after the first `skip` ones.
    async fn expect_room_message(&self, skip: usize, wanted: Value) {
        eventually(&format!("{} told {wanted}", self.id), || async {
            self.room_messages
                .lock()
                .iter()
                .skip(skip)
                .any(|m| *m == wanted)
        })
        .await;
    }

    fn room_message_count(&self) -> usize {
        self.room_messages.lock().len()
    }

    /// The video packets received from `publisher` so far.
    fn video_from(&self, publisher: &str) -> Vec<ReceivedRtp> {
        self.seen
            .lock()
            .iter()
            .filter(|r| r.stream == publisher)
            .cloned()
            .collect()
    }

    /// The stream ids this participant receives audio on.
    fn streams(&self) -> BTreeSet<String> {
        self.heard.lock().keys().cloned().collect()
    }

    /// Whether `samples` of `from`'s audio have been heard so far.
    fn heard_from(&self, from: &str, samples: usize) -> bool {
        self.heard
            .lock()
            .get(from)
            .is_some_and(|s| s.len() >= samples)
    }

    fn heard_len(&self, from: &str) -> usize {
        self.heard.lock().get(from).map_or(0, Vec::len)
    }

    /// The dominant frequency of the last second heard from `from`.
    fn frequency_of(&self, from: &str) -> f32 {
        let heard = self.heard.lock();
        let samples = heard.get(from).unwrap();
        dominant_frequency(&samples[samples.len() - ENOUGH..], 48_000)
    }

    async fn leave(self) {
        self.tone.cancel();
        let (done, left) = oneshot::channel();
        self.asks.send(Ask::Leave(done)).await.unwrap();
        left.await.unwrap();
    }
}

/// A participant's signaling: answers server offers, applies server candidates, records
/// errors.
async fn drive(
    mut signaling: SignalingClient,
    peer: ClientPeer,
    log: Arc<Mutex<Log>>,
    [stale_first, glare_first]: [Arc<AtomicBool>; 2],
    mut asks: mpsc::Receiver<Ask>,
) {
    loop {
        if let Ok(ask) = asks.try_recv() {
            match ask {
                Ask::Leave(done) => {
                    peer.close().await;
                    signaling.leave().await;
                    let _ = done.send(());
                    return;
                }
                Ask::AnswerUnasked(reply) => {
                    let sdp = peer.pc.local_description().await.unwrap().sdp;
                    let request = signaling.answer_server(sdp, None).await;
                    let _ = reply.send(request);
                }
            }
        }
        let Some(next) = signaling.next_within(Duration::from_millis(20)).await else {
            continue;
        };
        let response = next.expect("signaling stream").expect("signaling open");
        match response.response {
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::Offer(offer)),
            })) => {
                assert_eq!(offer.from_peer_id, SERVER);
                log.lock().offers.push(offer.sdp.clone());
                if glare_first.swap(false, Ordering::Relaxed) {
                    let sdp = peer.pc.local_description().await.unwrap().sdp;
                    let request = signaling.offer(SERVER, sdp).await;
                    log.lock().glare_offers.push(request);
                }
                if stale_first.swap(false, Ordering::Relaxed) {
                    let sdp = peer.pc.local_description().await.unwrap().sdp;
                    let request = signaling
                        .answer_server(sdp, Some("not-the-offer".into()))
                        .await;
                    log.lock().stale_answers.push(request);
                }
                let sdp = peer.answer_offer(offer.sdp).await;
                signaling.answer_server(sdp, Some(offer.offer_id)).await;
            }
            Some(Resp::Notification(pb::SignalingNotification {
                notification: Some(Notification::IceCandidate(candidate)),
            })) => peer.add_remote_candidate(&candidate).await,
            Some(Resp::Error(err)) => {
                log.lock().errors.insert(response.request_id, err);
            }
            _ => {}
        }
    }
}

/// Waits until every participant hears each other one (a second of audio more than it had)
/// and then checks it is that one's tone, on a stream named after it, and never its own.
async fn everyone_hears_the_others(room: &[&Participant]) {
    let before: Vec<HashMap<String, usize>> = room
        .iter()
        .map(|p| {
            room.iter()
                .map(|o| (o.id.clone(), p.heard_len(&o.id)))
                .collect()
        })
        .collect();
    for (listener, before) in room.iter().zip(&before) {
        for speaker in room.iter().filter(|s| s.id != listener.id) {
            let wanted = before[&speaker.id] + ENOUGH;
            eventually(
                &format!("{} to hear {}", listener.id, speaker.id),
                || async { listener.heard_from(&speaker.id, wanted) },
            )
            .await;
            let frequency = listener.frequency_of(&speaker.id);
            assert!(
                (frequency - speaker.frequency).abs() <= 10.0,
                "{} hears {} at {frequency} Hz, not {} Hz",
                listener.id,
                speaker.id,
                speaker.frequency
            );
        }
        assert!(
            !listener.streams().contains(&listener.id),
            "{} hears itself",
            listener.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_forwards_everyones_tone_to_the_others_and_follows_joins_and_leaves() {
    common::init_tracing();
    let server = TestServer::start().await;
    let alice = Participant::join(&server, "alice", 440.0).await;
    let bob = Participant::join(&server, "bob", 660.0).await;
    let carol = Participant::join(&server, "carol", 880.0).await;
    everyone_hears_the_others(&[&alice, &bob, &carol]).await;
    for p in [&alice, &bob, &carol] {
        let others: BTreeSet<String> = [&alice, &bob, &carol]
            .iter()
            .filter(|o| o.id != p.id)
            .map(|o| o.id.clone())
            .collect();
        assert_eq!(p.streams(), others, "{} hears exactly the other two", p.id);
    }
    assert_eq!(server.sessions.room_count(), 1);

    // No offer is pending now: an answer to the server is refused.
    let (reply, sent) = oneshot::channel();
    alice.asks.send(Ask::AnswerUnasked(reply)).await.unwrap();
    let request = sent.await.unwrap();
    eventually("the unasked answer refused", || async {
        alice.log.lock().errors.contains_key(&request)
    })
    .await;
    let refused = alice.log.lock().errors[&request].clone();
    assert_eq!(refused.code, FAILED_PRECONDITION, "{refused:?}");
    assert!(refused.message.contains("no server offer"), "{refused:?}");

    // A fourth comes late; alice answers its offer with a wrong offer id first, bob offers
    // before answering it (glare).
    alice.stale_first.store(true, Ordering::Relaxed);
    bob.glare_first.store(true, Ordering::Relaxed);
    let dave = Participant::join(&server, "dave", 1100.0).await;
    everyone_hears_the_others(&[&alice, &bob, &carol, &dave]).await;
    let stale = alice.log.lock().stale_answers.clone();
    assert_eq!(
        stale.len(),
        1,
        "alice answered dave's offer with a wrong id"
    );
    eventually("the stale answer refused", || async {
        alice.log.lock().errors.contains_key(&stale[0])
    })
    .await;
    let refused = alice.log.lock().errors[&stale[0]].clone();
    assert_eq!(refused.code, FAILED_PRECONDITION, "{refused:?}");
    assert!(refused.message.contains("not-the-offer"), "{refused:?}");
    let glare = bob.log.lock().glare_offers.clone();
    assert_eq!(glare.len(), 1, "bob offered while dave's offer was pending");
    eventually("the glare offer refused", || async {
        bob.log.lock().errors.contains_key(&glare[0])
    })
    .await;
    let refused = bob.log.lock().errors[&glare[0]].clone();
    assert_eq!(refused.code, FAILED_PRECONDITION, "{refused:?}");
    assert_eq!(refused.message, "server offer pending");

    // carol leaves: the others are offered SDP without her track, and stop hearing her.
    let offers_before: Vec<usize> = [&alice, &bob, &dave]
        .iter()
        .map(|p| p.log.lock().offers.len())
        .collect();
    carol.leave().await;
    for (p, before) in [&alice, &bob, &dave].iter().zip(offers_before) {
        eventually(&format!("{}'s offer without carol", p.id), || async {
            let log = p.log.lock();
            log.offers.len() > before
                && log
                    .offers
                    .last()
                    .is_some_and(|sdp| !sdp.contains("a=msid:carol "))
        })
        .await;
        assert!(
            p.log.lock().offers[..before]
                .iter()
                .any(|sdp| sdp.contains("a=msid:carol ")),
            "{} had carol's track before",
            p.id
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let carol_heard: Vec<usize> = [&alice, &bob, &dave]
        .iter()
        .map(|p| p.heard_len("carol"))
        .collect();
    everyone_hears_the_others(&[&alice, &bob, &dave]).await;
    for (p, before) in [&alice, &bob, &dave].iter().zip(carol_heard) {
        assert_eq!(p.heard_len("carol"), before, "{} still hears carol", p.id);
    }

    // erin comes after carol left: at alice, her track takes the m-line carol's had.
    let carols_mid = mid_of(&alice.log.lock().offers, "carol");
    let lines_before = alice.log.lock().offers.last().map(|sdp| m_lines(sdp));
    let erin = Participant::join(&server, "erin", 1320.0).await;
    eventually("alice offered erin's track", || async {
        alice
            .log
            .lock()
            .offers
            .last()
            .is_some_and(|sdp| sdp.contains("a=msid:erin "))
    })
    .await;
    let offers = alice.log.lock().offers.clone();
    assert_eq!(
        mid_of(&offers, "erin"),
        carols_mid,
        "erin's track recycles carol's line"
    );
    assert_eq!(
        offers.last().map(|sdp| m_lines(sdp)),
        lines_before,
        "no m-line of history"
    );
    let (carols_ssrc, erins_ssrc) = (ssrc_of(&offers, "carol"), ssrc_of(&offers, "erin"));
    assert!(erins_ssrc.is_some(), "erin's line signals an SSRC");
    assert_ne!(
        erins_ssrc, carols_ssrc,
        "a recycled line is a new stream: a new SSRC, not carol's signalled again"
    );
    everyone_hears_the_others(&[&alice, &bob, &dave, &erin]).await;

    for p in [alice, bob, dave, erin] {
        p.leave().await;
    }
    eventually("the empty room deleted", || async {
        server.sessions.room_count() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_that_would_create_a_room_beyond_max_rooms_is_refused() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.limits.max_rooms = 1).await;
    let metadata = |room: &str| HashMap::from([("room".to_owned(), room.to_owned())]);
    let (mut first, _) =
        SignalingClient::announce_with(&server.grpc_url(), "first", metadata("one")).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut first, &mut peer).await;
    assert_eq!(server.sessions.room_count(), 1);

    let (mut second, _) =
        SignalingClient::announce_with(&server.grpc_url(), "second", metadata("two")).await;
    let other = ClientPeer::new(ClientOptions::default()).await;
    let request = second.offer(SERVER, other.offer().await).await;
    let refused = second.expect_error(&request).await;
    assert_eq!(refused.code, 8, "RESOURCE_EXHAUSTED: {refused:?}");
    assert!(refused.message.contains("at most 1 rooms"), "{refused:?}");
    assert_eq!(server.sessions.room_count(), 1);
    let metrics = common::http_get(server.http, "/metrics").await;
    let hits = common::metric_value(&metrics, "remotemedia_limit_hits_total{limit=\"rooms\"}");
    assert!(
        hits.is_some_and(|n| n >= 1.0),
        "rooms limit counted: {hits:?}"
    );

    // The same room takes more participants.
    let (mut third, _) =
        SignalingClient::announce_with(&server.grpc_url(), "third", metadata("one")).await;
    let mut joiner = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut third, &mut joiner).await;
    assert_eq!(server.sessions.room_count(), 1);
    peer.close().await;
    other.close().await;
    joiner.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_video_reaches_the_others_as_it_was_sent() {
    common::init_tracing();
    let server = TestServer::start().await;
    let alice = Participant::join_with(&server, "alice", 440.0, true).await;
    let bob = Participant::join_with(&server, "bob", 660.0, true).await;
    let camera = alice.camera.clone().unwrap();
    let stop = CancellationToken::new();
    let sending = stop.clone();
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        for i in 0u16.. {
            tokio::select! {
                _ = ticker.tick() => {}
                () = sending.cancelled() => break,
            }
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: VP8,
                    sequence_number: i,
                    timestamp: u32::from(i) * 1800,
                    ssrc: 7,
                    marker: true,
                    ..Default::default()
                },
                payload: vp8_payload(i),
            };
            if camera.write_rtp(&packet).await.is_err() {
                break;
            }
        }
    });
    eventually("bob to see alice's video", || async {
        bob.seen.lock().len() >= 25
    })
    .await;
    stop.cancel();
    sender.await.unwrap();
    {
        let seen = bob.seen.lock();
        for pair in seen.windows(2) {
            assert_eq!(
                pair[1].packet.header.sequence_number,
                pair[0].packet.header.sequence_number.wrapping_add(1),
                "one continuous stream"
            );
        }
        let first = usize::from(
            std::str::from_utf8(&seen[0].packet.payload[7..11])
                .unwrap()
                .parse::<u16>()
                .unwrap(),
        );
        for (k, received) in seen.iter().enumerate() {
            let k = u16::try_from(first + k).unwrap();
            assert_eq!(received.packet.payload, vp8_payload(k), "payloads as sent");
        }
    }
    let offer = bob.log.lock().offers.last().cloned().unwrap();
    let video = offer
        .split("m=video")
        .skip(1)
        .find(|s| s.contains("a=msid:alice "));
    assert!(video.is_some(), "a video line with alice's msid: {offer}");
    assert!(
        alice.seen.lock().is_empty(),
        "alice never gets her own video"
    );
    assert!(
        alice.keyframe_requests.load(Ordering::Relaxed) >= 1,
        "bob's new video line asked alice for a keyframe"
    );
    alice.leave().await;
    bob.leave().await;
    server.stop().await;
}

/// The mid of the m-line that last carried `peer`'s track in `offers`.
fn mid_of(offers: &[String], peer: &str) -> Option<String> {
    let sdp = offers
        .iter()
        .rev()
        .find(|sdp| sdp.contains(&format!("a=msid:{peer} ")))?;
    sdp.split("\r\nm=")
        .find(|section| section.contains(&format!("a=msid:{peer} ")))?
        .lines()
        .find_map(|line| line.strip_prefix("a=mid:"))
        .map(|mid| mid.trim().to_owned())
}

/// The SSRC of the m-line that last carried `peer`'s track in `offers`.
fn ssrc_of(offers: &[String], peer: &str) -> Option<u32> {
    let sdp = offers
        .iter()
        .rev()
        .find(|sdp| sdp.contains(&format!("a=msid:{peer} ")))?;
    sdp.split("\r\nm=")
        .find(|section| section.contains(&format!("a=msid:{peer} ")))?
        .lines()
        .find_map(|line| line.strip_prefix("a=ssrc:"))?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

fn m_lines(sdp: &str) -> usize {
    sdp.matches("\r\nm=").count()
}

/// A camera as a browser's sends it: 20 ms VP8 frames, delta frames except the first and
/// one right after each keyframe request (PLI) the publisher gets. Payloads start with the
/// publisher's name, so a subscriber can tell whose frame it got.
fn spawn_camera(p: &Participant, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let camera = p.camera.clone().unwrap();
    let requests = Arc::clone(&p.keyframe_requests);
    let name = p.id.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let mut answered = 0;
        for i in 0u16.. {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            let asked = requests.load(Ordering::Relaxed);
            let keyframe = i == 0 || asked > answered;
            answered = asked;
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: VP8,
                    sequence_number: i,
                    timestamp: u32::from(i) * 1800,
                    ssrc: 7,
                    marker: true,
                    ..Default::default()
                },
                payload: vp8_frame(&name, i, keyframe),
            };
            if camera.write_rtp(&packet).await.is_err() {
                break;
            }
        }
    })
}

/// A one-packet VP8 frame: descriptor (start of partition 0), then the payload header's first
/// byte (its low bit clear on a keyframe), then `name-i`.
fn vp8_frame(name: &str, i: u16, keyframe: bool) -> bytes::Bytes {
    let mut payload = vec![0x10u8, if keyframe { 0x00 } else { 0x01 }];
    payload.extend(format!("{name}-{i:05}").as_bytes());
    bytes::Bytes::from(payload)
}

fn is_keyframe(received: &ReceivedRtp) -> bool {
    received
        .packet
        .payload
        .get(1)
        .is_some_and(|b| b & 0x01 == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_tells_who_speaks_and_who_stopped_and_a_late_joiner_hears_it_at_once() {
    common::init_tracing();
    let server = TestServer::start().await;
    // alice speaks (-9 dBov), bob is silent to the room (-63 dBov: below -50).
    let alice = Participant::join_speaking(&server, "alice", 440.0, 0.5, false).await;
    let bob = Participant::join_speaking(&server, "bob", 660.0, 0.001, false).await;
    let speaking = json!({"type": "active_speakers", "peers": ["alice"]});
    bob.expect_room_message(0, speaking.clone()).await;
    alice.expect_room_message(0, speaking.clone()).await;
    assert!(
        !bob.room_messages
            .lock()
            .iter()
            .any(|m| m["type"] == "active_speakers"
                && m["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p == "bob"))),
        "bob's -63 dBov never makes him a speaker: {:?}",
        bob.room_messages.lock()
    );

    // carol comes while alice speaks on: the list does not change, yet carol is told it.
    let carol = Participant::join_speaking(&server, "carol", 880.0, 0.001, false).await;
    carol.expect_room_message(0, speaking).await;

    // alice's microphone stops: after 2 s she is muted to the others and no longer speaks.
    let (bob_seen, carol_seen) = (bob.room_message_count(), carol.room_message_count());
    let stopped = std::time::Instant::now();
    alice.tone.cancel();
    let muted = json!({"type": "muted", "peer": "alice", "kind": "audio", "muted": true});
    bob.expect_room_message(bob_seen, muted.clone()).await;
    carol.expect_room_message(carol_seen, muted).await;
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "muted only after 2 s of nothing ({after:?})"
    );
    bob.expect_room_message(bob_seen, json!({"type": "active_speakers", "peers": []}))
        .await;
    assert!(
        !alice
            .room_messages
            .lock()
            .iter()
            .any(|m| m["type"] == "muted" && m["peer"] == "alice"),
        "alice is not told about her own track"
    );

    // Her microphone comes back: unmuted, and she speaks again.
    let bob_seen = bob.room_message_count();
    let again = CancellationToken::new();
    spawn_tone_at(Arc::clone(&alice.mic), 440.0, 0.5, again.clone());
    bob.expect_room_message(
        bob_seen,
        json!({"type": "muted", "peer": "alice", "kind": "audio", "muted": false}),
    )
    .await;
    bob.expect_room_message(
        bob_seen,
        json!({"type": "active_speakers", "peers": ["alice"]}),
    )
    .await;
    again.cancel();
    for p in [alice, bob, carol] {
        p.leave().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_follows_the_last_speakers_pins_and_offs_and_resumes_at_a_keyframe() {
    common::init_tracing();
    let server = TestServer::start_with(|c| c.media.room_video_last_n = 1).await;
    // bob joins first and is silent; alice speaks; carol watches.
    let bob = Participant::join_speaking(&server, "bob", 660.0, 0.001, true).await;
    let alice = Participant::join_speaking(&server, "alice", 440.0, 0.5, true).await;
    let carol = Participant::join_speaking(&server, "carol", 880.0, 0.001, true).await;
    let stop = CancellationToken::new();
    let cameras: Vec<_> = [&alice, &bob, &carol]
        .iter()
        .map(|p| spawn_camera(p, stop.clone()))
        .collect();

    // One video slot: carol sees the speaker, alice; bob's video does not flow to her.
    eventually("carol to see alice's video", || async {
        carol.video_from("alice").len() >= 25
    })
    .await;
    let bob_at_carol = carol.video_from("bob").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        carol.video_from("bob").len(),
        bob_at_carol,
        "bob's video is paused at carol (last-N 1, alice speaks)"
    );
    assert!(
        carol.heard_from("bob", ENOUGH),
        "audio is never limited: carol hears bob"
    );

    // carol pins bob: his video resumes, starting at a keyframe within 1 s.
    let before = carol.video_from("bob").len();
    let pinned = std::time::Instant::now();
    carol
        .tell_room(json!({"type": "subscribe", "peer": "bob", "kind": "video", "mode": "pin"}))
        .await;
    eventually("carol to see bob's video after pinning him", || async {
        carol.video_from("bob").len() > before
    })
    .await;
    let resumed = carol.video_from("bob")[before].clone();
    assert!(
        resumed.at.duration_since(pinned) < Duration::from_secs(1),
        "bob's video resumed {:?} after the pin",
        resumed.at.duration_since(pinned)
    );
    assert!(
        is_keyframe(&resumed),
        "the resumed stream starts at a keyframe"
    );
    let seen = carol.video_from("bob");
    for pair in seen.windows(2) {
        assert_eq!(
            pair[1].packet.header.sequence_number,
            pair[0].packet.header.sequence_number.wrapping_add(1),
            "bob's video is one continuous stream at carol across the pause"
        );
    }
    assert!(
        carol.video_from("alice").len() > 25,
        "the pin comes on top of the last-N slot"
    );

    // carol turns alice's video and audio off: nothing of alice flows to her any more,
    // though alice is the speaker.
    carol
        .tell_room(json!({"type": "subscribe", "peer": "alice", "kind": "video", "mode": "off"}))
        .await;
    carol
        .tell_room(json!({"type": "subscribe", "peer": "alice", "kind": "audio", "mode": "off"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (video, audio) = (carol.video_from("alice").len(), carol.heard_len("alice"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        carol.video_from("alice").len(),
        video,
        "alice's video is off"
    );
    assert_eq!(carol.heard_len("alice"), audio, "alice's audio is off");
    let bob_now = carol.video_from("bob").len();
    eventually("bob's video still flows", || async {
        carol.video_from("bob").len() > bob_now + 10
    })
    .await;

    // A garbage message and an unknown peer change nothing and close nothing.
    carol.tell_room(json!({"type": "dance"})).await;
    carol
        .tell_room(json!({"type": "subscribe", "peer": "nobody", "kind": "video", "mode": "pin"}))
        .await;
    carol
        .tell_room(json!({"type": "subscribe", "peer": "alice", "kind": "audio", "mode": "auto"}))
        .await;
    let audio = carol.heard_len("alice");
    eventually("alice's audio back at carol", || async {
        carol.heard_len("alice") > audio + 48_000
    })
    .await;

    stop.cancel();
    for camera in cameras {
        camera.await.unwrap();
    }
    for p in [alice, bob, carol] {
        p.leave().await;
    }
    server.stop().await;
}

/// The rtpmap codec names of an SDP's video sections that are not rejected.
fn video_codecs(sdp: &str) -> Vec<String> {
    sdp.split("\r\nm=")
        .filter(|section| section.starts_with("video ") && !section.starts_with("video 0 "))
        .flat_map(|section| section.lines())
        .filter_map(|line| line.strip_prefix("a=rtpmap:"))
        .filter_map(|rtpmap| rtpmap.split(' ').nth(1)?.split('/').next())
        .map(str::to_ascii_uppercase)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_has_one_video_codec_its_first_publishers() {
    common::init_tracing();
    let server = TestServer::start().await;
    let h264_first = VideoOptions {
        h264_first: true,
        ..VideoOptions::default()
    };
    // Alone in its room, a client that prefers H264 gets H264: the server takes either.
    let metadata = |room: &str| HashMap::from([("room".to_owned(), room.to_owned())]);
    let (mut solo, _) =
        SignalingClient::announce_with(&server.grpc_url(), "solo", metadata("other")).await;
    let mut solo_peer =
        ClientPeer::new_with_video_options(ClientOptions::default(), h264_first).await;
    let report = connect_to_server(&mut solo, &mut solo_peer).await;
    assert_eq!(
        video_codecs(&report.answer_sdp).first().map(String::as_str),
        Some("H264")
    );

    // alice publishes VP8 in "standup": bob, who prefers H264, is answered VP8 only.
    let alice = Participant::join_with(&server, "alice", 440.0, true).await;
    let carol = Participant::join_with(&server, "carol", 660.0, true).await;
    let stop = CancellationToken::new();
    let camera = spawn_camera(&alice, stop.clone());
    eventually(
        "carol to see alice's video (the room has video now)",
        || async { !carol.video_from("alice").is_empty() },
    )
    .await;
    let (mut bob, _) =
        SignalingClient::announce_with(&server.grpc_url(), "bob", metadata("standup")).await;
    let mut bob_peer =
        ClientPeer::new_with_video_options(ClientOptions::default(), h264_first).await;
    let report = connect_to_server(&mut bob, &mut bob_peer).await;
    let codecs = video_codecs(&report.answer_sdp);
    assert!(
        codecs.contains(&"VP8".to_owned()) && !codecs.contains(&"H264".to_owned()),
        "bob's answer has the room's VP8 only: {codecs:?}"
    );
    stop.cancel();
    camera.await.unwrap();
    alice.leave().await;
    carol.leave().await;
    solo_peer.close().await;
    bob_peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_joins_and_leaves_keep_a_subscribers_sdp_to_the_live_tracks() {
    common::init_tracing();
    let server = TestServer::start().await;
    let alice = Participant::join(&server, "alice", 440.0).await;
    let first_lines = {
        let bob = Participant::join(&server, "bob", 660.0).await;
        everyone_hears_the_others(&[&alice, &bob]).await;
        bob.leave().await;
        alice
            .log
            .lock()
            .offers
            .last()
            .map(|sdp| m_lines(sdp))
            .unwrap()
    };
    let started = std::time::Instant::now();
    for i in 0..50 {
        let id = format!("guest{i}");
        let guest = Participant::join(&server, &id, 500.0 + 10.0 * i as f32).await;
        let msid = format!("a=msid:{id} ");
        eventually(&format!("alice offered {id}'s track"), || async {
            alice
                .log
                .lock()
                .offers
                .last()
                .is_some_and(|sdp| sdp.contains(&msid))
        })
        .await;
        guest.leave().await;
    }
    println!("50 joins and leaves in {:?}", started.elapsed());
    let last = Participant::join(&server, "last", 880.0).await;
    everyone_hears_the_others(&[&alice, &last]).await;
    let lines = alice
        .log
        .lock()
        .offers
        .last()
        .map(|sdp| m_lines(sdp))
        .unwrap();
    // One guest's line, plus at most one more: a guest's line is recycled once the offer
    // that removed the last one is answered, and the next may come before that.
    assert!(
        lines <= first_lines + 1,
        "after 51 guests alice's SDP has {lines} m-lines; one guest made {first_lines}"
    );
    alice.leave().await;
    last.leave().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_pipeline_hears_the_mix_and_everyone_gets_its_audio_and_data() {
    common::init_tracing();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // vad.yaml: its audio out is its audio in (here: the room's mix), and each speech
    // segment is reported as {"event":"speech_start"|"speech_end",...}.
    let server = TestServer::start_with(|c| {
        c.manifest_dir = Some(examples);
        c.media.room_manifest = Some("vad".into());
    })
    .await;
    let alice = Participant::join_speaking(&server, "alice", 440.0, 0.3, false).await;
    let bob = Participant::join_speaking(&server, "bob", 660.0, 0.3, false).await;
    let carol = Participant::join_speaking(&server, "carol", 880.0, 0.0, false).await;
    // dave talks (a recorded voice: the VAD's model takes no pure tone for speech).
    let dave = Participant::join_speaking(&server, "dave", 1100.0, 0.0, false).await;
    dave.tone.cancel();
    let talking = CancellationToken::new();
    spawn_recording(
        Arc::clone(&dave.mic),
        Arc::new(recorded_speech()),
        talking.clone(),
    );

    // carol hears the room's track: alice's and bob's tones mixed (with dave's voice; her own
    // silence adds none).
    eventually("carol to hear the room's track", || async {
        carol.heard_from("remotemedia-room", 2 * ENOUGH)
    })
    .await;
    let mix = {
        let heard = carol.heard.lock();
        let samples = &heard["remotemedia-room"];
        samples[samples.len() - ENOUGH..].to_vec()
    };
    let near = |hz: f32| band_energy_ratio(&mix, 48_000, hz - 20.0, hz + 20.0);
    let (a, b, c) = (near(440.0), near(660.0), near(880.0));
    assert!(
        a > 0.2 && b > 0.2 && c < 0.05,
        "the mix has alice's 440 Hz ({a:.2}) and bob's 660 Hz ({b:.2}), not 880 Hz ({c:.2})"
    );
    let offer = carol.log.lock().offers.last().cloned().unwrap();
    assert!(
        offer.contains("a=msid:remotemedia-room room-audio"),
        "{offer}"
    );
    eventually("alice to hear the room's track too", || async {
        alice.heard_from("remotemedia-room", ENOUGH)
    })
    .await;

    // Its data output reaches every room channel.
    for p in [&alice, &bob, &carol, &dave] {
        eventually(
            &format!("{} told the pipeline's speech_start", p.id),
            || async {
                p.room_messages
                    .lock()
                    .iter()
                    .any(|m| m["type"] == "pipeline" && m["data"]["event"] == "speech_start")
            },
        )
        .await;
    }
    talking.cancel();
    for p in [alice, bob, carol, dave] {
        p.leave().await;
    }
    eventually("the room and its pipeline ended", || async {
        server.sessions.room_count() == 0
    })
    .await;
    server.stop().await;
}

/// The participant whose offer creates a room picks its pipeline (announce metadata
/// `room_manifest`); a later joiner may leave it out or repeat it, another name is refused at
/// its offer, and the next room created without one runs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_participant_that_creates_a_room_picks_its_pipeline() {
    common::init_tracing();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let server = TestServer::start_with(|c| c.manifest_dir = Some(examples)).await;
    let asks_vad = [("room_manifest", "vad")];
    let alice = Participant::join_announcing(&server, "alice", 440.0, 0.3, false, &asks_vad).await;
    let bob = Participant::join_speaking(&server, "bob", 660.0, 0.3, false).await;
    let carol = Participant::join_announcing(&server, "carol", 880.0, 0.0, false, &asks_vad).await;

    // vad.yaml's audio out is its input, the room's mix: carol hears alice and bob in it.
    eventually("carol to hear the room's track", || async {
        carol.heard_from("remotemedia-room", 2 * ENOUGH)
    })
    .await;
    let mix = {
        let heard = carol.heard.lock();
        let samples = &heard["remotemedia-room"];
        samples[samples.len() - ENOUGH..].to_vec()
    };
    let near = |hz: f32| band_energy_ratio(&mix, 48_000, hz - 20.0, hz + 20.0);
    assert!(
        near(440.0) > 0.2 && near(660.0) > 0.2,
        "the room pipeline's output is the mix: 440 Hz {:.2}, 660 Hz {:.2}",
        near(440.0),
        near(660.0)
    );

    // Another pipeline for the same room: INVALID_ARGUMENT at the offer, naming both.
    let metadata = HashMap::from([
        ("room".to_owned(), "standup".to_owned()),
        ("room_manifest".to_owned(), "loopback".to_owned()),
    ]);
    let (mut mallory, _) =
        SignalingClient::announce_with(&server.grpc_url(), "mallory", metadata).await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let request = mallory.offer(SERVER, peer.offer().await).await;
    let refused = mallory.expect_error(&request).await;
    assert_eq!(refused.code, 3, "INVALID_ARGUMENT: {refused:?}");
    assert!(
        refused.message.contains("\"vad\"") && refused.message.contains("\"loopback\""),
        "{refused:?}"
    );
    peer.close().await;

    // Without a room: refused at announce.
    let mut dave = SignalingClient::open(&server.grpc_url()).await;
    dave.send(Req::Announce(pb::AnnounceRequest {
        peer_id: "dave".into(),
        capabilities: None,
        metadata: HashMap::from([("room_manifest".to_owned(), "vad".to_owned())]),
    }))
    .await;
    // A refused announce ends the stream with its status.
    let refused = dave.next().await.expect_err("the announce refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("needs metadata room"),
        "{refused:?}"
    );

    for p in [alice, bob, carol] {
        p.leave().await;
    }
    eventually("the room and its pipeline ended", || async {
        server.sessions.room_count() == 0
    })
    .await;
    // The room made anew without a room_manifest runs no pipeline.
    let erin = Participant::join(&server, "erin", 440.0).await;
    let frank = Participant::join(&server, "frank", 660.0).await;
    everyone_hears_the_others(&[&erin, &frank]).await;
    assert!(
        !frank.streams().contains("remotemedia-room"),
        "a room created without room_manifest runs no pipeline"
    );
    erin.leave().await;
    frank.leave().await;
    server.stop().await;
}
