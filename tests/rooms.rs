//! Rooms (#15): webrtc-crate clients that announce with `room=...` hear each other through
//! the server, RTP forwarded without transcoding, on tracks whose msid stream id is the
//! publisher's peer id; tracks are added and removed by server offers the clients answer.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::{connect_to_server, spawn_tone, ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::{eventually, TestServer};
use parking_lot::Mutex;
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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
    log: Arc<Mutex<Log>>,
    /// Answer the next server offer with a wrong offer id first.
    stale_first: Arc<AtomicBool>,
    asks: mpsc::Sender<Ask>,
    tone: CancellationToken,
}

impl Participant {
    async fn join(server: &TestServer, id: &str, frequency: f32) -> Self {
        let metadata = HashMap::from([("room".to_owned(), "standup".to_owned())]);
        let (mut signaling, _) =
            SignalingClient::announce_with(&server.grpc_url(), id, metadata).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        let tone = CancellationToken::new();
        spawn_tone(peer.audio.clone().unwrap(), frequency, tone.clone());
        let heard = Arc::clone(&peer.heard);
        let log = Arc::new(Mutex::new(Log::default()));
        let stale_first = Arc::new(AtomicBool::new(false));
        let (asks, asked) = mpsc::channel(4);
        tokio::spawn(drive(
            signaling,
            peer,
            Arc::clone(&log),
            Arc::clone(&stale_first),
            asked,
        ));
        Self {
            id: id.to_owned(),
            frequency,
            heard,
            log,
            stale_first,
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
    stale_first: Arc<AtomicBool>,
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

    // A fourth comes late; alice answers its offer with a wrong offer id first.
    alice.stale_first.store(true, Ordering::Relaxed);
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

    for p in [alice, bob, dave] {
        p.leave().await;
    }
    eventually("the empty room deleted", || async {
        server.sessions.room_count() == 0
    })
    .await;
    server.stop().await;
}
