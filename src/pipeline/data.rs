//! What flows through a pipeline, and its conversion to and from the wire `DataBuffer`.

use std::collections::HashMap;

use bytes::Bytes;

use crate::proto::common as pb;

/// Mono or interleaved f32 audio at any rate.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// Interleaved samples in [-1, 1].
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

/// One payload moving along the graph's edges.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeData {
    Audio(AudioFrame),
    Text { text: String, language: String },
    /// The JSON text as it came, so an echo returns it byte for byte.
    Json { payload: String, schema_type: String },
    Binary { data: Bytes, mime_type: String },
    Control(pb::ControlMessage),
    Video(pb::VideoFrame),
    Tensor(pb::TensorBuffer),
}

/// A payload plus the `DataBuffer` metadata that travels with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub data: RuntimeData,
    pub metadata: HashMap<String, String>,
}

impl Envelope {
    /// A payload with no metadata.
    pub fn new(data: RuntimeData) -> Self {
        Self {
            data,
            metadata: HashMap::new(),
        }
    }
}
