//! The binary: probes answer over HTTP, and SIGTERM during calls exits 0 within 3 s.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

struct ServerProcess {
    child: Child,
    grpc: u16,
    http: u16,
}

impl ServerProcess {
    fn start() -> Self {
        let (grpc, http) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
            .args(["--grpc-address", &format!("127.0.0.1:{grpc}")])
            .args(["--http-address", &format!("127.0.0.1:{http}")])
            .args(["--ice-ips", "127.0.0.1"])
            .arg("--manifest")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/loopback.yaml"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while http_get(http, "/readyz").is_none_or(|r| !r.starts_with("HTTP/1.0 200")) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, grpc, http }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn health_and_readiness_answer_over_http() {
    let server = ServerProcess::start();
    let health = http_get(server.http, "/healthz").unwrap();
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");
    let ready = http_get(server.http, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    let missing = http_get(server.http, "/nope").unwrap();
    assert!(missing.starts_with("HTTP/1.0 404"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_calls_exits_zero_within_three_seconds() {
    common::init_tracing();
    let mut server = ServerProcess::start();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let mut calls = Vec::new();
    for i in 0..2 {
        let (mut signaling, _) = SignalingClient::announce(&url, &format!("caller-{i}")).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        calls.push((signaling, peer));
    }
    let sending: Vec<_> = calls
        .iter()
        .map(|(_, peer)| peer.send_tone(440.0, 0.6, 20, 0.5))
        .collect();
    let tone = futures::future::join_all(sending);
    let pid = server.child.id().to_string();
    let signal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        Instant::now()
    };
    let (_, sent_at) = tokio::join!(tone, signal);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(3),
            "still running 3 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("exited {:?} after SIGTERM", sent_at.elapsed());
    assert_eq!(status.code(), Some(0));
    // Clients were told why their streams ended.
    for (mut signaling, peer) in calls {
        assert_eq!(
            signaling.expect_status().await.code(),
            tonic::Code::Unavailable
        );
        peer.close().await;
    }
}
