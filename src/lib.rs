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
pub mod server;
pub mod sessions;
pub mod signaling;
pub mod telemetry;
pub mod tls;
pub mod websocket_mode;

pub use error::Error;
