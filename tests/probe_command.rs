//! `webrtc_server probe`, the image's own smoke test (the chart's `helm test` Pod): one echo
//! call; exit 0 only when the 440 Hz tone comes back.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::Output;

use common::TestServer;

async fn probe(server: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["probe", "--server", server, "--seconds", "1.5"])
        .env_remove("REMOTEMEDIA_REDIS_URL")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_passes_against_an_echoing_server() {
    let server = TestServer::start().await;
    let output = probe(&server.grpc_url()).await;
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("echoed 44"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_fails_when_silence_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("mute.yaml");
    std::fs::write(
        &manifest,
        "version: v1\nmetadata:\n  name: mute\nnodes:\n  - id: mute\n    node_type: GainNode\n    \
         params: {db: -120}\n    is_streaming: true\nconnections: []\n",
    )
    .unwrap();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest)).await;
    let output = probe(&server.grpc_url()).await;
    let text = text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("silence"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_fails_when_nothing_listens() {
    let port = common::cluster::free_tcp_port();
    let output = probe(&format!("http://127.0.0.1:{port}")).await;
    let text = text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("cannot reach the signaling server"), "{text}");
}
