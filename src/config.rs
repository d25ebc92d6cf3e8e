//! Command-line flags and their environment variables (DESIGN.md §1).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which role this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Signaling, media worker and pipelines in one process, state in memory.
    Grpc,
    /// Joins an external JSON-RPC WebSocket signaling server as a peer and answers offers.
    Websocket,
    /// Stateless signaling of a cluster: state in Redis, server sessions on media workers.
    Frontend,
    /// Server peers and pipelines of a cluster, behind the internal worker API.
    Worker,
    /// Publishes the cluster's placement table from worker heartbeats (or pods).
    Controller,
}

impl Mode {
    /// The role's name as the flag spells it (`service.name` is `remotemedia-<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Websocket => "websocket",
            Self::Frontend => "frontend",
            Self::Worker => "worker",
            Self::Controller => "controller",
        }
    }
}

/// How log lines are written on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the `trace_id` and `span_id` of the span it was logged
    /// in, so logs join traces.
    Json,
}

/// Where the controller learns which workers exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Discovery {
    /// Worker heartbeats in Redis alone (a cluster of plain processes).
    Redis,
    /// Worker Pods from the Kubernetes API, joined with their heartbeats.
    Kubernetes,
}

/// `webrtc_server` flags. Every flag also reads an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webrtc_server",
    version,
    about = "WebRTC media server for audio pipelines"
)]
pub struct Config {
    /// Role of this process.
    #[arg(short, long, env = "WEBRTC_MODE", value_enum, default_value = "grpc")]
    pub mode: Mode,

    /// Address of the gRPC signaling service; in `worker` mode, of the internal worker API
    /// (default 127.0.0.1:50052 there: internal, so never on every interface unless asked;
    /// the Helm chart passes the pod IP).
    #[arg(long, env = "GRPC_SIGNALING_ADDRESS", default_value = "0.0.0.0:50051")]
    pub grpc_address: SocketAddr,

    /// Address of the HTTP listener (/healthz, /readyz, /metrics; /ws and the demo page / in
    /// `grpc` and `frontend` mode). Default 127.0.0.1:8080 in `worker` and `controller` mode,
    /// where it serves only probes and metrics; 0.0.0.0:8081 in `websocket` mode, so a
    /// signaling server on this host keeps 8080.
    #[arg(long, env = "REMOTEMEDIA_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    pub http_address: SocketAddr,

    /// Pipeline manifest (YAML or JSON) every server session runs; none means loopback.
    #[arg(long, env = "WEBRTC_PIPELINE_MANIFEST")]
    pub manifest: Option<PathBuf>,

    /// Directory of further manifests (`*.yaml|*.yml|*.json`); a client picks one by file stem
    /// with announce metadata `manifest=<name>`.
    #[arg(long, env = "REMOTEMEDIA_MANIFEST_DIR")]
    pub manifest_dir: Option<PathBuf>,

    /// Redis holding the peer registry, pending offers and notification streams, shared by
    /// every replica; none: state in memory (one process). `rediss://` for TLS; a password
    /// as `redis://:password@host:port` (or `user:password@`), never logged.
    #[arg(long, env = "REMOTEMEDIA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM CA bundle that verifies a `rediss://` server (a private CA); default: the
    /// system's roots.
    #[arg(long, env = "REMOTEMEDIA_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Prefix of every Redis key, so deployments can share a Redis.
    #[arg(long, env = "REMOTEMEDIA_REDIS_PREFIX", default_value = "rm:")]
    pub redis_prefix: String,
    /// Browser origins allowed to open `/ws` (comma-separated `scheme://host[:port]`); empty:
    /// same-origin pages and non-browser clients only; `*`: any origin.
    #[arg(long, env = "REMOTEMEDIA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// `websocket` mode: the signaling server to join; default `ws://localhost:8080`, as in
    /// the original (our own server's endpoint is `ws://host:port/ws`).
    #[arg(long, env = "WEBRTC_SIGNALING_URL")]
    pub signaling_url: Option<String>,

    /// `websocket` mode: the peer id to announce; default `remotemedia-<hostname>`.
    #[arg(long, env = "REMOTEMEDIA_PEER_ID")]
    pub peer_id: Option<String>,

    /// `websocket` mode: the signaling server's JSON-RPC dialect (`remotemedia`, the
    /// original's `original` or `node`); `auto` tries `peer.announce`, then `announce`.
    #[arg(
        long,
        env = "REMOTEMEDIA_SIGNALING_DIALECT",
        value_enum,
        default_value = "auto"
    )]
    pub signaling_dialect: crate::signaling::dialect::DialectChoice,

    /// Log lines as `text` or `json` (with trace and span ids).
    #[arg(
        long,
        env = "REMOTEMEDIA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub cluster: ClusterOptions,

    #[command(flatten)]
    pub media: MediaOptions,

    #[command(flatten)]
    pub limits: LimitOptions,

    #[command(flatten)]
    pub auth: AuthOptions,

    #[command(flatten)]
    pub turn: TurnOptions,

    #[command(flatten)]
    pub tls: TlsOptions,

    /// A one-shot command instead of a server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Client authentication.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthOptions {
    /// Shared HS256 secret: every signaling stream and WebSocket then needs a JWT whose `sub`
    /// is the peer id it announces. Unset: no authentication.
    #[arg(long, env = "REMOTEMEDIA_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "auth_secret_file")]
    pub auth_secret: Option<Secret>,

    /// The same secret read from a file (a mounted Kubernetes Secret); surrounding whitespace
    /// is ignored.
    #[arg(long, env = "REMOTEMEDIA_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// With `--auth-secret`: only a token with a `room` claim may join a room (that one);
    /// false: a token without one may join any room. Either way a token's `room` claim is
    /// the only room it joins.
    #[arg(long, env = "REMOTEMEDIA_REQUIRE_ROOM_CLAIM", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_room_claim: bool,
}

