//! Errors of the pipeline module: one enum per concern, each message naming the file, node or
//! field at fault so an operator can fix a manifest from the log line alone.

use std::path::PathBuf;

/// A `DataBuffer` from the wire that cannot become an [`Envelope`](super::Envelope).
///
/// Peers send these, so every variant is bad input, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("DataBuffer has no payload (data_type not set)")]
    NoPayload,
    #[error("audio.sample_rate must be between 1 and {max}, got {got}")]
    SampleRate { got: u32, max: u32 },
    #[error("audio.channels must be between 1 and {max}, got {got}")]
    Channels { got: u32, max: u32 },
    #[error("audio.format {0} is not a known AudioFormat")]
    UnknownFormat(i32),
    #[error("audio.samples: {len} bytes is not a whole number of {size}-byte samples")]
    SampleBytes { len: usize, size: usize },
    #[error("audio.samples: {samples} samples do not split into {channels} channels")]
    ChannelMismatch { samples: usize, channels: u32 },
    #[error(
        "audio.num_samples is {declared} but samples hold {actual} per channel ({total} in all)"
    )]
    NumSamples {
        declared: u64,
        actual: usize,
        total: usize,
    },
    #[error("text.encoding `{0}` is not supported (only utf-8)")]
    TextEncoding(String),
    #[error("text.text_data is not valid UTF-8: {0}")]
    TextUtf8(#[source] std::string::FromUtf8Error),
    #[error("json.json_payload is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// A manifest that cannot be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read manifest: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Wraps any other variant with the file it came from.
    #[error("{}: {source}", file.display())]
    InFile {
        file: PathBuf,
        #[source]
        source: Box<ManifestError>,
    },
    /// serde_json's message carries the line and column.
    #[error("invalid JSON manifest: {0}")]
    Json(#[source] serde_json::Error),
    /// serde_yaml's message carries the field path, line and column.
    #[error("invalid YAML manifest: {0}")]
    Yaml(#[source] serde_yaml::Error),
    #[error("`version` must not be empty")]
    EmptyVersion,
    #[error("nodes[{index}]: `id` must not be empty")]
    EmptyNodeId { index: usize },
    #[error("node `{id}`: `node_type` must not be empty")]
    EmptyNodeType { id: String },
    #[error("node `{id}`: duplicate `id` (nodes[{first}] and nodes[{second}])")]
    DuplicateNodeId {
        id: String,
        first: usize,
        second: usize,
    },
    #[error("connections[{index}].{field}: no node with id `{id}`")]
    UnknownNode {
        index: usize,
        field: &'static str,
        id: String,
    },
    #[error("connections[{index}]: node `{id}` is connected to itself")]
    SelfLoop { index: usize, id: String },
    #[error("connections[{index}]: `{from}` -> `{to}` is listed twice")]
    DuplicateConnection {
        index: usize,
        from: String,
        to: String,
    },
    #[error("connections form a cycle: {path}")]
    Cycle { path: String },
    #[error("media.{field}: {message}")]
    Media {
        field: &'static str,
        message: String,
    },
}

impl ManifestError {
    /// Attaches the file name, so `load` errors say which manifest is wrong.
    pub(crate) fn in_file(self, file: PathBuf) -> Self {
        match self {
            Self::Read { .. } | Self::InFile { .. } => self,
            other => Self::InFile {
                file,
                source: Box::new(other),
            },
        }
    }
}

/// A node that cannot be built from its spec, or one input it could not process.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node `{id}`: unknown node_type `{node_type}` (known: {known})")]
    UnknownType {
        id: String,
        node_type: String,
        known: String,
    },
    /// A node of the original (Python-backed, video, remote) this server does not have.
    #[error(
        "node `{id}`: node_type `{node_type}` of the original is not available here: {advice}"
    )]
    Unavailable {
        id: String,
        node_type: String,
        advice: &'static str,
    },
    #[error("node `{id}`: params: {message}")]
    Params { id: String, message: String },
    #[error("node `{id}`: params.{field}: {message}")]
    Param {
        id: String,
        field: String,
        message: String,
    },
    /// A single input the node could not handle; the session goes on without it.
    #[error("{0}")]
    Input(String),
}

/// A pipeline that cannot be built or started.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("a pipeline session must be started inside a tokio runtime")]
    NoRuntime,
}
