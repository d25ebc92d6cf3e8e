//! Signaling: who is connected, and moving offers, answers and candidates between them.
//!
//! The rules live in [`SignalingCore`]; transports (gRPC, WebSocket JSON-RPC) only translate. The core
//! depends on traits ([`PeerRegistry`], [`NotificationBus`], [`SessionHost`]) so that the
//! single process and the cluster run the same code. Nothing here imports `peer` or `media`.

mod auth;
mod bus;
mod core;
mod error;
mod grpc;
mod lifecycle;
pub mod metrics;
mod peer_id;
mod rate_limit;
mod registry;
mod session_host;
mod spans;
mod turn;
mod websocket;

pub use auth::{
    bearer, expiry as token_expiry, issue as issue_token, sign as sign_token, AuthError, Claims,
    Identity, TokenVerifier,
};
pub use bus::{BusError, Delivery, InMemoryBus, Mailbox, NotificationBus, MAILBOX_CAPACITY};
pub use core::{
    deliver_session_event, session_notification, Access, ConnectedPeer, OfferOutcome,
    SignalingCore, SignalingLimits, SignalingStats, MANIFEST_METADATA_KEY, MAX_CANDIDATE_BYTES,
    RESUME_TOKEN_METADATA_KEY,
};
pub use error::{jsonrpc, Payload, RpcError, SignalingError};
pub use grpc::GrpcSignaling;
pub use peer_id::{validate_peer_id, SERVER_PEER_ID};
pub use rate_limit::{RequestGate, RequestLimits, TokioClock};
pub use registry::{
    unix_millis, InMemoryRegistry, PeerRecord, PeerRegistry, PendingOffer, RegistryError,
    PENDING_OFFER_TTL, ROOM_METADATA_KEY,
};
pub use session_host::{IceCandidate, SessionError, SessionEvent, SessionHost, SessionRequest};
pub use turn::{IceServer, TurnCredentials};
pub use websocket::{dialect, OriginPolicy, WebSocketSignaling};
pub(crate) use websocket::{handle_text, Connection};