/// TLS on the listeners clients reach.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsOptions {
    /// `grpc` and `frontend`: PEM certificate chain (leaf first) of the gRPC signaling and
    /// HTTP listeners; with `--tls-key` they serve only TLS (gRPC over TLS, HTTPS, WSS).
    #[arg(long, env = "REMOTEMEDIA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "REMOTEMEDIA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for a change (a renewal), which is
    /// then served to new connections without a restart; 0 never checks.
    #[arg(long, env = "REMOTEMEDIA_TLS_RELOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
}

impl TlsOptions {
    /// The certificate and key of the client-facing listeners, if TLS is on.
    pub fn files(&self) -> Option<crate::tls::CertificateFiles> {
        crate::tls::CertificateFiles::from_flags(self.tls_cert.as_deref(), self.tls_key.as_deref())
    }
}

/// TURN for clients that cannot reach the media ports directly.
#[derive(Debug, Clone, clap::Args)]
pub struct TurnOptions {
    /// The `static-auth-secret` of your TURN servers (coturn `use-auth-secret`): every announce
    /// ack then carries short-lived credentials for `--turn-uris`.
    #[arg(long, env = "REMOTEMEDIA_TURN_SECRET", hide_env_values = true, value_parser = parse_secret, conflicts_with = "turn_secret_file")]
    pub turn_secret: Option<Secret>,

    /// The same secret read from a file.
    #[arg(long, env = "REMOTEMEDIA_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,

    /// TURN URLs handed to clients with the credentials (comma-separated, e.g.
    /// `turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349`).
    #[arg(long, env = "REMOTEMEDIA_TURN_URIS", value_delimiter = ',')]
    pub turn_uris: Vec<String>,

    /// How long handed-out TURN credentials stay valid.
    #[arg(long, env = "REMOTEMEDIA_TURN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub turn_ttl: Duration,
}

impl TurnOptions {
    /// The secret, once it is known that URLs go with it.
    ///
    /// # Errors
    /// The secret file cannot be read, the secret is empty, or a secret has no `--turn-uris`.
    pub fn secret(&self) -> Result<Option<Secret>, std::io::Error> {
        let secret = read_secret(
            self.turn_secret.as_ref(),
            self.turn_secret_file.as_deref(),
            "the TURN secret",
        )?;
        if secret.is_some() && non_empty(&self.turn_uris).next().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--turn-secret needs --turn-uris: the URLs clients use the credentials with",
            ));
        }
        Ok(secret)
    }
}

impl AuthOptions {
    /// The secret tokens are checked with, if authentication is on.
    ///
    /// # Errors
    /// The secret file cannot be read, the secret is empty, or `--require-room-claim` is
    /// given without a secret.
    pub fn secret(&self) -> Result<Option<Secret>, std::io::Error> {
        let secret = read_secret(
            self.auth_secret.as_ref(),
            self.auth_secret_file.as_deref(),
            "the auth secret",
        )?;
        if secret.is_none() && self.require_room_claim {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--require-room-claim needs --auth-secret: room claims come in tokens",
            ));
        }
        Ok(secret)
    }
}

impl ClusterOptions {
    /// The certificate and key the worker API serves TLS with, if set.
    pub fn worker_tls_files(&self) -> Option<crate::tls::CertificateFiles> {
        crate::tls::CertificateFiles::from_flags(
            self.worker_tls_cert.as_deref(),
            self.worker_tls_key.as_deref(),
        )
    }

    /// The worker API token, if one is set.
    ///
    /// # Errors
    /// The token file cannot be read, or the token is empty.
    pub fn worker_token(&self) -> Result<Option<Secret>, std::io::Error> {
        read_secret(
            self.worker_token.as_ref(),
            self.worker_token_file.as_deref(),
            "the worker token",
        )
    }
}

/// A secret from its flag or else its file (trimmed); never empty.
fn read_secret(
    value: Option<&Secret>,
    file: Option<&std::path::Path>,
    what: &str,
) -> Result<Option<Secret>, std::io::Error> {
    let secret = match (value, file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
            })?;
            Secret(text.trim().to_owned())
        }
        (None, None) => return Ok(None),
    };
    if secret.0.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} is empty"),
        ));
    }
    Ok(Some(secret))
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret(text.to_owned()))
}

/// `webrtc_server token`: prints a client token (testing, scripts).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webrtc_server token",
    about = "Print a signed client token (JWT, HS256)"
)]
pub struct TokenCommand {
    /// The peer id the token may announce (`sub`).
    #[arg(long)]
    pub peer_id: String,
    /// Seconds the token is valid.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Optional `room` claim.
    #[arg(long)]
    pub room: Option<String>,
    /// Optional `manifest` claim: the only manifest this peer's sessions may run.
    #[arg(long)]
    pub manifest: Option<String>,
    /// Optional `room_manifest` claim: the only room pipeline this peer may ask its room to
    /// run (announce metadata `room_manifest`).
    #[arg(long)]
    pub room_manifest: Option<String>,
    #[command(flatten)]
    pub auth: AuthOptions,
}

