//! A local cluster of real processes for the cluster tests: a private `redis-server` on a free
//! port, and `webrtc_server` frontends, workers and controllers, each its own process (so a
//! test can kill -9 one). Everything binds 127.0.0.1; ICE gathers on loopback only.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;

/// Cluster tests start several processes each: run them one at a time, so 2 cores are not
/// shared by a dozen servers and the figures they print mean something.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A free TCP port on 127.0.0.1 (bound, then released for the process to take).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remotemedia-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log directory");
    dir
}

/// A private Redis, killed on drop.
pub struct RedisProcess {
    pub port: u16,
    /// Arguments after `--bind` and the persistence switches; default `--port <port>`.
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisProcess {
    pub fn start() -> Self {
        Self::start_with(|port| vec!["--port".into(), port.to_string()])
    }

    /// A Redis whose listening arguments `args` gives for its free port (`--requirepass`,
    /// `--port 0 --tls-port <port> ...`).
    pub fn start_with(args: impl FnOnce(u16) -> Vec<String>) -> Self {
        let port = free_tcp_port();
        let mut redis = Self {
            port,
            args: args(port),
            child: None,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (make deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills Redis (all state is lost) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `webrtc_server` process, killed on drop.
pub struct Node {
    pub name: String,
    /// gRPC signaling (frontend) or internal API (worker).
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `webrtc_server --mode <mode>` with `args`, and waits for `/healthz`.
    pub async fn start(name: &str, mode: &str, redis_url: &str, args: &[&str]) -> Self {
        Self::start_with_env(name, mode, redis_url, args, &[]).await
    }

    /// [`Node::start`] with extra environment variables (e.g. `OTEL_*`); the test's own
    /// `OTEL_*` variables are never passed on.
    pub async fn start_with_env(
        name: &str,
        mode: &str,
        redis_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let grpc: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = log_dir().join(format!("{n:03}-{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let log_out = log_file.try_clone().expect("log file");
        let mut command =
            Command::new(option_env!("CARGO_BIN_EXE_webrtc_server").unwrap_or("webrtc_server"));
        command
            .args(["--mode", mode, "--redis-url", redis_url])
            .args(["--grpc-address", &grpc.to_string()])
            .args(["--http-address", &http.to_string()])
            .args(["--ice-ips", "127.0.0.1"])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("REMOTEMEDIA_REDIS_URL")
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("OTEL_")) {
            command.env_remove(key);
        }
        let child = command
            .envs(env.iter().copied())
            .stdout(log_out)
            .stderr(log_file)
            .spawn()
            .expect("webrtc_server starts");
        let node = Self {
            name: name.to_owned(),
            grpc,
            http,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + WAIT * 3;
        while try_http_get(http, "/healthz").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "{name} did not come up; its log:\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    /// A worker with its own UDP port, id `name`.
    pub async fn worker(name: &str, redis_url: &str, extra: &[&str]) -> Self {
        Self::worker_with_env(name, redis_url, extra, &[]).await
    }

    /// [`Node::worker`] with extra environment variables.
    pub async fn worker_with_env(
        name: &str,
        redis_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let udp = free_udp_port().to_string();
        let mut args = vec!["--worker-id", name, "--udp-port", udp.as_str()];
        args.extend_from_slice(extra);
        Self::start_with_env(name, "worker", redis_url, &args, env).await
    }

    /// Waits until the process has exited (after [`Node::sigterm`]).
    pub async fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.has_exited() {
            assert!(
                Instant::now() < deadline,
                "{} did not exit; its log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no cleanup at all, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a graceful stop (a worker drains).
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Whether the process has exited (reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(Child::try_wait),
            Some(Ok(Some(_))) | None
        )
    }

    /// `/metrics` of this node.
    pub async fn metrics(&self) -> String {
        try_http_get(self.http, "/metrics")
            .await
            .unwrap_or_default()
    }

    /// The value of this node's metric `sample` (0 when it is not exported or the node does
    /// not answer).
    pub async fn metric(&self, sample: &str) -> f64 {
        super::metric_value(&self.metrics().await, sample).unwrap_or(0.0)
    }

    /// Server sessions alive on this node (`remotemedia_worker_sessions_active`).
    pub async fn sessions_active(&self) -> f64 {
        self.metric("remotemedia_worker_sessions_active").await
    }

    /// Waits until this node's metric `sample` satisfies `check` (a missing sample reads
    /// -1); returns its value.
    pub async fn wait_metric(
        &self,
        sample: &str,
        within: Duration,
        check: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = super::metric_value(&self.metrics().await, sample).unwrap_or(-1.0);
            if check(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {sample} is {value} after {within:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A GET that returns `None` instead of failing when nothing listens.
pub async fn try_http_get(address: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}
