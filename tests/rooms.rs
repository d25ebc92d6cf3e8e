//! Rooms (#15): webrtc-crate clients that announce with `room=...` hear each other through
//! the server, RTP forwarded without transcoding, on tracks whose msid stream id is the
//! publisher's peer id; tracks are added and removed by server offers the clients answer.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{connect_to_server, spawn_tone, ClientOptions, ClientPeer, ReceivedRtp};
use common::signaling::{SignalingClient, SERVER};
use common::video::{vp8_payload, VP8};
use common::{eventually, TestServer};
use parking_lot::Mutex;
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
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
}

impl Participant {
    async fn join(server: &TestServer, id: &str, frequency: f32) -> Self {
        Self::join_with(server, id, frequency, false).await
    }

    /// Joins with a VP8 camera track as well when `video` (it sends only when asked).
    async fn join_with(server: &TestServer, id: &str, frequency: f32, video: bool) -> Self {
        let metadata = HashMap::from([("room".to_owned(), "standup".to_owned())]);
        let (mut signaling, _) =
            SignalingClient::announce_with(&server.grpc_url(), id, metadata).await;
        let mut peer = match video {
            true => ClientPeer::new_with_video(ClientOptions::default()).await,
            false => ClientPeer::new(ClientOptions::default()).await,
        };
        connect_to_server(&mut signaling, &mut peer).await;
        let tone = CancellationToken::new();
        spawn_tone(peer.audio.clone().unwrap(), frequency, tone.clone());
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
        }
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
                    let request = answer(&mut signaling, sdp, None).await;
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
                    let request = answer(&mut signaling, sdp, Some("not-the-offer".into())).await;
                    log.lock().stale_answers.push(request);
                }
                let sdp = peer.answer_offer(offer.sdp).await;
                answer(&mut signaling, sdp, Some(offer.offer_id)).await;
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

async fn answer(signaling: &mut SignalingClient, sdp: String, offer_id: Option<String>) -> String {
    signaling
        .send(Req::Answer(pb::AnswerRequest {
            to_peer_id: SERVER.into(),
            sdp,
            r#type: "answer".into(),
            offer_id,
        }))
        .await
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

fn m_lines(sdp: &str) -> usize {
    sdp.matches("\r\nm=").count()
}
