//! Rooms that span workers when a hosting worker dies or drains (#16, "Failure"). Real
//! processes: a private Redis, two frontends with `--room-span-workers`, three media workers
//! with `--capacity 2`, a relay socket each and `--insecure-relay`; webrtc-crate clients
//! announcing `room=<name>`, each speaking its own tone.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{connect_to_server, spawn_tone_at, ClientOptions, ClientPeer};
use common::cluster::{free_udp_port, one_at_a_time, Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::{eventually, WAIT};
use parking_lot::Mutex;
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use tokio_util::sync::CancellationToken;

const ROOM: &str = "relayfail";

/// A participant that speaks a tone, answers the server's offers and keeps the last one
/// (which tracks its connection carries: each line's `msid` is `<publisher> <track>`).
struct Participant {
    id: String,
    heard: Arc<Mutex<HashMap<String, Vec<f32>>>>,
    /// Server offers answered.
    answered: Arc<Mutex<usize>>,
    /// The last server offer's SDP.
    offer: Arc<Mutex<String>>,
    /// When `PeerDisconnected` from the server came.
    server_gone: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
}

impl Participant {
    async fn join(frontend: &Node, id: &str, frequency: f32) -> Self {
        let metadata = HashMap::from([("room".to_owned(), ROOM.to_owned())]);
        let (mut signaling, _) =
            SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        let stop = CancellationToken::new();
        spawn_tone_at(peer.audio.clone().unwrap(), frequency, 0.5, stop.clone());
        let heard = Arc::clone(&peer.heard);
        let answered = Arc::new(Mutex::new(0));
        let offer = Arc::new(Mutex::new(String::new()));
        let server_gone = Arc::new(Mutex::new(None));
        let (count, last, gone, until) = (
            Arc::clone(&answered),
            Arc::clone(&offer),
            Arc::clone(&server_gone),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !until.is_cancelled() {
                let Some(next) = signaling.next_within(Duration::from_millis(20)).await else {
                    continue;
                };
                let Ok(Some(response)) = next else { break };
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::Offer(offer)),
                    })) if offer.from_peer_id == SERVER => {
                        let sdp = peer.answer_offer(offer.sdp.clone()).await;
                        let request = signaling.answer_server(sdp, Some(offer.offer_id)).await;
                        signaling.expect_ack(&request).await;
                        *last.lock() = offer.sdp;
                        *count.lock() += 1;
                    }
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::IceCandidate(candidate)),
                    })) => peer.add_remote_candidate(&candidate).await,
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::PeerDisconnected(d)),
                    })) if d.peer_id == SERVER => *gone.lock() = Some(Instant::now()),
                    _ => {}
                }
            }
            if gone.lock().is_some() {
                // The server ended the session (and the stream with it).
                peer.close().await;
                return;
            }
            let disconnect = signaling
                .send(Req::Disconnect(pb::DisconnectRequest {
                    peer_id: SERVER.into(),
                }))
                .await;
            let _ = signaling.next_within(Duration::from_secs(2)).await;
            let _ = disconnect;
            peer.close().await;
        });
        Self {
            id: id.to_owned(),
            heard,
            answered,
            offer,
            server_gone,
            stop,
        }
    }

    /// Waits for a second of audio from `from` and returns its dominant frequency.
    async fn hears(&self, from: &str) -> f32 {
        eventually(&format!("{} to hear {from}", self.id), || async {
            self.heard
                .lock()
                .get(from)
                .is_some_and(|s| s.len() >= 48_000)
        })
        .await;
        let heard = self.heard.lock();
        let samples = &heard[from];
        dominant_frequency(&samples[samples.len() - 48_000..], 48_000)
    }

    /// Whether the last server offer carries a track of `publisher`.
    fn offered(&self, publisher: &str) -> bool {
        self.offer.lock().contains(&format!("msid:{publisher} "))
    }
}

fn tone(i: usize) -> f32 {
    330.0 + 110.0 * i as f32
}

/// Redis, three workers (`--capacity 2`, relay sockets) and two spanning frontends that see
/// all three.
async fn cluster() -> (RedisProcess, Vec<Node>, Vec<Node>) {
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b", "worker-c"] {
        let relay = free_udp_port().to_string();
        let args = [
            "--capacity",
            "2",
            "--relay-port",
            relay.as_str(),
            "--insecure-relay",
        ];
        workers.push(Node::worker(name, &url, &args).await);
    }
    let span = ["--room-span-workers"];
    let frontends = vec![
        Node::start("frontend-1", "frontend", &url, &span).await,
        Node::start("frontend-2", "frontend", &url, &span).await,
    ];
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 3.0)
            .await;
    }
    (redis, workers, frontends)
}

