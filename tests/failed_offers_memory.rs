//! Memory stays flat over 1,000 failed offers: against a `webrtc_server` process, offers
//! that fail before a session exists (garbage SDP), offers whose peer connection fails while
//! it is set up (no DTLS fingerprint), and audio-less offers whose session is created and
//! then never connects (replaced by the next offer, or closed by the connect timeout). The
//! RSS after all of them is within 10 % of the RSS after the first 100, and no session is
//! left.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{ClientOptions, ClientPeer};
use common::cluster::{free_tcp_port, try_http_get};
use common::signaling::{SignalingClient, SERVER};
use common::{metric_value, WAIT};
use remotemedia_webrtc::proto::signaling::signaling_response::Response as Resp;

/// A `webrtc_server --mode grpc` process, killed on drop.
struct ServerProcess {
    child: Child,
    grpc: String,
    http: std::net::SocketAddr,
}

impl ServerProcess {
    async fn start() -> Self {
        let grpc = format!("127.0.0.1:{}", free_tcp_port());
        let http: std::net::SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        let child = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
            .args(["--mode", "grpc", "--grpc-address", &grpc])
            .args([
                "--http-address",
                &http.to_string(),
                "--ice-ips",
                "127.0.0.1",
            ])
            // Sessions that never connect go quickly, so the last ones do not linger.
            .args(["--connect-timeout", "2s"])
            // A thousand offers in a few seconds is a flood to the signaling rate limit (its
            // own test): off, so every offer reaches the session host this test measures.
            .args(["--signaling-rate", "0"])
            .env("RUST_LOG", "error")
            .env_remove("REMOTEMEDIA_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("webrtc_server starts");
        let deadline = Instant::now() + WAIT * 3;
        while try_http_get(http, "/healthz").await.is_none() {
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            grpc: format!("http://{grpc}"),
            http,
        }
    }

    /// Resident set size, from /proc/<pid>/status.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn metric(&self, sample: &str) -> f64 {
        let text = try_http_get(self.http, "/metrics").await.unwrap();
        metric_value(&text, sample).unwrap()
    }

    /// Waits for every session to be gone, then gives the RSS.
    async fn settled_rss(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        while self.metric("remotemedia_worker_sessions_active").await != 0.0 {
            assert!(Instant::now() < deadline, "sessions are left");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.rss_kib()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Offers `sdp` to the server; the error code, or `None` when it answered.
async fn offer(signaling: &mut SignalingClient, sdp: &str) -> Option<u32> {
    let id = signaling.offer(SERVER, sdp).await;
    let (outcome, _) = signaling
        .recv_until(|r| match &r.response {
            Some(Resp::Error(err)) if r.request_id == id => Some(Some(err.code)),
            Some(Resp::Ack(_)) if r.request_id == id => Some(None),
            _ => None,
        })
        .await;
    outcome
}

/// What the offers got, by kind.
#[derive(Debug, Default)]
struct Outcomes {
    garbage_refused: usize,
    no_fingerprint_refused: usize,
    no_fingerprint_answered: usize,
    no_audio_answered: usize,
}

/// Offers number `range` in turn: two garbage SDPs, one without a fingerprint, one without
/// audio, and so on. Garbage is INVALID_ARGUMENT; an answered offer's session never connects
/// and is replaced by the next offer (or closed by the connect timeout).
async fn offers(
    signaling: &mut SignalingClient,
    range: std::ops::Range<usize>,
    [garbage, no_fingerprint, no_audio]: [&str; 3],
    outcomes: &mut Outcomes,
) {
    for i in range {
        match i % 4 {
            0 | 1 => {
                let code = offer(signaling, garbage).await;
                assert_eq!(code, Some(tonic::Code::InvalidArgument as u32), "offer {i}");
                outcomes.garbage_refused += 1;
            }
            2 => match offer(signaling, no_fingerprint).await {
                Some(_) => outcomes.no_fingerprint_refused += 1,
                None => outcomes.no_fingerprint_answered += 1,
            },
            _ => {
                assert_eq!(offer(signaling, no_audio).await, None, "offer {i}");
                outcomes.no_audio_answered += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_a_thousand_failed_offers() {
    common::init_tracing();
    let server = ServerProcess::start().await;
    // A real client's offer without audio (a data channel only), never followed by ICE.
    let client = ClientPeer::new(ClientOptions {
        audio: false,
        data: true,
    })
    .await;
    let no_audio = client.offer().await;
    let no_fingerprint: String = no_audio
        .lines()
        .filter(|line| !line.starts_with("a=fingerprint:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    let garbage = "v=0\r\nthis is not an SDP\r\n";

    let (mut signaling, _) = SignalingClient::announce(&server.grpc, "prober").await;
    let kinds = [garbage, no_fingerprint.as_str(), no_audio.as_str()];
    let mut outcomes = Outcomes::default();
    offers(&mut signaling, 0..100, kinds, &mut outcomes).await;
    let after_100 = server.settled_rss().await;
    offers(&mut signaling, 100..1_000, kinds, &mut outcomes).await;
    let after_1000 = server.settled_rss().await;

    println!(
        "RSS after 100 failed offers {after_100} KiB, after 1,000 {after_1000} KiB \
         ({:+.1} %); outcomes {outcomes:?}",
        (after_1000 as f64 / after_100 as f64 - 1.0) * 100.0
    );
    assert_eq!(outcomes.garbage_refused, 500, "{outcomes:?}");
    assert_eq!(
        outcomes.no_fingerprint_refused + outcomes.no_fingerprint_answered,
        250
    );
    assert_eq!(outcomes.no_audio_answered, 250, "{outcomes:?}");
    assert!(
        after_1000 as f64 <= after_100 as f64 * 1.10,
        "RSS grew from {after_100} KiB to {after_1000} KiB"
    );
    let created = server.metric("remotemedia_worker_sessions_total").await;
    assert!(created >= 250.0, "only {created} sessions were created");
    client.close().await;
}
