//! Calls a running server with the library's probe client (`webrtc_server probe` is the same
//! call): announces over gRPC, offers to `remotemedia-server`, sends a 440 Hz tone as Opus and
//! checks the tone that comes back.
//!
//! ```sh
//! make run                                   # in one terminal
//! cargo run --example echo_client            # in another
//! cargo run --example echo_client -- http://127.0.0.1:50051 3   # server URL, seconds
//! ```

use std::process::ExitCode;

use remotemedia_webrtc::client::{probe, ProbeOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let seconds: f32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let options = ProbeOptions {
        server,
        seconds,
        // The local address that routes to the server (127.0.0.1 for a local one).
        ice_ip: None,
        manifest: None,
        peer_id: format!("echo-client-{}", std::process::id()),
        token: None,
    };
    println!("sending {seconds} s of 440 Hz to {}...", options.server);
    match probe(&options).await {
        Ok(report) => {
            println!(
                "offer->answer {:.1} ms, offer->connected {:.1} ms",
                report.setup.answer.as_secs_f64() * 1000.0,
                report.setup.connected.as_secs_f64() * 1000.0
            );
            println!(
                "received {:.2} s of audio: {:.1} Hz at {:.1} dBFS (sent 440 Hz at -9.0 dBFS)",
                report.received_seconds, report.frequency, report.level_dbfs
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("echo_client: {err}");
            ExitCode::FAILURE
        }
    }
}
