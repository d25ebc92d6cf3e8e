//! A spanning room's lead (#16): its first hosting worker computes the active speakers from
//! every participant's level and runs the room pipeline, fed by the relayed audio, once for
//! the room; the other workers pass its speakers and pipeline data on. Real processes: a
//! private Redis, a frontend with `--room-span-workers`, two media workers with `--capacity
//! 2`, a relay socket each (`--insecure-relay`) and the room pipeline `vad.yaml`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::cluster::{free_udp_port, one_at_a_time, Node, RedisProcess};
use common::room_speaker::{recorded_speech, RoomSpeaker, Voice};
use common::{eventually, WAIT};
use remotemedia_webrtc::media::band_energy_ratio;

/// The room's track, as its msid names it.
const ROOM: &str = "remotemedia-room";
/// One second of 48 kHz audio.
const SECOND: usize = 48_000;

/// alice and bob fill the room's first worker; carol spills onto the second and speaks a
/// recorded voice. vad.yaml's audio out is its input (the room's mix) and it reports speech
/// as `{"event":"speech_start"}`: carol's voice reaches it only relayed and decoded on the
/// lead, and its report reaches carol only through the lead's messages. The speaker list
/// is the same on both workers and names participants of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lead_runs_the_rooms_pipeline_on_everyones_audio_and_tells_the_other_worker() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let started = Instant::now();
    let redis = RedisProcess::start();
    let url = redis.url();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let examples = examples.to_str().unwrap();
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let relay = free_udp_port().to_string();
        let args = [
            "--capacity",
            "2",
            "--relay-port",
            relay.as_str(),
            "--insecure-relay",
            "--manifest-dir",
            examples,
            "--room-manifest",
            "vad",
        ];
        workers.push(Node::worker(name, &url, &args).await);
    }
    let frontend = Node::start("frontend-1", "frontend", &url, &["--room-span-workers"]).await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 2.0)
        .await;

    let alice = RoomSpeaker::join(&frontend, "choir", "alice", 440.0).await;
    let bob = RoomSpeaker::join(&frontend, "choir", "bob", 660.0).await;
    let metadata = HashMap::from([("room".to_owned(), "choir".to_owned())]);
    let voice = Voice::Recording(Arc::new(recorded_speech()));
    let carol = RoomSpeaker::join_with(&frontend, "carol", metadata, voice).await;
    let mut sessions = Vec::new();
    for worker in &workers {
        sessions.push(worker.metric("remotemedia_worker_sessions_active").await);
    }
    let (lead, other) = match sessions.as_slice() {
        [a, b] if *a == 2.0 && *b == 1.0 => (&workers[0], &workers[1]),
        [a, b] if *a == 1.0 && *b == 2.0 => (&workers[1], &workers[0]),
        other => panic!("alice and bob on one worker, carol on the other: {other:?}"),
    };

    // One pipeline for the room, on the first worker (the one alice placed the room on).
    eventually("the lead to run the room's pipeline", || async {
        lead.metric("remotemedia_room_pipelines_running").await == 1.0
    })
    .await;
    assert_eq!(
        other.metric("remotemedia_room_pipelines_running").await,
        0.0,
        "the other worker runs none"
    );

    // carol, on the other worker, hears the lead's mix of alice and bob (relayed).
    eventually("carol to hear the room's track", || async {
        carol
            .heard
            .lock()
            .get(ROOM)
            .is_some_and(|s| s.len() >= 2 * SECOND)
    })
    .await;
    let mix = {
        let heard = carol.heard.lock();
        let samples = &heard[ROOM];
        samples[samples.len() - SECOND..].to_vec()
    };
    let (a, b) = (
        band_energy_ratio(&mix, 48_000, 420.0, 460.0),
        band_energy_ratio(&mix, 48_000, 640.0, 680.0),
    );
    assert!(
        a > 0.1 && b > 0.1,
        "carol hears the mix of alice ({a:.2}) and bob ({b:.2})"
    );

    // carol's voice, relayed to the lead and decoded into its mix, is speech to the VAD,
    // and its report reaches everyone: alice and bob on the lead, carol on the other.
    for p in [&alice, &bob, &carol] {
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

    // One speaker order, from the lead, naming the participants of both workers.
    for p in [&alice, &bob, &carol] {
        eventually(
            &format!("{} told speakers of both workers", p.id),
            || async {
                p.speakers().is_some_and(|list| {
                    list.iter().any(|s| s == "carol")
                        && list.iter().any(|s| s == "alice" || s == "bob")
                })
            },
        )
        .await;
    }
    let lists: Vec<_> = [&alice, &bob, &carol]
        .iter()
        .map(|p| {
            p.room_messages
                .lock()
                .iter()
                .filter(|m| m["type"] == "active_speakers")
                .count()
        })
        .collect();
    println!("active speaker lists told (alice, bob, carol): {lists:?}");

    // The lead's participants leave: the room's record keeps only the other worker, which
    // leads now and starts the pipeline afresh (the old one's state is gone).
    alice.leave();
    bob.leave();
    eventually("the other worker to lead and run the pipeline", || async {
        other.metric("remotemedia_room_pipelines_running").await == 1.0
            && lead.metric("remotemedia_room_pipelines_running").await == 0.0
    })
    .await;
    carol.forget_heard();
    eventually("carol to hear the new lead's track", || async {
        carol
            .heard
            .lock()
            .get(ROOM)
            .is_some_and(|s| s.len() >= SECOND / 2)
    })
    .await;
    carol.leave();
    eventually("no pipeline left", || async {
        other.metric("remotemedia_room_pipelines_running").await == 0.0
    })
    .await;
    println!("a spanning room's lead: {:?}", started.elapsed());
}
