//! Why a client peer or its call failed.

/// A client peer's or its signaling's failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("WebRTC: {0}")]
    WebRtc(#[from] webrtc::Error),
    #[error("media: {0}")]
    Media(#[from] crate::media::MediaError),
    #[error("cannot reach the signaling server: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("signaling: {0}")]
    Signaling(String),
    #[error("signaling stream failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("probe: {0}")]
    Probe(String),
}

impl ClientError {
    /// A fixed label of the error's kind, to count failures by kind in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WebRtc(_) => "webrtc",
            Self::Media(_) => "media",
            Self::Connect(_) => "connect",
            Self::Signaling(_) | Self::Status(_) => "signaling",
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
            Self::Probe(_) => "probe",
        }
    }
}
