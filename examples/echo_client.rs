//! Calls a running server with the tests' own client: announces over gRPC, offers to
//! `remotemedia-server`, sends a tone as Opus and checks the tone that comes back.
//!
//! ```sh
//! make run                                   # in one terminal
//! cargo run --example echo_client            # in another
//! cargo run --example echo_client -- http://127.0.0.1:50051 3   # server URL, seconds
//! ```
#![allow(clippy::unwrap_used)] // a demo: any failure ends it with the reason

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use remotemedia_webrtc::media::{dominant_frequency, rms_dbfs};

#[tokio::main]
async fn main() -> ExitCode {
    common::init_tracing();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let seconds: f32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let peer_id = format!("echo-client-{}", std::process::id());

    let (mut signaling, ack) = SignalingClient::announce(&url, &peer_id).await;
    println!("announced as {peer_id}: {ack}");
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    println!(
        "offer->answer {:.1} ms, offer->connected {:.1} ms",
        report.offer_to_answer.as_secs_f64() * 1000.0,
        report.offer_to_connected.as_secs_f64() * 1000.0
    );
    println!("sending {seconds} s of 440 Hz...");
    peer.send_tone(440.0, seconds, 20, 0.5).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let samples = peer.received.lock().samples.clone();
    peer.close().await;
    if samples.len() < 19_200 {
        eprintln!("only {} samples came back", samples.len());
        return ExitCode::FAILURE;
    }
    let steady = &samples[9_600..];
    let frequency = dominant_frequency(steady, 48_000);
    println!(
        "received {:.2} s of audio: {frequency:.1} Hz at {:.1} dBFS (sent 440 Hz at -9.0 dBFS)",
        samples.len() as f32 / 48_000.0,
        rms_dbfs(steady)
    );
    if (frequency - 440.0).abs() > 5.0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
