//! remotemedia-webrtc: a WebRTC media server that bridges browsers and native clients to
//! server-side audio pipelines, on one machine or as a Kubernetes cluster.
//!
//! Data flows down from [`signaling`] to the session host, to the server peer ([`peer`]), to
//! [`media`] and [`pipeline`], and comes back up only through channels.

pub mod admission;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod peer;
pub mod pipeline;
pub mod proto;
pub mod public_address;
pub mod room;
pub mod room_relay;
pub mod server;
pub mod sessions;
pub mod signaling;
pub mod telemetry;
pub mod tls;
pub mod websocket_mode;

pub use error::Error;

/// Registers every area's metric families: each area owns its own (`peer::metrics`,
/// `signaling::metrics`, ...) and [`metrics`] keeps only the registry, so the exposition calls
/// this first and shows each family before its first event.
pub(crate) fn register_metric_families() {
    cluster::metrics::metrics();
    peer::metrics::metrics();
    pipeline::metrics::metrics();
    room_relay::metrics::metrics();
    signaling::metrics::metrics();
    tls::metrics::metrics();
}
