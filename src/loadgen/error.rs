//! Why a load peer or a run failed.

/// A load peer's or the run's failure.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
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
    #[error("Janus: {0}")]
    Janus(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("probe: {0}")]
    Probe(String),
}

impl LoadgenError {
    /// A fixed label of the error's kind, to count failures by kind in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WebRtc(_) => "webrtc",
            Self::Media(_) => "media",
            Self::Connect(_) => "connect",
            Self::Signaling(_) | Self::Status(_) => "signaling",
            Self::Janus(_) => "janus",
            Self::Http(_) => "http",
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io",
            Self::Probe(_) => "probe",
        }
    }
}
