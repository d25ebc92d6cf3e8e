//! Errors of the room module: every refusal a room makes, typed so that signaling maps each to
//! one gRPC and one JSON-RPC code (in `signaling/error.rs`, the one place for mappings).

/// Why a room refused a request.
///
/// The intended codes (the rooms issue's contract) are given per variant; the mapping itself
/// belongs to `signaling/error.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// INVALID_ARGUMENT: the `room` metadata is not 1–64 characters of `[A-Za-z0-9_-]`.
    #[error("invalid room name {0:?}: 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidRoomName(String),
    /// INVALID_ARGUMENT at announce: a room participant's peer id becomes an msid id, so it
    /// must be 1–64 characters of `[A-Za-z0-9._-]`.
    #[error("invalid peer id {0:?} for a room: 1 to 64 characters of [A-Za-z0-9._-]")]
    InvalidParticipantId(String),
    /// RESOURCE_EXHAUSTED (-32005) at announce, naming the room.
    #[error("room {room:?} is full: at most {max} participants")]
    RoomFull { room: String, max: usize },
    /// RESOURCE_EXHAUSTED (-32005) at the offer that would create a room.
    #[error("this server hosts at most {0} rooms")]
    TooManyRooms(usize),
    /// ALREADY_EXISTS: the peer id is already a participant of the room.
    #[error("{0:?} is already in the room")]
    AlreadyJoined(String),
    /// NOT_FOUND: no such participant in the room (as if it did not exist).
    #[error("unknown participant {0:?}")]
    UnknownParticipant(String),
    /// FAILED_PRECONDITION: an answer to the server while no server offer is pending.
    #[error("no server offer is pending")]
    NoOfferPending,
    /// FAILED_PRECONDITION: an answer naming another offer than the pending one.
    #[error("answer is for offer {got:?}, the pending offer is {pending:?}")]
    StaleAnswer { pending: String, got: String },
    /// FAILED_PRECONDITION: glare. The server is the impolite side: the client must answer the
    /// server's offer before offering itself.
    #[error("server offer pending")]
    ServerOfferPending,
    /// RESOURCE_EXHAUSTED: a subscriber's SDP would exceed its m-line budget.
    #[error("a subscriber's SDP may hold at most {0} forwarded m-lines")]
    TooManyMLines(usize),
    /// INVALID_ARGUMENT: a participant asks for another room pipeline (announce metadata
    /// `room_manifest`) than the one its room runs, chosen by the participant that created it.
    #[error("room {room:?} runs {runs}, not the room manifest {asked:?}")]
    RoomManifestMismatch {
        room: String,
        /// `pipeline "<name>"` or `no pipeline`.
        runs: String,
        asked: String,
    },
    /// INVALID_ARGUMENT: a room channel message that does not parse.
    #[error("invalid room message: {0}")]
    InvalidMessage(String),
}

impl RoomError {
    /// A fixed label for counting refusals by kind (never the message text).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidRoomName(_) => "invalid_room_name",
            Self::InvalidParticipantId(_) => "invalid_participant_id",
            Self::RoomFull { .. } => "room_full",
            Self::TooManyRooms(_) => "too_many_rooms",
            Self::AlreadyJoined(_) => "already_joined",
            Self::UnknownParticipant(_) => "unknown_participant",
            Self::NoOfferPending => "no_offer_pending",
            Self::StaleAnswer { .. } => "stale_answer",
            Self::ServerOfferPending => "server_offer_pending",
            Self::TooManyMLines(_) => "too_many_mlines",
            Self::RoomManifestMismatch { .. } => "room_manifest_mismatch",
            Self::InvalidMessage(_) => "invalid_message",
        }
    }
}