/// One-shot commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Asks the worker on this host to drain (take no new sessions) and prints its active
    /// sessions; the worker keeps running. A pod's preStop hook runs it.
    Drain {
        /// The worker's internal API; default: the `--grpc-address` of this environment
        /// (127.0.0.1 when it listens on every address; 50052 in `--mode worker`).
        #[arg(long)]
        worker_api: Option<String>,
    },
    /// Makes one echo call against a server and exits non-zero unless the 440 Hz tone it
    /// sends comes back (the chart's `helm test` Pod runs it).
    Probe {
        /// The gRPC signaling URL.
        #[arg(
            long,
            env = "REMOTEMEDIA_PROBE_SERVER",
            default_value = "http://127.0.0.1:50051"
        )]
        server: String,
        /// Seconds of tone to send.
        #[arg(long, default_value_t = 2.0)]
        seconds: f32,
        /// The address the probe gathers ICE candidates on; default: the one that routes to
        /// the server.
        #[arg(long, env = "REMOTEMEDIA_PROBE_ICE_IP")]
        ice_ip: Option<std::net::IpAddr>,
        /// The pipeline manifest to ask for (announce metadata); default: the server's.
        #[arg(long = "probe-manifest")]
        manifest: Option<String>,
    },
}

/// Options of the cluster roles (`frontend`, `worker`, `controller`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterOptions {
    /// `worker`: this worker's id in Redis; default: the host name (the pod name in Kubernetes).
    #[arg(long, env = "REMOTEMEDIA_WORKER_ID")]
    pub worker_id: Option<String>,

    /// `worker`: the address frontends reach the internal API at (`host:port`); default: the
    /// `--grpc-address` when it names a host, else the host name with its port.
    #[arg(long, env = "REMOTEMEDIA_WORKER_ADDRESS")]
    pub worker_address: Option<String>,

    /// `worker`, `frontend` and `controller --autoscale`: a shared token the worker API requires
    /// of every call (`authorization: Bearer`), so only frontends create sessions (and only
    /// the controller drains and undrains). Unset: the API is open
    /// (keep it on a private network).
    #[arg(long, env = "REMOTEMEDIA_WORKER_TOKEN", hide_env_values = true, value_parser = parse_secret, conflicts_with = "worker_token_file")]
    pub worker_token: Option<Secret>,

    /// The same token read from a file (a mounted Kubernetes Secret).
    #[arg(long, env = "REMOTEMEDIA_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,

    /// `worker`: PEM certificate chain the internal API serves TLS with (with
    /// `--worker-tls-key`; reloaded like `--tls-cert`); frontends then need `--worker-ca`.
    #[arg(long, env = "REMOTEMEDIA_WORKER_TLS_CERT", requires = "worker_tls_key")]
    pub worker_tls_cert: Option<PathBuf>,

    /// `worker`: UDP port of the relay socket that carries the media of rooms spanning workers
    /// (#16; its own socket, not the ICE port), bound on the `--grpc-address` IP; its address
    /// (the advertised worker address's host) goes into the heartbeat. Unset: no relay.
    #[arg(long, env = "REMOTEMEDIA_RELAY_PORT")]
    pub relay_port: Option<u16>,

    /// `worker`: allow `--relay-port` without `--worker-tls-cert`, though the relay links' SRTP
    /// keys then cross the worker API in the clear: for tests only.
    #[arg(long, env = "REMOTEMEDIA_INSECURE_RELAY")]
    pub insecure_relay: bool,

    /// `worker`: the PEM private key of `--worker-tls-cert`.
    #[arg(long, env = "REMOTEMEDIA_WORKER_TLS_KEY", requires = "worker_tls_cert")]
    pub worker_tls_key: Option<PathBuf>,

    /// `frontend`, `drain` and `controller --autoscale`: PEM CA bundle that verifies the
    /// workers' certificates; set: the worker API is dialled over TLS (`https://`).
    #[arg(long, env = "REMOTEMEDIA_WORKER_CA")]
    pub worker_ca: Option<PathBuf>,

    /// With `--worker-ca`: the name every worker's certificate is checked against (one
    /// certificate for all workers, e.g. the worker Service's DNS name); default: the host of
    /// each worker's advertised address.
    #[arg(long, env = "REMOTEMEDIA_WORKER_TLS_NAME", requires = "worker_ca")]
    pub worker_tls_name: Option<String>,

    /// `frontend`: longest a call to a media worker may take (a create answers without
    /// waiting for ICE, in well under a second). A create that takes longer is retried on
    /// another worker, and the slow one is told to close what it made.
    #[arg(long, env = "REMOTEMEDIA_WORKER_CALL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub worker_call_timeout: Duration,

    /// `frontend`, experimental: a room whose worker is full or draining spills onto another
    /// worker (#16) instead of refusing the newcomer; workers with `--relay-port` relay its
    /// media to each other (audio and single-stream video; no keyframe requests or NACKs
    /// over the relay, no simulcast yet): do not enable in production.
    #[arg(long, env = "REMOTEMEDIA_ROOM_SPAN_WORKERS")]
    pub room_span_workers: bool,

    /// `worker`: server sessions this worker carries at most; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "REMOTEMEDIA_CAPACITY", default_value_t = 100)]
    pub capacity: usize,

    /// `worker`: after SIGTERM (or a drain request) the worker takes no new sessions and exits
    /// when its sessions end or this long has passed. `controller --autoscale`: how long a
    /// worker drained for a scale-down may keep calls before its pod is evicted anyway.
    #[arg(long, env = "REMOTEMEDIA_DRAIN_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// `controller`: where workers are discovered.
    #[arg(
        long,
        env = "REMOTEMEDIA_DISCOVERY",
        value_enum,
        default_value = "redis"
    )]
    pub discovery: Discovery,

    /// `controller --discovery kubernetes`: namespace of the worker Pods; default: the
    /// controller's own.
    #[arg(long, env = "REMOTEMEDIA_NAMESPACE")]
    pub namespace: Option<String>,

    /// `controller --discovery kubernetes`: set the worker Deployment's replicas from the
    /// sessions (scale down one drained worker at a time).
    #[arg(long, env = "REMOTEMEDIA_AUTOSCALE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub autoscale: bool,

    /// `--autoscale`: the worker Deployment.
    #[arg(
        long,
        env = "REMOTEMEDIA_WORKER_DEPLOYMENT",
        default_value = "remotemedia-worker"
    )]
    pub worker_deployment: String,

    /// `--autoscale`: sessions one worker should carry.
    #[arg(long, env = "REMOTEMEDIA_SESSIONS_PER_WORKER", default_value_t = 50)]
    pub sessions_per_worker: u32,

    /// `--autoscale`: fewest workers.
    #[arg(long, env = "REMOTEMEDIA_MIN_WORKERS", default_value_t = 1)]
    pub min_workers: u32,

    /// `--autoscale`: most workers.
    #[arg(long, env = "REMOTEMEDIA_MAX_WORKERS", default_value_t = 10)]
    pub max_workers: u32,

    /// `--autoscale`: least time between a change of replicas and a scale-down.
    #[arg(long, env = "REMOTEMEDIA_SCALE_DOWN_COOLDOWN", default_value = "120s", value_parser = humantime::parse_duration)]
    pub scale_down_cooldown: Duration,

    /// `controller --discovery kubernetes`: label selector of the worker Pods.
    #[arg(
        long,
        env = "REMOTEMEDIA_WORKER_SELECTOR",
        default_value = "app.kubernetes.io/component=worker"
    )]
    pub worker_selector: String,

    /// `controller --discovery kubernetes`: the Lease the replicas elect a leader with (one
    /// per Helm release: the chart passes `<release>-controller`).
    #[arg(
        long,
        env = "REMOTEMEDIA_LEASE_NAME",
        default_value = "remotemedia-controller"
    )]
    pub lease_name: String,

    /// `controller --discovery kubernetes`: a Lease not renewed this long may be taken over.
    #[arg(long, env = "REMOTEMEDIA_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// `controller --discovery kubernetes`: the leader stops leading when it could not renew
    /// the Lease for this long.
    #[arg(long, env = "REMOTEMEDIA_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Duration,

    /// `controller --discovery kubernetes`: between Lease attempts, and the bound on one.
    #[arg(long, env = "REMOTEMEDIA_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_retry_period: Duration,
}

