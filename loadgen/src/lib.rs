//! The load generator (`webrtc_loadgen`): N real WebRTC client peers (the server crate's
//! [`remotemedia_webrtc::client`]) against a server (our gRPC signaling, or Janus' EchoTest
//! for comparison), replaying one pre-encoded Opus test signal, measuring setup times, packet
//! loss, the server-added audio latency and the server's CPU and memory. `sweep` drives it
//! step by step for the capacity tables (`webrtc_capacity`).
//!
//! Its own crate so that the server's dependency tree carries no plotting and no Janus client.

mod churn;
mod error;
mod janus;
mod plot;
mod procstat;
mod rooms;
mod row;
mod run;
mod stats;
mod sweep;

use std::net::IpAddr;

use remotemedia_webrtc::client::{self, ClientError, LoadPeer, SetupTimes};

pub use churn::{churn, ChurnReport};
pub use error::LoadgenError;
pub use janus::JanusApi;
pub use plot::plot_rooms;
pub use procstat::{pinned_core, rss_mb, CoreSample, CpuSample};
pub use rooms::{run_rooms, RoomsReport};
pub use row::{read_csv, SweepRow};
pub use run::{run, Latency, PeerPackets, Report, MAX_LOADGEN_CPU_PCT};
pub use stats::Percentiles;
pub use sweep::{sweep, SweepOptions};

/// The signaling the peers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Our gRPC signaling, offering to the virtual peer `remotemedia-server`.
    Grpc,
    /// Janus' HTTP API and its EchoTest plugin (`--server http://host:8088/janus`).
    Janus,
}

/// `webrtc_loadgen`'s flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "webrtc_loadgen",
    about = "WebRTC load generator and latency probe"
)]
pub struct Options {
    /// gRPC signaling URL, or the Janus HTTP API's base URL with `--protocol janus`.
    #[arg(long, env = "LOADGEN_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    #[arg(long, env = "LOADGEN_PROTOCOL", value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Client peers to connect.
    #[arg(long, env = "LOADGEN_PEERS", default_value_t = 10)]
    pub peers: usize,
    /// Length of the steady window (all peers connected) that is measured.
    #[arg(long, env = "LOADGEN_DURATION_S", default_value_t = 20.0)]
    pub duration_s: f64,
    /// Peers started per second during the ramp.
    #[arg(long, env = "LOADGEN_RAMP_PER_S", default_value_t = 20.0)]
    pub ramp_per_s: f64,
    /// The server's process id: its CPU and RSS are read from /proc during the steady window.
    #[arg(long, env = "LOADGEN_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Print the report as one JSON object on the last line.
    #[arg(long, env = "LOADGEN_JSON", default_value_t = false)]
    pub json: bool,
    /// Pipeline manifest the peers ask for (announce metadata `manifest`).
    #[arg(long, env = "LOADGEN_MANIFEST")]
    pub manifest: Option<String>,
    /// The address the client peers gather ICE candidates on.
    #[arg(long, env = "LOADGEN_ICE_IP", default_value = "127.0.0.1")]
    pub ice_ip: IpAddr,
    /// Peers whose returned audio is decoded to time the markers (the latency sample).
    #[arg(long, env = "LOADGEN_MEASURE_PEERS", default_value_t = 8)]
    pub measure_peers: usize,
    /// Instead of a load run: this many sequential connect / exchange audio / leave cycles,
    /// reporting the server's RSS after the first 100 and after the last.
    #[arg(long, env = "LOADGEN_CHURN")]
    pub churn: Option<usize>,
    /// Instead of echo peers: rooms of this many participants (`--peers` rounded down to whole
    /// rooms), each publishing, everyone subscribed to everyone (our rooms or Janus' VideoRoom).
    #[arg(long, env = "LOADGEN_ROOMS_OF")]
    pub rooms_of: Option<usize>,
}

/// Where the peers connect: one shared gRPC channel or one Janus API client.
#[derive(Clone)]
pub enum Target {
    Grpc(tonic::transport::Channel),
    Janus(JanusApi),
}

/// A connected peer's signaling, kept until it leaves.
pub enum Session {
    Grpc(client::GrpcSession),
    Janus(janus::JanusSession),
}

impl Session {
    pub async fn leave(self) {
        match self {
            Self::Grpc(session) => session.leave().await,
            Self::Janus(session) => session.leave().await,
        }
    }
}

impl Target {
    /// Connects to `options.server` (gRPC: one HTTP/2 connection all peers share).
    ///
    /// # Errors
    /// [`ClientError::Connect`] when the gRPC server cannot be reached.
    pub async fn connect_to(options: &Options) -> Result<Self, LoadgenError> {
        match options.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(options.server.clone())
                    .map_err(ClientError::Connect)?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(ClientError::Connect)?;
                Ok(Self::Grpc(channel))
            }
            Protocol::Janus => Ok(Self::Janus(JanusApi::new(&options.server))),
        }
    }

    /// Connects one peer.
    ///
    /// # Errors
    /// The signaling's or the peer's failure.
    pub async fn connect(
        &self,
        peer_id: &str,
        manifest: Option<&str>,
        peer: &mut LoadPeer,
    ) -> Result<(Session, SetupTimes), LoadgenError> {
        self.connect_with_token(peer_id, manifest, None, peer).await
    }

    /// [`Target::connect`] with a bearer token on the signaling stream (gRPC only).
    ///
    /// # Errors
    /// The signaling's or the peer's failure.
    pub async fn connect_with_token(
        &self,
        peer_id: &str,
        manifest: Option<&str>,
        token: Option<&str>,
        peer: &mut LoadPeer,
    ) -> Result<(Session, SetupTimes), LoadgenError> {
        match self {
            Self::Grpc(channel) => {
                let (session, times) =
                    client::connect_grpc(channel.clone(), peer_id, manifest, token, peer).await?;
                Ok((Session::Grpc(session), times))
            }
            Self::Janus(api) => {
                let (session, times) = janus::connect(api, peer).await?;
                Ok((Session::Janus(session), times))
            }
        }
    }
}
