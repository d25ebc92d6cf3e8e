//! Why a server session ended: one fixed set, for logs, metrics and the client.

/// Why a server session was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client disconnected it or its signaling stream ended.
    Client,
    /// A new offer from the same client replaced it.
    Replaced,
    /// Not ICE+DTLS connected before the connect timeout.
    ConnectTimeout,
    /// ICE (consent) or DTLS failed.
    Failed,
    /// The peer connection closed under us.
    PeerClosed,
    /// No media arrived for the media timeout.
    MediaTimeout,
    /// The server is shutting down.
    Shutdown,
    /// A room participant answered neither a server offer nor its re-send.
    AnswerTimeout,
}

impl CloseReason {
    /// Every reason, so the metrics can show each at zero before it first happens.
    pub const ALL: [Self; 8] = [
        Self::Client,
        Self::Replaced,
        Self::ConnectTimeout,
        Self::Failed,
        Self::PeerClosed,
        Self::MediaTimeout,
        Self::Shutdown,
        Self::AnswerTimeout,
    ];

    /// A sentence for logs and call records.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Client => "closed by the client",
            Self::Replaced => "replaced by a new offer",
            Self::ConnectTimeout => "not connected before the connect timeout",
            Self::Failed => "ICE or DTLS failed",
            Self::PeerClosed => "peer connection closed",
            Self::MediaTimeout => "no media received before the media timeout",
            Self::Shutdown => "server shutting down",
            Self::AnswerTimeout => "no answer to a server offer before the answer timeout",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Replaced => "replaced",
            Self::ConnectTimeout => "connect_timeout",
            Self::Failed => "failed",
            Self::PeerClosed => "peer_closed",
            Self::MediaTimeout => "media_timeout",
            Self::Shutdown => "shutdown",
            Self::AnswerTimeout => "answer_timeout",
        }
    }
}