/// Where the address advertised in host candidates comes from (`--public-ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicIp {
    /// This address.
    Address(IpAddr),
    /// The mapped address a STUN server sees (`auto`).
    Stun,
    /// The Kubernetes node's ExternalIP (`node`).
    Node,
}

impl std::str::FromStr for PublicIp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Stun),
            "node" => Ok(Self::Node),
            other => other
                .parse()
                .map(Self::Address)
                .map_err(|_| format!("{other:?} is neither an IP address nor `auto` or `node`")),
        }
    }
}

/// Options of the server peers' WebRTC stack.
#[derive(Debug, Clone, clap::Args)]
pub struct MediaOptions {
    /// STUN servers (comma-separated `stun:host:port`) that `--public-ip auto` asks for this
    /// host's public address; nothing else uses them (the server peers are ICE-lite: host
    /// candidates only, so there is nothing to gather through STUN).
    #[arg(long, env = "WEBRTC_STUN_SERVERS", value_delimiter = ',')]
    pub stun_servers: Vec<String>,

    /// TURN servers (comma-separated `turn:host:port:user:credential`); checked, but unused by
    /// the ICE-lite server peers: clients that need a relay configure it themselves.
    #[arg(long, env = "WEBRTC_TURN_SERVERS", value_delimiter = ',')]
    pub turn_servers: Vec<String>,

    /// Open a data channel path to the pipeline (DataBuffer messages both ways); a bare
    /// `--enable-data-channel` (the original's form) means true.
    #[arg(long, env = "WEBRTC_ENABLE_DATA_CHANNEL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_data_channel: bool,

    /// Upper bound of the inbound jitter buffer delay, in milliseconds.
    #[arg(long, env = "WEBRTC_JITTER_BUFFER_MS", default_value_t = 100)]
    pub jitter_buffer_ms: u32,

    /// Outbound Opus bitrate in bits per second; a manifest's `media.opus.bitrate` overrides it.
    #[arg(long, env = "REMOTEMEDIA_OPUS_BITRATE", default_value_t = 64_000, value_parser = clap::value_parser!(u32).range(6_000..=510_000))]
    pub opus_bitrate: u32,

    /// Opus encoder complexity 0..=10 (CPU for quality); `media.opus.complexity` overrides it.
    #[arg(long, env = "REMOTEMEDIA_OPUS_COMPLEXITY", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub opus_complexity: u8,

    /// Opus in-band FEC, so clients can rebuild a lost packet; `media.opus.fec` overrides it.
    #[arg(long, env = "REMOTEMEDIA_OPUS_FEC", default_value_t = true, action = clap::ArgAction::Set)]
    pub opus_fec: bool,

