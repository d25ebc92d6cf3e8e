//! Rooms that span workers, with media relayed between them (#16). Real processes: a
//! private Redis, two frontends with `--room-span-workers`, three media workers with
//! `--capacity 2`, a relay socket each and `--insecure-relay` (no worker TLS in tests).
//! Clients are webrtc-crate peers announcing `room=<name>`; none can tell which worker
//! holds which peer.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{free_udp_port, one_at_a_time, Node, RedisProcess};
use common::room_speaker::RoomSpeaker;
use common::{eventually, metric_value, WAIT};

async fn metric(node: &Node, name: &str) -> f64 {
    metric_value(&node.metrics().await, name).unwrap_or(0.0)
}

/// The acceptance test of #16's relay: six participants of one room, two per worker (each
/// worker's capacity), through two frontends; everyone hears exactly the other five tones,
/// whichever worker they are on. Each worker lists its two publishers' tracks in the room's
/// record and receives the other four over two links, one per other worker. Then one leaves
/// (its track leaves the record and every other participant's connection, renegotiated) and
/// a late joiner takes its place: it hears the five, and the five hear it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_participants_on_three_workers_each_hear_the_other_five() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
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

    let tones = [330.0, 440.0, 550.0, 660.0, 770.0, 880.0];
    let mut speakers = Vec::new();
    for (i, tone) in tones.iter().enumerate() {
        let id = format!("p{i}");
        speakers.push(RoomSpeaker::join(&frontends[i % 2], "sextet", &id, *tone).await);
    }
    // The last joiner (on the third worker) reaches the first (on the first worker): its
    // track's publish, the record, the pub/sub message, the link and a renegotiation.
    let joined = Instant::now();
    eventually("p0 to hear p5 at all", || async {
        speakers[0].heard.lock().contains_key("p5")
    })
    .await;
    let relayed_after = joined.elapsed();
    for worker in &workers {
        assert_eq!(
            metric(worker, "remotemedia_worker_sessions_active").await,
            2.0,
            "two participants on {}",
            worker.name
        );
    }

    for speaker in &speakers {
        for (j, tone) in tones.iter().enumerate() {
            let from = format!("p{j}");
            if from == speaker.id {
                continue;
            }
            let heard = speaker.hears(&from).await;
            assert!(
                (heard - tone).abs() <= 10.0,
                "{} hears {from} at {heard} Hz, not {tone}",
                speaker.id
            );
        }
    }
    for speaker in &speakers {
        let heard = speaker.heard.lock();
        assert_eq!(heard.len(), 5, "{}: {:?}", speaker.id, heard.keys());
        assert!(!heard.contains_key(&speaker.id), "nobody hears itself");
    }
    let heard_at = started.elapsed();

    // The record: each worker lists its own two publishers' audio.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let record: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("rm:room:sextet")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut listed = Vec::new();
    for worker in &workers {
        let field = record
            .get(&format!("tracks:{}", worker.name))
            .unwrap_or_else(|| panic!("{record:?}"));
        let tracks: Vec<serde_json::Value> = serde_json::from_str(field).unwrap();
        assert_eq!(tracks.len(), 2, "{}: {field}", worker.name);
        for track in tracks {
            assert_eq!(track["kind"], "audio", "{track}");
            assert_eq!(track["codec"]["mime_type"], "audio/opus", "{track}");
            listed.push(track["publisher"].as_str().unwrap().to_owned());
        }
    }
    listed.sort();
    assert_eq!(listed, ["p0", "p1", "p2", "p3", "p4", "p5"]);

    // One link per other worker, one copy per track: two links in, four tracks' packets.
    for worker in &workers {
        assert_eq!(
            metric(worker, "remotemedia_relay_links_active").await,
            2.0,
            "{}",
            worker.name
        );
        assert!(metric(worker, "remotemedia_relay_packets_total{direction=\"in\"}").await > 0.0);
        assert_eq!(
            metric(
                worker,
                "remotemedia_relay_packets_dropped_total{reason=\"auth\"}"
            )
            .await,
            0.0
        );
    }
    // A participant leaves: its track goes from the record, and the others, on every worker,
    // stop getting it. A late joiner takes its place and is heard by all.
    let leaver = speakers.pop().unwrap();
    let leaver_worker = worker_listing(&mut conn, &workers, "p5").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered: Vec<usize> = speakers.iter().map(|s| *s.answered.lock()).collect();
    leaver.stop.cancel();
    eventually("p5's track to leave the record", || {
        let (mut conn, worker) = (conn.clone(), leaver_worker.clone());
        async move { listed_tracks(&mut conn, &worker).await.len() == 1 }
    })
    .await;
    // Each of the others is sent a server offer without p5's track (renegotiation), on the
    // workers that got it relayed as on p5's own.
    for (speaker, before) in speakers.iter().zip(&answered) {
        eventually(
            &format!("{} to renegotiate p5 away", speaker.id),
            || async { *speaker.answered.lock() > *before },
        )
        .await;
    }
    let emptier = workers.iter().find(|w| w.name == leaver_worker).unwrap();
    emptier
        .wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 1.0)
        .await;
    // Frontends place by the heartbeats: the late joiner goes where one says there is room.
    frontends[1]
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;
    let late = RoomSpeaker::join(&frontends[1], "sextet", "p6", 990.0).await;
    assert_eq!(
        worker_listing(&mut conn, &workers, "p6").await,
        leaver_worker
    );
    for speaker in &speakers {
        let heard = speaker.hears("p6").await;
        assert!(
            (heard - 990.0).abs() <= 10.0,
            "{} hears p6 at {heard} Hz",
            speaker.id
        );
    }
    for (j, tone) in tones.iter().enumerate().take(5) {
        let heard = late.hears(&format!("p{j}")).await;
        assert!((heard - tone).abs() <= 10.0, "p6 hears p{j} at {heard} Hz");
    }
    assert!(
        !late.heard.lock().contains_key("p5"),
        "p5 left before p6 came"
    );
    late.stop.cancel();
    for speaker in &speakers {
        speaker.stop.cancel();
    }
    println!(
        "six participants on three workers: the last joiner heard across workers after \
         {relayed_after:?}, everyone heard everyone after {heard_at:?} (test {:?})",
        started.elapsed()
    );
}

