//! Server peers: the only users of the `webrtc` crate. Callbacks become channels here; the
//! rest of the server sees a [`SessionManager`] behind the signaling `SessionHost` trait.

mod activity;
mod advertise;
mod audio;
mod close_reason;
mod data_channel;
mod data_output;
mod error;
mod forward;
pub mod metrics;
mod nack;
mod quality;
mod room_actor;
mod room_channel;
mod room_forward;
mod room_hub;
mod room_lead;
mod room_pipeline;
mod room_relay_link;
mod sdp;
mod send_buffer;
mod server_peer;
mod session_manager;
mod session_trace;
mod stack;
mod traffic;
mod udp_filter;
mod video;
mod wiring;

pub use advertise::PortMap;
pub use close_reason::CloseReason;
pub(crate) use data_channel::decode as decode_data_message;
pub(crate) use data_output::encode_data_message;
pub use error::PeerError;
pub use quality::{CallRecord, RtcpStats, SessionStats};
pub(crate) use room_lead::{FromLead, Lead, LeadMessage, Leadership, LEAD_QUEUE};
pub(crate) use room_relay_link::{
    BackChannel, OpenedLink, RelayRequest, RemoteWorker, RemoteWorkers, SpanHost,
};
pub use session_manager::{PeerConnectionProbe, SessionManager, SessionSettings};
pub use stack::{opus_capability, WebRtcStack};
pub use udp_filter::DropReason as UdpDropReason;