    /// Opus DTX (near-empty packets in silence); `media.opus.dtx` overrides it.
    #[arg(long, env = "REMOTEMEDIA_OPUS_DTX", default_value_t = false, action = clap::ArgAction::Set)]
    pub opus_dtx: bool,

    /// Local addresses ICE may gather host candidates on (comma-separated); empty: every
    /// non-loopback interface. Tests use 127.0.0.1.
    #[arg(long, env = "REMOTEMEDIA_ICE_IPS", value_delimiter = ',')]
    pub ice_ips: Vec<IpAddr>,

    /// One UDP port shared by every server peer (ICE UDP mux); 0: an ephemeral port per peer.
    /// Default 0, and 50000 in `worker` mode.
    #[arg(long, env = "REMOTEMEDIA_UDP_PORT", default_value_t = 0)]
    pub udp_port: u16,

    /// `--udp-port`: STUN checks per second each source IP may send before its address
    /// belongs to a session (a NAT may hide many clients behind one IP; one client sends a
    /// handful while it connects). Beyond it they are dropped before the ICE mux.
    #[arg(long, env = "REMOTEMEDIA_UDP_STUN_RATE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_stun_rate: u32,

    /// Bytes per second of RTP a server session resends in answer to its client's NACKs (a
    /// second's worth at once); NACKed packets beyond it are not resent, and counted. 0: no
    /// limit. The default carries the repairs of a few Mbit/s of video with heavy loss.
    #[arg(
        long,
        env = "REMOTEMEDIA_NACK_BYTES_PER_SECOND",
        default_value_t = 250_000
    )]
    pub nack_bytes_per_second: u32,

    /// `--udp-port`: the checks a source IP may send at once above `--udp-stun-rate`.
    #[arg(long, env = "REMOTEMEDIA_UDP_STUN_BURST", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub udp_stun_burst: u32,

    /// Address advertised in host candidates instead of the local one (NAT 1:1): an IP;
    /// `auto`: discovered at start through the first `--stun-servers` that answers; `node`:
    /// the ExternalIP of the Kubernetes node `--node-name` (read through the API), else
    /// `--host-ip`.
    #[arg(long, env = "REMOTEMEDIA_PUBLIC_IP")]
    pub public_ip: Option<PublicIp>,

    /// UDP port advertised in host candidates when it differs from `--udp-port` (a NodePort or
    /// load balancer maps it onto the bound port); default: the bound port.
    #[arg(long, env = "REMOTEMEDIA_PUBLIC_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub public_port: Option<u16>,

    /// `--public-ip node`: the Kubernetes node this pod runs on (downward API `spec.nodeName`).
    #[arg(long, env = "REMOTEMEDIA_NODE_NAME")]
    pub node_name: Option<String>,

    /// `--public-ip node`: the last resort when the node has no ExternalIP or the API cannot
    /// be read (downward API `status.hostIP`, usually a private address).
    #[arg(long, env = "REMOTEMEDIA_HOST_IP")]
    pub host_ip: Option<IpAddr>,

    /// A session that is not ICE+DTLS connected this long after its offer is closed.
    #[arg(long, env = "REMOTEMEDIA_CONNECT_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// A connected session that receives no media (RTP or data) this long is closed.
    #[arg(long, env = "REMOTEMEDIA_MEDIA_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub media_timeout: Duration,

    /// A room participant gets video from this many others: the most recent active
    /// speakers (then the earliest joiners), plus those it pinned; 0 forwards everyone's.
    /// Audio is never limited. Paused video sends no RTP and resumes at a keyframe.
    #[arg(long, env = "REMOTEMEDIA_ROOM_VIDEO_LAST_N", default_value_t = 4)]
    pub room_video_last_n: usize,

    /// A pipeline (a name from the catalog: `--manifest-dir`) that every room runs once: its
    /// input is the mix of the participants' audio, its audio output a track every
    /// participant gets (`remotemedia-room room-audio`), its data output goes to every room
    /// channel as `{"type":"pipeline","data":…}`. An unknown name stops the server at start.
    #[arg(long, env = "REMOTEMEDIA_ROOM_MANIFEST")]
    pub room_manifest: Option<String>,
}

