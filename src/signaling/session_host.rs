//! The session host: where server sessions live. In `grpc` mode the in-process session
//! manager; in the cluster a gRPC client of a media worker. Signaling only sees this trait.

use async_trait::async_trait;

/// An ICE candidate as the browser API spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCandidate {
    /// `RTCIceCandidate.candidate` (`candidate:...`); empty means end-of-candidates.
    pub candidate: String,
    /// Empty means unset.
    pub sdp_mid: String,
    pub sdp_mline_index: u32,
}

/// Everything a session host needs to create a server session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// The client peer the session belongs to.
    pub peer_id: String,
    /// The offer this session answers (its id in logs and traces).
    pub offer_id: String,
    pub offer_sdp: String,
    /// The pipeline to run, by manifest name (announce metadata `manifest`); `None`: default.
    pub manifest: Option<String>,
    /// The room the peer joined (announce metadata `room`, validated); `None`: the lobby.
    pub room: Option<String>,
    /// The pipeline the peer asks its room to run (announce metadata `room_manifest`): the
    /// room's creator picks it; a later joiner may only repeat it.
    pub room_manifest: Option<String>,
}

/// What a session host reports about its sessions, for signaling to deliver to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The server peer of `peer_id` gathered a candidate (trickle ICE).
    LocalCandidate {
        peer_id: String,
        candidate: IceCandidate,
    },
    /// The host closed `peer_id`'s session on its own (timeout, failure, shutdown).
    /// Closes the caller asked for are not reported.
    Closed { peer_id: String, reason: String },
    /// The server renegotiates `peer_id`'s session (a room's tracks changed): the client
    /// must answer `offer_id` (`OfferNotification` from `remotemedia-server`).
    ServerOffer {
        peer_id: String,
        offer_id: String,
        sdp: String,
    },
}

/// Why a session operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("invalid SDP offer: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("no server session for peer {0:?}")]
    NoSession(String),
    #[error("server is at its session capacity ({0})")]
    AtCapacity(usize),
    #[error("{0}")]
    UnknownManifest(String),
    #[error("no media worker available: {0}")]
    Unavailable(String),
    #[error("pipeline failed: {0}")]
    Pipeline(String),
    #[error("server peer failed: {0}")]
    Internal(String),
    /// An answer to the server with no server offer pending, or for a stale one; a client
    /// offer while a server offer is pending ("server offer pending").
    #[error("{0}")]
    FailedPrecondition(String),
    /// `--max-rooms`: the offer would create one room more than this process hosts.
    #[error("this server hosts at most {0} rooms")]
    TooManyRooms(usize),
    /// The room's worker drains: it takes no new participant of the room, whose existing
    /// participants stay until they leave (so the drain ends). Holds the room's name.
    #[error("room {0} is closing")]
    RoomClosing(String),
    /// A request the session's room refuses as it stands (another room pipeline than the
    /// room's): INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
}

/// Creates, feeds and closes server sessions, one per client peer.
#[async_trait]
pub trait SessionHost: Send + Sync + 'static {
    /// Creates a session for the request's peer from its SDP offer and returns the SDP answer,
    /// with the server's candidates and end-of-candidates (host-only gathering is immediate).
    /// An existing session of the same peer is closed first: a re-offer replaces it.
    async fn create_session(&self, request: SessionRequest) -> Result<String, SessionError>;

    /// Adds a remote candidate to `peer_id`'s session.
    async fn add_candidate(
        &self,
        peer_id: &str,
        candidate: IceCandidate,
    ) -> Result<(), SessionError>;

    /// Closes `peer_id`'s session; returns whether one existed.
    async fn close_session(&self, peer_id: &str) -> bool;

    /// Applies the client's answer to the server offer pending on `peer_id`'s session
    /// (`offer_id`, when given, must be that offer's). Hosts that never renegotiate have no
    /// offer pending.
    async fn answer_server_offer(
        &self,
        peer_id: &str,
        offer_id: Option<&str>,
        sdp: String,
    ) -> Result<(), SessionError> {
        let _ = (peer_id, offer_id, sdp);
        Err(SessionError::FailedPrecondition(
            "no server offer is pending".into(),
        ))
    }

    /// `peer_id`'s signaling stream broke and it is in its resume grace: its session runs on,
    /// but nothing it is asked can be answered now (a pending server offer's answer timer
    /// stops). Hosts that never renegotiate ignore it.
    async fn stream_detached(&self, peer_id: &str) {
        let _ = peer_id;
    }

    /// `peer_id` resumed within its grace: a pending server offer is sent again.
    async fn stream_resumed(&self, peer_id: &str) {
        let _ = peer_id;
    }

    /// Sessions alive now.
    fn session_count(&self) -> usize;
}
