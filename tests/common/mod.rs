//! Shared test harness: an in-process server on 127.0.0.1, a gRPC signaling client, and a
//! real WebRTC client peer (webrtc crate) on loopback UDP.
#![allow(dead_code)]

pub mod cdp;
pub mod client;
pub mod cluster;
pub mod data_channel;
pub mod dialect_server;
pub mod fake_kube;
pub mod fake_mic;
pub mod otlp;
pub mod pipeline;
pub mod relay;
pub mod repair;
pub mod room_speaker;
pub mod signaling;
pub mod tcp_proxy;
pub mod tls;
pub mod video;
pub mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use remotemedia_webrtc::config::Config;
use remotemedia_webrtc::server::Server;
use tokio::task::JoinHandle;

/// Generous bound for anything that should happen "soon" on a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this test's runtime.
pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub sessions: std::sync::Arc<remotemedia_webrtc::peer::SessionManager>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), remotemedia_webrtc::Error>>>,
}

impl TestServer {
    /// A loopback server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::local_test();
        tweak(&mut config);
        let server = Server::bind(&config).await.expect("server binds");
        let grpc = server.grpc_address().expect("grpc address");
        let http = server.http_address().expect("http address");
        let sessions = server
            .sessions()
            .expect("grpc mode has in-process sessions");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            http,
            sessions,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Graceful stop; waits for the server to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls `check` until it holds or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A plain HTTP/1.0 GET; returns the whole response (status line, headers, body).
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the HTTP listener");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    response
}

/// The value of one sample line (`name{labels} value`) of a Prometheus exposition.
pub fn metric_value(exposition: &str, sample: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

/// Runs `webrtc_server` with `args` (and no TLS or Redis settings from this environment);
/// returns its exit status and everything it printed. Fails the test if it is still
/// running after [`WAIT`]: it was expected to refuse to start.
pub fn run_until_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child =
        Command::new(option_env!("CARGO_BIN_EXE_webrtc_server").unwrap_or("webrtc_server"))
            .args(args)
            .env_remove("REMOTEMEDIA_TLS_CERT")
            .env_remove("REMOTEMEDIA_TLS_KEY")
            .env_remove("REMOTEMEDIA_REDIS_URL")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("webrtc_server starts");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for webrtc_server") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "webrtc_server {args:?} kept running: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}