/// Limits that protect the process.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitOptions {
    /// Announced client peers this process accepts (the virtual server peer excluded).
    #[arg(long, env = "WEBRTC_MAX_PEERS", default_value_t = 100)]
    pub max_peers: usize,

    /// A client whose signaling stream breaks (not a clean close) stays registered this long:
    /// its server session runs on, its notifications are kept, and it may announce again with
    /// its `resume_token`. 0 turns resume off.
    #[arg(long, env = "REMOTEMEDIA_RESUME_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resume_grace: Duration,

    /// Without `--auth-secret`: a client that announces the peer id of a peer in its resume
    /// grace without the resume token takes the id over (the old registration ends: its
    /// session closes, `PeerLeft`, then `PeerJoined`), as the original's clients reconnect.
    /// false: the id stays taken (ALREADY_EXISTS) for the grace. A live stream's id is never
    /// taken; with `--auth-secret` a token for the id always takes it over.
    #[arg(long, env = "REMOTEMEDIA_ID_TAKEOVER", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub id_takeover: bool,

    /// Largest SDP offer or answer accepted, in bytes (real ones are a few KiB); larger ones
    /// get INVALID_ARGUMENT.
    #[arg(long, env = "REMOTEMEDIA_MAX_SDP_BYTES", default_value_t = 64 * 1024)]
    pub max_sdp_bytes: usize,

    /// Largest whole signaling message (a gRPC request, a WebSocket text frame) answered, in
    /// bytes; must exceed `--max-sdp-bytes`. A larger one gets INVALID_ARGUMENT (-32600) and
    /// the stream stays; one above 4 times this ends the stream (RESOURCE_EXHAUSTED, close
    /// 1009) without being read whole.
    #[arg(long, env = "REMOTEMEDIA_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,

    /// Largest inbound data-channel message passed to the pipeline, in bytes; larger ones are
    /// dropped and counted, the channel stays open. Advertised in the answer's SDP
    /// (`a=max-message-size`), so conforming clients never send one.
    #[arg(
        long,
        env = "REMOTEMEDIA_MAX_DATACHANNEL_MESSAGE_BYTES",
        default_value_t = 256 * 1024
    )]
    pub max_datachannel_message_bytes: usize,

    /// Pipeline output waiting to be sent on a session's data channels, in bytes. A client
    /// that stops reading its channel stops taking messages; what does not fit then is dropped
    /// and counted, and the session's audio is never held up by it.
    #[arg(
        long,
        env = "REMOTEMEDIA_DATACHANNEL_SEND_QUEUE_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub datachannel_send_queue_bytes: usize,

    /// Data channels a server session reads at once (each holds a read buffer as large as
    /// the SCTP receive window); a client that opens more has the extra ones closed.
    #[arg(long, env = "REMOTEMEDIA_MAX_DATACHANNELS", default_value_t = 4)]
    pub max_datachannels: usize,

    /// Signaling requests per second each stream or WebSocket may make, on average; more get
    /// RESOURCE_EXHAUSTED (-32010) and the stream stays. 0: no limit.
    #[arg(long, env = "REMOTEMEDIA_SIGNALING_RATE", default_value_t = 20)]
    pub signaling_rate: u32,

    /// Requests a stream may make at once above `--signaling-rate` (the bucket's size). A
    /// stream refused 10 times this many requests faster than the rate refills is cut off.
    #[arg(long, env = "REMOTEMEDIA_SIGNALING_BURST", default_value_t = 100)]
    pub signaling_burst: u32,

    /// A new gRPC signaling stream or WebSocket that sends nothing this long after it opens
    /// is closed (DEADLINE_EXCEEDED; WebSocket: -32600 and close 1008). Clients send their
    /// first request (an announce) at once; 10 s leaves room for a slow mobile network's
    /// round trips and retransmissions while an idle connection costs little for long. 0: off.
    #[arg(long, env = "REMOTEMEDIA_FIRST_MESSAGE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub first_message_timeout: Duration,

    /// The gRPC signaling listener pings each HTTP/2 connection this often (0: never), so a
    /// connection whose client vanished (a dead NAT mapping, a laptop closed) ends instead of
    /// holding its peer; the pings also keep NAT and load balancer idle timers (often 60 s
    /// and up) from cutting a quiet client.
    #[arg(long, env = "REMOTEMEDIA_GRPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_interval: Duration,

    /// A connection that does not answer a keepalive ping within this long is closed (its
    /// peers enter their resume grace, as after any broken stream).
    #[arg(long, env = "REMOTEMEDIA_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub grpc_keepalive_timeout: Duration,

    /// Streams one HTTP/2 connection to the gRPC signaling listener may have open at once
    /// (advertised in SETTINGS_MAX_CONCURRENT_STREAMS: clients wait for a free one; a stream
    /// past it is refused with REFUSED_STREAM). A client needs one `Signal` stream per peer;
    /// the load generator runs all its peers over one connection, hence the room.
    #[arg(long, env = "REMOTEMEDIA_GRPC_MAX_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams: u32,

    /// ICE candidates a client may send for one server session (those sent before its offer
    /// count too); more get RESOURCE_EXHAUSTED (-32004).
    #[arg(long, env = "REMOTEMEDIA_MAX_ICE_CANDIDATES", default_value_t = 64)]
    pub max_ice_candidates: usize,

    /// Audio frames (20 ms each) a pipeline's input holds while the pipeline is busy; when it
    /// is full the oldest frame is dropped and counted. Data-channel messages wait instead.
    #[arg(long, env = "REMOTEMEDIA_PIPELINE_QUEUE_FRAMES", default_value_t = 50)]
    pub pipeline_queue_frames: usize,

    /// Bytes of data-channel messages a pipeline's input holds while the pipeline is busy
    /// (a message may be up to `--max-datachannel-message-bytes`, so a count alone would let
    /// one session hold tens of MiB); a message that would go over waits, which slows its
    /// client down through SCTP flow control, counted.
    #[arg(long, env = "REMOTEMEDIA_PIPELINE_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub pipeline_queue_bytes: usize,

    /// Text a `TextCollectorNode` holds while no sentence ends, in bytes; beyond it the text
    /// so far goes on as one piece, counted.
    #[arg(long, env = "REMOTEMEDIA_MAX_TEXT_BUFFER_BYTES", default_value_t = 64 * 1024)]
    pub max_text_buffer_bytes: usize,

    /// Audio an `AudioBufferAccumulatorNode` holds for one utterance, in bytes (4 per
    /// sample: 8 MiB is 43 s of 48 kHz mono), whatever sample rate the audio claims; a
    /// longer utterance is cut there and goes on, counted.
    #[arg(long, env = "REMOTEMEDIA_MAX_UTTERANCE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_utterance_bytes: usize,

    /// Graceful shutdown gives up and exits after this long.
    #[arg(long, env = "REMOTEMEDIA_SHUTDOWN_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Connections one client address may hold at once on the gRPC signaling and HTTP
    /// listeners together (IPv6: per /64); past it a new one is closed at once (through a
    /// trusted HTTP proxy, a `/ws` gets 429 and a `Signal` stream RESOURCE_EXHAUSTED). 0: no cap, the default, since behind a load
    /// balancer that hides clients every connection comes from its few addresses: set
    /// `--trusted-proxies` (and `--proxy-protocol`) there.
    #[arg(
        long,
        env = "REMOTEMEDIA_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 0
    )]
    pub max_connections_per_address: usize,

    /// Proxies and load balancers (comma-separated addresses or CIDR networks) whose word is
    /// taken for the client's address: the PROXY header of `--proxy-protocol`, and for `/ws`
    /// and `Signal` streams the rightmost `X-Forwarded-For` entry outside these networks. Connections from them
    /// are not capped themselves. Empty: headers are ignored.
    #[arg(long, env = "REMOTEMEDIA_TRUSTED_PROXIES", value_parser = crate::admission::TrustedProxies::parse)]
    pub trusted_proxies: Option<crate::admission::TrustedProxies>,

    /// Every connection from `--trusted-proxies` to the gRPC signaling and HTTP listeners
    /// starts with a PROXY protocol header (v1 or v2, as AWS NLB, HAProxy and most L4 load
    /// balancers send), whose source address is the client's; one without a valid header is
    /// closed. Other connections (kubelet's probes, pods calling the Service) are clients of
    /// their own: no header is read from them.
    #[arg(long, env = "REMOTEMEDIA_PROXY_PROTOCOL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: bool,

    /// Participants a room takes, counted at announce (across every frontend of a cluster),
    /// so that every listed participant gets media; one more is refused with
    /// RESOURCE_EXHAUSTED (-32005) naming the room. 16: one core forwards roughly that many
    /// all-to-all.
    #[arg(long, env = "REMOTEMEDIA_MAX_ROOM_PARTICIPANTS", default_value_t = 16)]
    pub max_room_participants: usize,

    /// Rooms this process (or worker) hosts at once; the offer that would create one more
    /// gets RESOURCE_EXHAUSTED (-32005).
    #[arg(long, env = "REMOTEMEDIA_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,
}

