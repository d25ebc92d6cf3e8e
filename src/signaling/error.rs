//! Signaling errors and their one mapping to gRPC status codes (DESIGN.md §2).

use tonic::Code;

use super::session_host::SessionError;

/// Why a signaling request or stream failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    #[error("the first request on a stream must be an announce")]
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
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("{what} is {len} bytes, the limit is {limit}")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("too many buffered ICE candidates (limit {0}); send the offer first")]
    TooManyEarlyCandidates(usize),
    #[error("notification queue overflowed: this client reads too slowly")]
    SlowConsumer,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("signaling state unavailable: {0}")]
    StateUnavailable(String),
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl SignalingError {
    /// The gRPC status code of this error (the table of DESIGN.md §2).
    pub fn code(&self) -> Code {
        match self {
            Self::AnnounceRequired | Self::AlreadyAnnounced(_) => Code::FailedPrecondition,
            Self::InvalidPeerId(_)
            | Self::EmptyRequest
            | Self::InvalidSdp(_)
            | Self::InvalidCandidate(_)
            | Self::TooLarge { .. }
            | Self::InvalidRequest(_) => Code::InvalidArgument,
            Self::PeerIdTaken(_) | Self::PeerIdReserved(_) => Code::AlreadyExists,
            Self::TooManyPeers(_) | Self::TooManyEarlyCandidates(_) | Self::SlowConsumer => {
                Code::ResourceExhausted
            }
            Self::UnknownPeer(_) => Code::NotFound,
            Self::ShuttingDown | Self::StateUnavailable(_) => Code::Unavailable,
            Self::Session(err) => err.code(),
        }
    }
}

impl SignalingError {
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
            Self::InvalidSdp(_) => "invalid_sdp",
            Self::InvalidCandidate(_) => "invalid_candidate",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidRequest(_) => "invalid_request",
            Self::TooManyEarlyCandidates(_) => "too_many_early_candidates",
            Self::SlowConsumer => "slow_consumer",
            Self::ShuttingDown => "shutting_down",
            Self::StateUnavailable(_) => "state_unavailable",
            Self::Session(err) => err.metric_label(),
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
        }
    }
}

impl From<SignalingError> for tonic::Status {
    fn from(err: SignalingError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
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
            Self::AtCapacity(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Pipeline(_) | Self::Internal(_) => Code::Internal,
        }
    }
}
