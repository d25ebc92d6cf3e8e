//! Signaling errors and their mappings: one to gRPC status codes, one to JSON-RPC error codes
//! (DESIGN.md §2). Transports never pick codes themselves.

use tonic::Code;

use super::auth::AuthError;
use super::session_host::SessionError;
use crate::room::RoomError;

/// Why a signaling request or stream failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error("offers, answers and ICE candidates need an announce first")]
    AnnounceRequired,
    #[error("this stream already announced itself as {0:?}")]
    AlreadyAnnounced(String),
    #[error("invalid peer id: {0}")]
    InvalidPeerId(String),
    #[error("peer id {0:?} is already connected")]
    PeerIdTaken(String),
    #[error("peer id {0:?} is reserved for the server")]
    PeerIdReserved(String),
    #[error("this server accepts at most {0} peers")]
    TooManyPeers(usize),
    #[error("request has no request type set")]
    EmptyRequest,
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    #[error("invalid SDP offer: {0}")]
    InvalidOffer(String),
    #[error("invalid SDP answer: {0}")]
    InvalidAnswer(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("{what} is {len} bytes, the limit is {limit}")]
    TooLarge {
        what: Payload,
        len: usize,
        limit: usize,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid manifest name {0:?}: 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidManifestName(String),
    #[error("more than {0} ICE candidates for one server session (those sent before the offer count too)")]
    TooManyCandidates(usize),
    #[error("more than {0} requests per second on this stream; slow down")]
    RateLimited(u32),
    #[error("far more than {0} requests per second on this stream: cut off")]
    RateLimitCutOff(u32),
    #[error("message is {len} bytes, the limit is {limit}")]
    MessageTooLarge { len: usize, limit: usize },
    #[error("a message above {0} bytes ends the stream")]
    MessageTooLargeToRead(usize),
    #[error("notification queue overflowed: this client reads too slowly")]
    SlowConsumer,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("nothing received within {0:?} of connecting")]
    FirstMessageTimeout(std::time::Duration),
    #[error("signaling state unavailable: {0}")]
    StateUnavailable(String),
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("more than {0} connections from your address")]
    TooManyConnections(usize),
    /// A room's refusal: a bad room name or participant id, a full room (rooms issue, #15).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// `--auth-secret`: the token's `room` claim names another room than the announce.
    #[error("permission denied: the token allows room {claimed:?}, not {asked:?}")]
    WrongRoom { claimed: String, asked: String },
    /// `--require-room-claim`: a token without a `room` claim announced into a room.
    #[error("permission denied: joining room {0:?} needs a token with a room claim")]
    RoomClaimRequired(String),
}

impl From<super::registry::RegistryError> for SignalingError {
    fn from(err: super::registry::RegistryError) -> Self {
        match err {
            super::registry::RegistryError::AlreadyExists(peer_id) => Self::PeerIdTaken(peer_id),
            super::registry::RegistryError::Unavailable(why) => Self::StateUnavailable(why),
            super::registry::RegistryError::RoomFull { room, max } => {
                Self::Room(RoomError::RoomFull { room, max })
            }
        }
    }
}

impl SignalingError {
    /// The gRPC status code of this error (the table of DESIGN.md §2).
    pub fn code(&self) -> Code {
        match self {
            Self::AnnounceRequired | Self::AlreadyAnnounced(_) => Code::FailedPrecondition,
            Self::InvalidPeerId(_)
            | Self::EmptyRequest
            | Self::InvalidOffer(_)
            | Self::InvalidAnswer(_)
            | Self::InvalidCandidate(_)
            | Self::TooLarge { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidManifestName(_) => Code::InvalidArgument,
            Self::PeerIdTaken(_) | Self::PeerIdReserved(_) => Code::AlreadyExists,
            Self::MessageTooLarge { .. } => Code::InvalidArgument,
            Self::TooManyPeers(_)
            | Self::TooManyCandidates(_)
            | Self::RateLimited(_)
            | Self::RateLimitCutOff(_)
            | Self::MessageTooLargeToRead(_)
            | Self::SlowConsumer
            | Self::TooManyConnections(_) => Code::ResourceExhausted,
            Self::UnknownPeer(_) => Code::NotFound,
            Self::FirstMessageTimeout(_) => Code::DeadlineExceeded,
            Self::ShuttingDown | Self::StateUnavailable(_) => Code::Unavailable,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) | Self::WrongRoom { .. } | Self::RoomClaimRequired(_) => {
                Code::PermissionDenied
            }
            Self::Session(err) => err.code(),
            Self::Room(err) => room_code(err),
        }
    }
}

impl SignalingError {
    /// Whether the stream ends after this error instead of answering it and reading on.
    pub fn ends_stream(&self) -> bool {
        matches!(
            self,
            Self::RateLimitCutOff(_)
                | Self::MessageTooLargeToRead(_)
                | Self::FirstMessageTimeout(_)
        )
    }