/// `--mode websocket`'s `--signaling-url` when none is given (the original's default).
pub const DEFAULT_SIGNALING_URL: &str = "ws://localhost:8080";

/// `--mode websocket`'s HTTP port when `--http-address` is not given: not 8080, where the
/// signaling server of [`DEFAULT_SIGNALING_URL`] listens.
pub const WEBSOCKET_MODE_HTTP_PORT: u16 = 8081;

/// A message above this many times `--max-message-bytes` is not read whole: it ends the stream.
pub const HARD_MESSAGE_FACTOR: usize = 4;

impl LimitOptions {
    /// Checks that the limits make sense together.
    ///
    /// # Errors
    /// A zero limit, or a message limit that an SDP of the SDP limit would not fit in.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--max-sdp-bytes", self.max_sdp_bytes),
            ("--max-message-bytes", self.max_message_bytes),
            (
                "--max-datachannel-message-bytes",
                self.max_datachannel_message_bytes,
            ),
            ("--max-ice-candidates", self.max_ice_candidates),
            (
                "--datachannel-send-queue-bytes",
                self.datachannel_send_queue_bytes,
            ),
            ("--max-datachannels", self.max_datachannels),
            ("--max-text-buffer-bytes", self.max_text_buffer_bytes),
            ("--max-utterance-bytes", self.max_utterance_bytes),
            ("--pipeline-queue-frames", self.pipeline_queue_frames),
            ("--pipeline-queue-bytes", self.pipeline_queue_bytes),
            ("--max-room-participants", self.max_room_participants),
        ] {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.max_message_bytes <= self.max_sdp_bytes {
            return Err(format!(
                "--max-message-bytes ({}) must exceed --max-sdp-bytes ({}): a message carries an SDP",
                self.max_message_bytes, self.max_sdp_bytes
            ));
        }
        if self.signaling_rate > 0 && self.signaling_burst == 0 {
            return Err("--signaling-burst must be at least 1 when --signaling-rate is set".into());
        }
        if self.proxy_protocol && self.trusted_proxies.as_ref().is_none_or(|t| t.is_empty()) {
            return Err(
                "--proxy-protocol needs --trusted-proxies: the load balancers whose headers are believed"
                    .into(),
            );
        }
        Ok(())
    }

    /// The size above which a signaling message ends its stream unread.
    pub fn hard_message_bytes(&self) -> usize {
        self.max_message_bytes.saturating_mul(HARD_MESSAGE_FACTOR)
    }
}