async fn redis_connection(redis: &RedisProcess) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The worker whose record entry lists `publisher`'s track (waits for it).
async fn worker_of(conn: &mut redis::aio::MultiplexedConnection, publisher: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let record: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("rm:room:{ROOM}"))
            .query_async(conn)
            .await
            .unwrap();
        for (field, json) in &record {
            let Some(worker) = field.strip_prefix("tracks:") else {
                continue;
            };
            let tracks: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
            if tracks.iter().any(|t| t["publisher"] == publisher) {
                return worker.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no worker lists {publisher}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each of `listeners` hears each of `speakers` (but itself) at its tone, afresh: all that
/// was heard is forgotten first, then a second of each is waited for (all at once).
async fn all_hear(listeners: &[&Participant], speakers: &[(&str, f32)]) {
    for listener in listeners {
        listener.heard.lock().clear();
    }
    for listener in listeners {
        for (from, tone) in speakers {
            if *from == listener.id {
                continue;
            }
            let heard = listener.hears(from).await;
            assert!(
                (heard - tone).abs() <= 10.0,
                "{} hears {from} at {heard} Hz, not {tone}",
                listener.id
            );
        }
    }
}

/// A hosting worker of a six-participant room is killed (-9): its two participants are told
/// the server is gone; the other four still hear each other, and the dead worker's tracks
/// are renegotiated off their connections, found by the relay going silent (before the
/// frontends reap the worker) and counted; the links to it are closed on both ends of every
/// survivor (no sending link, back channel or inbound link to the dead worker left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosting_worker_killed_its_tracks_leave_the_other_workers_and_the_rest_hear_on() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, mut workers, frontends) = cluster().await;
    let mut conn = redis_connection(&redis).await;

    let mut participants = Vec::new();
    for i in 0..6 {
        let id = format!("p{i}");
        participants.push(Participant::join(&frontends[i % 2], &id, tone(i)).await);
    }
    let mut on_worker: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, participant) in participants.iter().enumerate() {
        let worker = worker_of(&mut conn, &participant.id).await;
        on_worker.entry(worker).or_default().push(i);
    }
    assert_eq!(on_worker.len(), 3, "{on_worker:?}");
    // The worker of the last joiner dies.
    let victim_name = worker_of(&mut conn, "p5").await;
    let victim = workers.iter().position(|w| w.name == victim_name).unwrap();
    let dead: Vec<usize> = on_worker[&victim_name].clone();
    let alive: Vec<usize> = (0..6).filter(|i| !dead.contains(i)).collect();
    let everyone: Vec<(&str, f32)> = participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), tone(i)))
        .collect();
    let survivors: Vec<&Participant> = alive.iter().map(|&i| &participants[i]).collect();
    all_hear(&survivors, &everyone).await;
    for &i in &alive {
        for &d in &dead {
            assert!(participants[i].offered(&participants[d].id));
        }
    }
    let answered: Vec<usize> = survivors.iter().map(|p| *p.answered.lock()).collect();

    let killed = Instant::now();
    workers[victim].kill9();

    // The survivors' connections lose the dead worker's tracks (a server offer without them).
    for (survivor, before) in survivors.iter().zip(&answered) {
        eventually(
            &format!(
                "{} to renegotiate the dead worker's tracks away",
                survivor.id
            ),
            || async {
                *survivor.answered.lock() > *before
                    && dead.iter().all(|&d| !survivor.offered(&participants[d].id))
            },
        )
        .await;
    }
    let renegotiated = killed.elapsed();
    // And they still hear each other.
    let alive_tones: Vec<(&str, f32)> = alive
        .iter()
        .map(|&i| (participants[i].id.as_str(), tone(i)))
        .collect();
    all_hear(&survivors, &alive_tones).await;
    let heard = killed.elapsed();
    // The dead worker's participants are told.
    let mut told = Duration::ZERO;
    for &d in &dead {
        eventually(&format!("{} to be told", participants[d].id), || async {
            participants[d].server_gone.lock().is_some()
        })
        .await;
        let at = participants[d].server_gone.lock().unwrap();
        told = told.max(at.duration_since(killed));
    }

    // Found by the relay: each survivor's worker heard its link go silent and dropped the
    // dead worker's tracks; both ends of the links to it are closed.
    for (i, worker) in workers.iter().enumerate() {
        if i == victim {
            continue;
        }
        assert!(
            worker
                .metric("remotemedia_relay_links_silent_total{side=\"receiving\"}")
                .await
                >= 1.0,
            "{}",
            worker.name
        );
        assert!(
            worker.metric("remotemedia_relay_workers_lost_total").await >= 1.0,
            "{}",
            worker.name
        );
        for gauge in [
            "remotemedia_relay_links_active",
            "remotemedia_relay_links_sending",
            "remotemedia_relay_back_channels_active",
        ] {
            worker.wait_metric(gauge, WAIT, |n| n == 1.0).await;
        }
        // The link between the two survivors carries reports both ways.
        assert!(
            worker.metric("remotemedia_relay_rtt_seconds_count").await > 0.0,
            "{}",
            worker.name
        );
    }
    for participant in &participants {
        participant.stop.cancel();
    }
    println!(
        "a hosting worker killed: its tracks renegotiated away after {renegotiated:?}, the \
         survivors heard each other after {heard:?}, its participants told after {told:?} \
         (test {:?})",
        started.elapsed()
    );
}