    /// A fixed label for counting errors by kind (never the message text).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::AnnounceRequired => "announce_required",
            Self::AlreadyAnnounced(_) => "already_announced",
            Self::InvalidPeerId(_) => "invalid_peer_id",
            Self::PeerIdTaken(_) => "peer_id_taken",
            Self::PeerIdReserved(_) => "peer_id_reserved",
            Self::TooManyPeers(_) => "too_many_peers",
            Self::EmptyRequest => "empty_request",
            Self::UnknownPeer(_) => "unknown_peer",
            Self::InvalidOffer(_) => "invalid_offer",
            Self::InvalidAnswer(_) => "invalid_answer",
            Self::InvalidCandidate(_) => "invalid_candidate",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidManifestName(_) => "invalid_manifest_name",
            Self::TooManyCandidates(_) => "too_many_candidates",
            Self::RateLimited(_) => "rate_limited",
            Self::RateLimitCutOff(_) => "rate_limit_cut_off",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::MessageTooLargeToRead(_) => "message_too_large_to_read",
            Self::SlowConsumer => "slow_consumer",
            Self::ShuttingDown => "shutting_down",
            Self::FirstMessageTimeout(_) => "first_message_timeout",
            Self::StateUnavailable(_) => "state_unavailable",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Session(err) => err.metric_label(),
            Self::TooManyConnections(_) => "too_many_connections",
            Self::Room(err) => err.metric_label(),
            Self::WrongRoom { .. } => "wrong_room",
            Self::RoomClaimRequired(_) => "room_claim_required",
        }
    }
}

impl SessionError {
    /// A fixed label for counting session failures by kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidSdp(_) => "invalid_sdp",
            Self::InvalidCandidate(_) => "invalid_candidate",
            Self::UnknownManifest(_) => "unknown_manifest",
            Self::NoSession(_) => "no_session",
            Self::AtCapacity(_) => "at_capacity",
            Self::Unavailable(_) => "unavailable",
            Self::Pipeline(_) => "pipeline",
            Self::Internal(_) => "internal",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::TooManyRooms(_) => "too_many_rooms",
            Self::RoomClosing(_) => "room_closing",
            Self::InvalidArgument(_) => "invalid_argument",
        }
    }
}

/// What a size limit or a parse failure was about; it picks the JSON-RPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Offer,
    Answer,
    Candidate,
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Offer => "SDP offer",
            Self::Answer => "SDP answer",
            Self::Candidate => "ICE candidate",
        })
    }
}

/// JSON-RPC 2.0 error codes of the WebSocket dialect (DESIGN.md §2).
pub mod jsonrpc {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL: i32 = -32603;
    pub const PEER_NOT_FOUND: i32 = -32000;
    pub const PEER_ID_EXISTS: i32 = -32001;
    pub const BAD_OFFER: i32 = -32002;
    pub const BAD_ANSWER: i32 = -32003;
    pub const BAD_CANDIDATE: i32 = -32004;
    pub const SESSION_LIMIT: i32 = -32005;
    pub const ANNOUNCE_REQUIRED: i32 = -32006;
    pub const UNAUTHENTICATED: i32 = -32007;
    pub const PERMISSION_DENIED: i32 = -32008;
    pub const NO_WORKER: i32 = -32009;
    pub const RATE_LIMITED: i32 = -32010;
    /// The request is valid but not now (an answer with no server offer pending, a client
    /// offer while a server offer is pending): gRPC FAILED_PRECONDITION.
    pub const FAILED_PRECONDITION: i32 = -32011;
}

/// Failures of the JSON-RPC framing itself, before a request reaches the signaling core.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("parse error: {0}")]
    Parse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error(transparent)]
    Signaling(#[from] SignalingError),
}

impl RpcError {
    /// The JSON-RPC error code of this error.
    pub fn code(&self) -> i32 {
        match self {
            Self::Parse(_) => jsonrpc::PARSE_ERROR,
            Self::InvalidRequest(_) => jsonrpc::INVALID_REQUEST,
            Self::UnknownMethod(_) => jsonrpc::METHOD_NOT_FOUND,
            Self::InvalidParams(_) => jsonrpc::INVALID_PARAMS,
            Self::Signaling(err) => err.jsonrpc_code(),
        }
    }
}