impl Config {
    /// Parses the process arguments, then applies the defaults that depend on `--mode`.
    pub fn from_args() -> Self {
        Self::try_from_iter(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// [`Config::from_args`] on a given argument list.
    ///
    /// # Errors
    /// Unknown or malformed flags.
    pub fn try_from_iter<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().try_get_matches_from(args)?;
        let mut config = Self::from_arg_matches(&matches)?;
        let defaulted =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::DefaultValue);
        // Internal listeners stay on loopback unless an address is given (DESIGN.md §1).
        if matches!(config.mode, Mode::Worker | Mode::Controller) && defaulted("http_address") {
            config.http_address = SocketAddr::from(([127, 0, 0, 1], 8080));
        }
        if config.mode == Mode::Websocket {
            // The original's default; its signaling server listens there, so ours moves aside.
            if config.signaling_url.is_none() {
                config.signaling_url = Some(DEFAULT_SIGNALING_URL.to_owned());
            }
            if defaulted("http_address") {
                config.http_address = SocketAddr::from(([0, 0, 0, 0], WEBSOCKET_MODE_HTTP_PORT));
            }
        }
        if config.mode == Mode::Worker {
            if defaulted("grpc_address") {
                config.grpc_address = SocketAddr::from(([127, 0, 0, 1], 50052));
            }
            if defaulted("udp_port") {
                config.media.udp_port = 50_000;
            }
        }
        Ok(config)
    }

    /// A configuration for tests and embedding: every listener on 127.0.0.1 port 0, ICE on
    /// loopback only, defaults elsewhere.
    pub fn local_test() -> Self {
        let mut config = Config::parse_from([
            "webrtc_server",
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
            "--ice-ips",
            "127.0.0.1",
        ]);
        config.media.stun_servers.clear();
        config
    }
}

/// This machine's (or pod's) host name.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Drops the empty entries a `default_value = ""` list parses into.
pub(crate) fn non_empty(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().map(|s| s.trim()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_is_an_address_auto_or_node() {
        let parse = |value: &str| {
            Config::try_from_iter(["webrtc_server", "--public-ip", value])
                .map(|c| c.media.public_ip)
        };
        assert_eq!(
            parse("203.0.113.7").unwrap(),
            Some(PublicIp::Address("203.0.113.7".parse().unwrap()))
        );
        assert_eq!(parse("auto").unwrap(), Some(PublicIp::Stun));
        assert_eq!(parse("node").unwrap(), Some(PublicIp::Node));
        let err = parse("somewhere").unwrap_err().to_string();
        assert!(
            err.contains("neither an IP address nor `auto` or `node`"),
            "{err}"
        );
    }

    #[test]
    fn internal_listeners_default_to_loopback() {
        let parse = |args: &[&str]| {
            let mut all = vec!["webrtc_server"];
            all.extend_from_slice(args);
            Config::try_from_iter(all).unwrap()
        };
        let worker = parse(&["--mode", "worker"]);
        assert_eq!(worker.grpc_address.to_string(), "127.0.0.1:50052");
        assert_eq!(worker.http_address.to_string(), "127.0.0.1:8080");
        let controller = parse(&["--mode", "controller"]);
        assert_eq!(controller.http_address.to_string(), "127.0.0.1:8080");
        // What clients reach keeps listening everywhere.
        let frontend = parse(&["--mode", "frontend"]);
        assert_eq!(frontend.grpc_address.to_string(), "0.0.0.0:50051");
        assert_eq!(frontend.http_address.to_string(), "0.0.0.0:8080");
        // An address given (the chart's pod IP) wins.
        let pod = parse(&["--mode", "worker", "--grpc-address", "10.1.2.3:50052"]);
        assert_eq!(pod.grpc_address.to_string(), "10.1.2.3:50052");
    }

    #[test]
    fn limits_have_sane_defaults_and_must_fit_together() {
        let limits = Config::try_from_iter(["webrtc_server"]).unwrap().limits;
        assert_eq!(limits.max_sdp_bytes, 65_536);
        assert_eq!(limits.max_datachannel_message_bytes, 262_144);
        assert!(limits.max_message_bytes > limits.max_sdp_bytes);
        assert_eq!(limits.validate(), Ok(()));
        let parse = |args: &[&str]| {
            let mut all = vec!["webrtc_server"];
            all.extend_from_slice(args);
            Config::try_from_iter(all).unwrap().limits.validate()
        };
        let err = parse(&["--max-message-bytes", "65536"]).unwrap_err();
        assert!(err.contains("must exceed --max-sdp-bytes"), "{err}");
        let err = parse(&["--pipeline-queue-frames", "0"]).unwrap_err();
        assert!(err.contains("--pipeline-queue-frames"), "{err}");
        assert_eq!(
            parse(&["--signaling-rate", "0", "--signaling-burst", "0"]),
            Ok(())
        );
        assert!(parse(&["--signaling-burst", "0"]).is_err());
        // The connection cap is off by default; the PROXY protocol needs proxies to believe.
        assert_eq!(limits.max_connections_per_address, 0);
        let err = parse(&["--proxy-protocol"]).unwrap_err();
        assert!(err.contains("--trusted-proxies"), "{err}");
        assert_eq!(
            parse(&[
                "--proxy-protocol",
                "--trusted-proxies",
                "10.0.0.0/8,192.0.2.7"
            ]),
            Ok(())
        );
        assert!(Config::try_from_iter(["webrtc_server", "--trusted-proxies", "lb.local"]).is_err());
    }

    #[test]
    fn drain_is_a_subcommand_next_to_the_server_flags() {
        let config =
            Config::try_from_iter(["webrtc_server", "drain", "--worker-api", "127.0.0.1:1"])
                .unwrap();
        assert!(matches!(
            config.command,
            Some(Command::Drain { worker_api: Some(ref api) }) if api == "127.0.0.1:1"
        ));
        let worker = Config::try_from_iter(["webrtc_server", "--mode", "worker", "drain"]).unwrap();
        assert_eq!(worker.grpc_address.port(), 50052);
        assert!(Config::try_from_iter(["webrtc_server"])
            .unwrap()
            .command
            .is_none());
    }
}
