//! Why a load peer or a run failed.

use remotemedia_webrtc::client::ClientError;

/// A load peer's or the run's failure: the client's, or the Janus API's.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("Janus: {0}")]
    Janus(String),
    #[error("HTTP: {0}")]
    Http(String),
    /// A room participant's setup or the rooms run went wrong.
    #[error("room: {0}")]
    Room(String),
}

impl LoadgenError {
    /// A fixed label of the error's kind, to count failures by kind in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Client(e) => e.kind(),
            Self::Janus(_) => "janus",
            Self::Http(_) => "http",
            Self::Room(_) => "room",
        }
    }
}

/// The client's own failures reach the load generator through `?` as they did before the
/// client moved into the server crate.
macro_rules! from_client_error {
    ($($source:ty),*) => {$(
        impl From<$source> for LoadgenError {
            fn from(e: $source) -> Self {
                Self::Client(e.into())
            }
        }
    )*};
}

from_client_error!(
    webrtc::Error,
    tonic::Status,
    std::io::Error,
    remotemedia_webrtc::media::MediaError
);
