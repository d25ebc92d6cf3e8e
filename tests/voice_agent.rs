//! `examples/voice_agent.yaml` over a real call (its speech node given a keyword list, its
//! `url` a small HTTP server of the test's own on 127.0.0.1): the client says "front center"
//! (Debian's recorded `Front_Center.wav`); the turn's end is POSTed to the server, whose
//! answer ("You said front center.") comes back on the data channel and as speech on the
//! audio track.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use common::client::connect_with_data_channel;
use common::data_channel::json_messages;
use common::TestServer;
use parking_lot::Mutex;
use remotemedia_webrtc::media::rms;

const FRONT_CENTER: &str = "/usr/share/sounds/alsa/Front_Center.wav";

/// The agent: answers `{"text": "You said <the turn's text>."}`; keeps what it was sent.
async fn agent_server() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let posted = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/agent",
            axum::routing::post(
                |State(posted): State<Arc<Mutex<Vec<serde_json::Value>>>>,
                 Json(turn): Json<serde_json::Value>| async move {
                    let text = turn["text"].as_str().unwrap_or_default().to_owned();
                    posted.lock().push(turn);
                    Json(serde_json::json!({ "text": format!("You said {text}.") }))
                },
            ),
        )
        .with_state(Arc::clone(&posted));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, posted)
}

/// `examples/voice_agent.yaml` with a keyword list and the test's agent.
fn manifest(agent: SocketAddr) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/voice_agent.yaml")).unwrap();
    let lm = "      languageModel: /usr/share/pocketsphinx/model/en-us/en-us.lm.bin\n";
    let url = "      url: http://127.0.0.1:8000/agent\n";
    assert!(text.contains(lm) && text.contains(url));
    let text = text
        .replace(lm, "      keywords: [front center, rear left]\n")
        .replace(url, &format!("      url: http://{agent}/agent\n"));
    let path = std::env::temp_dir().join(format!("voice_agent_{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn front_center() -> Vec<f32> {
    let reader = hound::WavReader::open(FRONT_CENTER).expect("alsa-utils' Front_Center.wav");
    assert_eq!(reader.spec().sample_rate, 48_000);
    reader
        .into_samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32_768.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_turn_goes_to_the_agent_and_its_answer_is_spoken() {
    common::init_tracing();
    let (agent, posted) = agent_server().await;
    let manifest = manifest(agent);
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let (_signaling, mut peer, _channel) =
        connect_with_data_channel(&server.grpc_url(), "agent-client").await;
    let _ = std::fs::remove_file(&manifest);

    let mut speech = vec![0.0; 48 * 500];
    speech.extend(front_center());
    let spoken_until = Instant::now() + Duration::from_millis(500 + 1_430);
    speech.extend(vec![0.0; 48 * 2_000]);
    let received_before = peer.received.lock().samples.len();
    let (_, mut inbox) = tokio::sync::mpsc::channel(1);
    std::mem::swap(&mut inbox, &mut peer.messages);
    let read = json_messages(
        &mut inbox,
        Instant::now() + Duration::from_secs(15),
        |got| got.iter().any(|(schema, _, _)| schema == "http"),
    );
    let ((), messages) = tokio::join!(peer.send_samples(&speech, 20), read);
    let summary: Vec<String> = messages
        .iter()
        .map(|(schema, value, _)| format!("{schema}: {value}"))
        .collect();
    let (_, answer, answered_at) = messages
        .iter()
        .find(|(schema, _, _)| schema == "http")
        .unwrap_or_else(|| panic!("no answer from the agent: {summary:#?}"));
    assert_eq!(answer["text"], "You said front center.", "{summary:#?}");
    let turns = posted.lock().clone();
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0]["type"], "turn_end");

    // The answer is spoken: about a second of speech on the returned track.
    let heard = async {
        loop {
            let loud = {
                let received = peer.received.lock();
                received.samples[received_before..]
                    .chunks(960)
                    .filter(|w| rms(w) > 0.01)
                    .count()
            };
            if loud * 20 >= 600 {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let heard_at = tokio::time::timeout(Duration::from_secs(10), heard)
        .await
        .expect("the agent's answer was not spoken");
    println!(
        "agent answered {:?} after the phrase ended; 600 ms of its answer heard {:?} after that",
        answered_at.saturating_duration_since(spoken_until),
        heard_at.saturating_duration_since(*answered_at)
    );
    peer.close().await;
}