impl SignalingError {
    /// The JSON-RPC error code of this error (the WebSocket dialect of DESIGN.md §2).
    pub fn jsonrpc_code(&self) -> i32 {
        use jsonrpc::*;
        match self {
            Self::AnnounceRequired => ANNOUNCE_REQUIRED,
            Self::AlreadyAnnounced(_)
            | Self::EmptyRequest
            | Self::InvalidRequest(_)
            | Self::MessageTooLarge { .. }
            | Self::MessageTooLargeToRead(_)
            | Self::FirstMessageTimeout(_) => INVALID_REQUEST,
            // (`/ws` refuses too many connections with HTTP 429 before the upgrade.)
            Self::RateLimited(_) | Self::RateLimitCutOff(_) | Self::TooManyConnections(_) => {
                RATE_LIMITED
            }
            Self::InvalidPeerId(_) | Self::InvalidManifestName(_) => INVALID_PARAMS,
            Self::PeerIdTaken(_) | Self::PeerIdReserved(_) => PEER_ID_EXISTS,
            Self::TooManyPeers(_) => SESSION_LIMIT,
            Self::UnknownPeer(_) => PEER_NOT_FOUND,
            Self::InvalidOffer(_)
            | Self::TooLarge {
                what: Payload::Offer,
                ..
            } => BAD_OFFER,
            Self::InvalidAnswer(_)
            | Self::TooLarge {
                what: Payload::Answer,
                ..
            } => BAD_ANSWER,
            Self::InvalidCandidate(_)
            | Self::TooLarge {
                what: Payload::Candidate,
                ..
            }
            | Self::TooManyCandidates(_) => BAD_CANDIDATE,
            Self::SlowConsumer => INTERNAL,
            Self::ShuttingDown | Self::StateUnavailable(_) => NO_WORKER,
            Self::Unauthenticated(_) => UNAUTHENTICATED,
            Self::PermissionDenied(_) | Self::WrongRoom { .. } | Self::RoomClaimRequired(_) => {
                PERMISSION_DENIED
            }
            Self::Room(err) => room_jsonrpc_code(err),
            Self::Session(err) => match err {
                SessionError::InvalidSdp(_) | SessionError::UnknownManifest(_) => BAD_OFFER,
                SessionError::InvalidCandidate(_) => BAD_CANDIDATE,
                SessionError::NoSession(_) => PEER_NOT_FOUND,
                SessionError::AtCapacity(_) | SessionError::TooManyRooms(_) => SESSION_LIMIT,
                SessionError::Unavailable(_) => NO_WORKER,
                SessionError::Pipeline(_) | SessionError::Internal(_) => INTERNAL,
                SessionError::FailedPrecondition(_) => FAILED_PRECONDITION,
                SessionError::RoomClosing(_) => SESSION_LIMIT,
                SessionError::InvalidArgument(_) => INVALID_PARAMS,
            },
        }
    }
}

impl From<SignalingError> for tonic::Status {
    fn from(err: SignalingError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

/// The gRPC status code of a room's refusal (the rooms issue's contract).
fn room_code(err: &RoomError) -> Code {
    match err {
        RoomError::InvalidRoomName(_)
        | RoomError::InvalidParticipantId(_)
        | RoomError::RoomManifestMismatch { .. }
        | RoomError::InvalidMessage(_) => Code::InvalidArgument,
        RoomError::RoomFull { .. } | RoomError::TooManyRooms(_) | RoomError::TooManyMLines(_) => {
            Code::ResourceExhausted
        }
        RoomError::AlreadyJoined(_) => Code::AlreadyExists,
        RoomError::UnknownParticipant(_) => Code::NotFound,
        RoomError::NoOfferPending
        | RoomError::StaleAnswer { .. }
        | RoomError::ServerOfferPending => Code::FailedPrecondition,
    }
}

/// The JSON-RPC code of a room's refusal.
fn room_jsonrpc_code(err: &RoomError) -> i32 {
    use jsonrpc::*;
    match err {
        RoomError::InvalidRoomName(_)
        | RoomError::InvalidParticipantId(_)
        | RoomError::RoomManifestMismatch { .. }
        | RoomError::InvalidMessage(_) => INVALID_PARAMS,
        RoomError::RoomFull { .. } | RoomError::TooManyRooms(_) => SESSION_LIMIT,
        // An answer to a server offer with more m-lines than a subscriber may hold.
        RoomError::TooManyMLines(_) => BAD_ANSWER,
        RoomError::AlreadyJoined(_) => PEER_ID_EXISTS,
        RoomError::UnknownParticipant(_) => PEER_NOT_FOUND,
        RoomError::NoOfferPending
        | RoomError::StaleAnswer { .. }
        | RoomError::ServerOfferPending => FAILED_PRECONDITION,
    }
}

impl SessionError {
    /// The gRPC status code of a session host failure.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidSdp(_) | Self::InvalidCandidate(_) | Self::UnknownManifest(_) => {
                Code::InvalidArgument
            }
            Self::NoSession(_) => Code::NotFound,
            Self::AtCapacity(_) | Self::TooManyRooms(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Pipeline(_) | Self::Internal(_) => Code::Internal,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::RoomClosing(_) => Code::ResourceExhausted,
            Self::InvalidArgument(_) => Code::InvalidArgument,
        }
    }
}
