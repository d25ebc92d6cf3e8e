//! Server peer errors.

use crate::signaling::SessionError;

/// Why a server peer could not be set up or failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("WebRTC setup failed: {0}")]
    Setup(String),
    #[error("invalid SDP offer: {0}")]
    InvalidOffer(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("pipeline: {0}")]
    Pipeline(String),
    #[error("{step}: {message}")]
    Step { step: &'static str, message: String },
}

impl PeerError {
    pub(crate) fn step(step: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Step {
            step,
            message: err.to_string(),
        }
    }
}

impl From<PeerError> for SessionError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::InvalidOffer(m) => SessionError::InvalidSdp(m),
            PeerError::InvalidCandidate(m) => SessionError::InvalidCandidate(m),
            PeerError::Pipeline(m) => SessionError::Pipeline(m),
            other => SessionError::Internal(other.to_string()),
        }
    }
}
