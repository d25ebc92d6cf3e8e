//! A native client of the server: webrtc-crate peers that announce over gRPC, offer to
//! `remotemedia-server`, send an Opus test signal and measure what comes back. The server's
//! own `probe` subcommand (the chart's `helm test`) and the load generator (the
//! `remotemedia-loadgen` crate) are built on it.

mod error;
mod grpc;
mod peer;
mod probe;
mod signal;

use std::time::Duration;

pub use error::ClientError;
pub use grpc::{connect as connect_grpc, GrpcSession};
pub use peer::{ClientStack, LoadPeer, PeerCounters};
pub use probe::{probe, ProbeOptions, ProbeReport, PROBE_HZ};
pub use signal::{MarkerDetector, TestSignal, PERIOD_PACKETS};

/// Offer→answer and offer→connected of one peer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupTimes {
    pub answer: Duration,
    pub connected: Duration,
}