/// Step one of the relay: a hosting worker's tracks go into the room's record, only while
/// the record lists the worker, and every change is announced on the room's channel (what
/// the other hosting workers re-read the record on); an unchanged write announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_tracks_go_into_the_room_record_and_each_change_is_announced() {
    use futures::StreamExt;
    use remotemedia_webrtc::cluster::room_record::{self, Join, TracksWritten};
    use remotemedia_webrtc::cluster::Keys;
    use remotemedia_webrtc::room::MediaKind;
    use remotemedia_webrtc::room_relay::{RelayedCodec, RelayedTrack};

    let redis = RedisProcess::start();
    let (client, mut manager) = remotemedia_webrtc::cluster::connect(&redis.url(), None)
        .await
        .unwrap();
    let keys = Keys::new("rm:");
    room_record::join(&mut manager, &keys, "duo", Join::Place("worker-a"))
        .await
        .unwrap();
    room_record::join(&mut manager, &keys, "duo", Join::Spill("worker-b"))
        .await
        .unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(keys.room_tracks_channel("duo"))
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let track = RelayedTrack {
        publisher: "bob".into(),
        track_id: "mic".into(),
        kind: MediaKind::Audio,
        layers: vec![],
        producer: 0,
        codec: RelayedCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48_000,
            channels: 2,
            fmtp: String::new(),
        },
        extensions: vec![],
    };
    let written = room_record::set_tracks(
        &mut manager,
        &keys,
        "duo",
        "worker-b",
        std::slice::from_ref(&track),
    )
    .await
    .unwrap();
    assert_eq!(written, TracksWritten::Changed);
    let message = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "worker-b");
    assert_eq!(
        room_record::read(&mut manager, &keys, "duo").await.unwrap(),
        vec![
            ("worker-a".to_owned(), vec![]),
            ("worker-b".to_owned(), vec![track.clone()])
        ]
    );

    let again = room_record::set_tracks(
        &mut manager,
        &keys,
        "duo",
        "worker-b",
        std::slice::from_ref(&track),
    )
    .await
    .unwrap();
    assert_eq!(again, TracksWritten::Unchanged);
    let stranger = room_record::set_tracks(&mut manager, &keys, "duo", "worker-c", &[track])
        .await
        .unwrap();
    assert_eq!(stranger, TracksWritten::NotHosting);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), messages.next())
            .await
            .is_err(),
        "nothing changed: nothing announced"
    );
    assert_eq!(
        room_record::read(&mut manager, &keys, "duo")
            .await
            .unwrap()
            .len(),
        2
    );

    // Its publisher left: the list empties, and that is a change too.
    let gone = room_record::set_tracks(&mut manager, &keys, "duo", "worker-b", &[])
        .await
        .unwrap();
    assert_eq!(gone, TracksWritten::Changed);
    assert_eq!(
        room_record::read(&mut manager, &keys, "duo").await.unwrap()[1].1,
        vec![]
    );
}

/// The tracks `worker` lists in the record of room `sextet`.
async fn listed_tracks(
    conn: &mut redis::aio::MultiplexedConnection,
    worker: &str,
) -> Vec<serde_json::Value> {
    let field: Option<String> = redis::cmd("HGET")
        .arg("rm:room:sextet")
        .arg(format!("tracks:{worker}"))
        .query_async(conn)
        .await
        .unwrap();
    serde_json::from_str(field.as_deref().unwrap_or("[]")).unwrap()
}

/// The worker whose record entry lists `publisher`'s track (waits for it).
async fn worker_listing(
    conn: &mut redis::aio::MultiplexedConnection,
    workers: &[Node],
    publisher: &str,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        for worker in workers {
            let tracks = listed_tracks(conn, &worker.name).await;
            if tracks.iter().any(|t| t["publisher"] == publisher) {
                return worker.name.clone();
            }
        }
        assert!(Instant::now() < deadline, "no worker lists {publisher}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
