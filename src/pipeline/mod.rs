//! Pipelines: the manifest, the graph runner and the nodes.
//!
//! A [`Manifest`] is parsed and validated, a [`Pipeline`] is built from it once at start (every
//! node is tried, so a bad manifest fails early), and each server peer gets its own
//! [`PipelineSession`] from [`Pipeline::start`].

mod catalog;
pub mod data;
mod error;
mod graph;
mod histogram;
mod input;
mod manifest;
pub mod metrics;
mod nodes;
pub mod offload;
pub mod playback;
mod pool;

pub use catalog::{CatalogError, PipelineCatalog};
pub use data::{
    AudioFrame, Envelope, RuntimeData, AUDIO_METADATA_JSON_KEY, NUMPY_DEFAULT_SAMPLE_RATE,
    TEXT_CHANNEL_KEY,
};
pub use error::{DataError, ManifestError, NodeError, PipelineError};
pub use graph::{
    NodeStats, Pipeline, PipelineSession, PipelineStats, CHANNEL_CAPACITY, DEFAULT_INPUT_QUEUE,
    DEFAULT_INPUT_QUEUE_BYTES, MAX_JOBS_IN_FLIGHT,
};
pub use histogram::{LatencyHistogram, LATENCY_BUCKETS_US};
pub use input::{InputClosed, PipelineInput, TrySendError};
pub use manifest::{
    AudioMode, Connection, Manifest, ManifestMetadata, MediaSettings, NodeSpec, OpusSettings,
    VideoMode,
};
pub use nodes::{
    canonical_type, create_node, create_node_with, unavailable_advice, AudioBufferAccumulatorNode,
    AudioChunkerNode, CalculatorNode, Decoder, DecoderConfig, DecoderPool, EngineError,
    FastResampleNode, GainNode, HttpNode, HttpResult, Lease, Node, NodeLimits, Params, PassThrough,
    Quality, Search, SpeculativeVadGate, SpeechEngine, SpeechToTextNode, SphinxError,
    TextCollectorNode, TextToSpeechNode, ToneGeneratorNode, TurnDetectorNode, TurnSettings,
    VadEvent, VadNode, DECODER_RATE, DEFAULT_MODEL_DIR, HTTP_SCHEMA, INTERRUPTED_SCHEMA,
    NODE_ALIASES, NODE_TYPES, RECOGNIZERS, TRANSCRIPT_SCHEMA, TURN_SCHEMA, VAD_SCHEMA,
};
pub use playback::{Playback, PlaybackState, SPEAKING_HANGOVER};
pub use pool::BlockingPool;