/// A hosting worker drains: its participants keep hearing and being heard; a newcomer is
/// placed on another worker and heard by all, the draining worker's participants included;
/// once they leave, the draining worker has no relay link left, and once everyone leaves no
/// worker has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_hosting_worker_keeps_its_media_and_leaves_no_relay_link_behind() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let (redis, workers, frontends) = cluster().await;
    let mut conn = redis_connection(&redis).await;

    let mut participants = Vec::new();
    for i in 0..4 {
        let id = format!("p{i}");
        participants.push(Participant::join(&frontends[i % 2], &id, tone(i)).await);
    }
    let draining_name = worker_of(&mut conn, "p0").await;
    let draining = workers.iter().find(|w| w.name == draining_name).unwrap();
    let mut on_draining = Vec::new();
    for (i, participant) in participants.iter().enumerate() {
        if worker_of(&mut conn, &participant.id).await == draining_name {
            on_draining.push(i);
        }
    }
    assert_eq!(on_draining.len(), 2, "capacity 2");

    let _: () = redis::cmd("SET")
        .arg(format!("rm:drain:{draining_name}"))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    draining
        .wait_metric("remotemedia_worker_draining", WAIT, |n| n == 1.0)
        .await;
    for frontend in &frontends {
        frontend
            .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
            .await;
    }
    // A newcomer goes elsewhere, and everyone hears everyone.
    participants.push(Participant::join(&frontends[0], "p4", tone(4)).await);
    let newcomer_worker = worker_of(&mut conn, "p4").await;
    assert_ne!(newcomer_worker, draining_name);
    let everyone: Vec<(&str, f32)> = participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), tone(i)))
        .collect();
    let listeners: Vec<&Participant> = participants.iter().collect();
    all_hear(&listeners, &everyone).await;
    let heard_while_draining = started.elapsed();

    // The draining worker's participants leave: nothing of the relay is left on it, and the
    // two others keep one link between them.
    let answered: Vec<usize> = participants.iter().map(|p| *p.answered.lock()).collect();
    for &i in &on_draining {
        participants[i].stop.cancel();
    }
    draining
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;
    let gauges = [
        "remotemedia_relay_links_active",
        "remotemedia_relay_links_sending",
        "remotemedia_relay_back_channels_active",
    ];
    for gauge in gauges {
        draining.wait_metric(gauge, WAIT, |n| n == 0.0).await;
    }
    for worker in workers.iter().filter(|w| w.name != draining_name) {
        for gauge in gauges {
            worker.wait_metric(gauge, WAIT, |n| n == 1.0).await;
        }
    }
    let left: Vec<&str> = on_draining
        .iter()
        .map(|&i| participants[i].id.as_str())
        .collect();
    for (i, participant) in participants.iter().enumerate() {
        if on_draining.contains(&i) {
            continue;
        }
        eventually(
            &format!("{} to renegotiate the leavers away", participant.id),
            || async {
                *participant.answered.lock() > answered[i]
                    && left.iter().all(|l| !participant.offered(l))
            },
        )
        .await;
    }
    for participant in &participants {
        participant.stop.cancel();
    }
    for worker in &workers {
        worker
            .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
            .await;
        for gauge in gauges {
            worker.wait_metric(gauge, WAIT, |n| n == 0.0).await;
        }
        // Ended by their rooms, never found silent.
        assert_eq!(
            worker
                .metric("remotemedia_relay_links_silent_total{side=\"sending\"}")
                .await,
            0.0,
            "{}",
            worker.name
        );
    }
    println!(
        "a hosting worker drained: everyone heard everyone after {heard_while_draining:?}, no \
         relay link left after {:?}",
        started.elapsed()
    );
}
