//! Pipeline nodes: sans-IO state machines that turn one input into zero or more outputs, plus
//! the registry that builds them from a manifest's `node_type`.
//!
//! Nodes never block, spawn or hold a clock of their own: the graph runner owns the task and the
//! channels around each one, so a node is tested by calling `process` directly. Work that
//! waits (a speech engine) is handed to the runner as jobs, and time comes in as ticks (see
//! [`crate::pipeline::offload`]).

mod accumulator;
mod calculator;
mod chunker;
mod gain;
mod http;
mod http_stream;
mod original;
mod params;
mod passthrough;
mod pocketsphinx_ffi;
mod resample;
mod speculative_gate;
mod speech_engine;
mod speech_recognizer;
mod speech_to_text;
mod text_collector;
mod text_to_speech;
mod tone;
mod turn_detector;
mod vad;
mod vad_core;

pub use accumulator::AudioBufferAccumulatorNode;
pub use calculator::CalculatorNode;
pub use chunker::AudioChunkerNode;
pub use gain::GainNode;
pub use http::{HttpNode, HttpResult, HTTP_SCHEMA};
pub use original::{canonical_type, unavailable_advice, NODE_ALIASES};
pub use params::Params;
pub use passthrough::PassThrough;
pub use pocketsphinx_ffi::{Decoder, DecoderConfig, Search, SphinxError, DECODER_RATE};
pub use resample::{FastResampleNode, Quality};
pub use speculative_gate::SpeculativeVadGate;
pub use speech_engine::{EngineError, SpeechEngine};
pub use speech_recognizer::{DecoderPool, Lease, DEFAULT_MODEL_DIR, RECOGNIZERS};
pub use speech_to_text::{SpeechToTextNode, TRANSCRIPT_SCHEMA};
pub use text_collector::TextCollectorNode;
pub use text_to_speech::{TextToSpeechNode, INTERRUPTED_SCHEMA};
pub use tone::ToneGeneratorNode;
pub use turn_detector::{TurnDetectorNode, TurnSettings, TURN_SCHEMA};
pub use vad::VadNode;
pub use vad_core::{VadEvent, VAD_SCHEMA};

use super::data::{Envelope, RuntimeData};
use super::error::NodeError;
use super::manifest::NodeSpec;
use super::offload::Offload;

/// One processing step of a pipeline.
///
/// `Send` because each node runs in its own tokio task.
pub trait Node: Send {
    /// Whether this node takes `data`; inputs it does not take are dropped for this node only
    /// (fan-in is how a node gets several kinds of input and keeps the ones it wants).
    fn accepts(&self, data: &RuntimeData) -> bool {
        let _ = data;
        true
    }

    /// Whether this node works on audio: a 1-D float32/int16 numpy array (later originals'
    /// clients) then reaches it as audio (see [`Envelope::numpy_as_audio`]).
    fn wants_audio(&self) -> bool {
        false
    }

    /// Handles one input, pushing any outputs to `out` in the order they should travel.
    ///
    /// # Errors
    /// [`NodeError`] when this one input cannot be processed; the runner logs it, discards
    /// whatever was pushed to `out` for it, and carries on with the next input.
    fn process(&mut self, input: Envelope, out: &mut Vec<Envelope>) -> Result<(), NodeError>;

    /// The offloaded side of this node, when it hands blocking work to the process's pool or
    /// runs on a clock (see [`crate::pipeline::offload`]); `None` for a plain node.
    fn offload(&mut self) -> Option<&mut dyn Offload> {
        None
    }

    /// Called once at end of stream, after the last input (and, for an offloaded node, once
    /// its jobs are back and it asks for no more ticks), so buffering nodes can flush.
    ///
    /// # Errors
    /// [`NodeError`] when the flush fails; its outputs are discarded.
    fn finish(&mut self, out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let _ = out;
        Ok(())
    }
}

/// What a node may hold of a peer's input, whatever its params say (the server's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// `TextCollectorNode`'s unfinished sentence (`--max-text-buffer-bytes`).
    pub text_buffer_bytes: usize,
    /// `AudioBufferAccumulatorNode`'s utterance (`--max-utterance-bytes`).
    pub utterance_bytes: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            text_buffer_bytes: 64 * 1024,
            utterance_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Every `node_type` [`create_node`] knows, for error messages.
pub const NODE_TYPES: &[&str] = &[
    "PassThrough",
    "CalculatorNode",
    "AudioChunkerNode",
    "FastResampleNode",
    "AudioBufferAccumulatorNode",
    "TextCollectorNode",
    "VADNode",
    "SileroVADNode",
    "SpeculativeVADGate",
    "GainNode",
    "ToneGeneratorNode",
    "TextToSpeechNode",
    "SpeechToTextNode",
    "TurnDetectorNode",
    "HttpNode",
];

/// Builds the node a manifest entry describes.
///
/// # Errors
/// [`NodeError::UnknownType`] for a `node_type` not in [`NODE_TYPES`] (nor an alias of the
/// original's in [`NODE_ALIASES`]), [`NodeError::Unavailable`] for an original node we do not
/// have, [`NodeError::Param`] for bad params; all name the node id.
pub fn create_node(spec: &NodeSpec) -> Result<Box<dyn Node>, NodeError> {
    create_node_with(spec, &NodeLimits::default())
}

/// [`create_node`] with the server's [`NodeLimits`].
///
/// # Errors
/// As [`create_node`].
pub fn create_node_with(spec: &NodeSpec, limits: &NodeLimits) -> Result<Box<dyn Node>, NodeError> {
    let params = Params::new(&spec.id, &spec.params)?;
    match canonical_type(&spec.node_type) {
        "PassThrough" => Ok(Box::new(PassThrough::new(&params)?)),
        "CalculatorNode" => Ok(Box::new(CalculatorNode::new(&params)?)),
        "AudioChunkerNode" => Ok(Box::new(AudioChunkerNode::new(&params)?)),
        "FastResampleNode" => Ok(Box::new(FastResampleNode::new(&params)?)),
        "AudioBufferAccumulatorNode" => Ok(Box::new(
            AudioBufferAccumulatorNode::new(&params)?.with_max_bytes(limits.utterance_bytes),
        )),
        "TextCollectorNode" => Ok(Box::new(
            TextCollectorNode::new(&params)?.with_max_bytes(limits.text_buffer_bytes),
        )),
        "VADNode" => Ok(Box::new(VadNode::new(&params)?)),
        "SileroVADNode" => Ok(Box::new(VadNode::silero(&params)?)),
        "SpeculativeVADGate" => Ok(Box::new(SpeculativeVadGate::new(&params)?)),
        "GainNode" => Ok(Box::new(GainNode::new(&params)?)),
        "ToneGeneratorNode" => Ok(Box::new(ToneGeneratorNode::new(&params)?)),
        "TextToSpeechNode" => Ok(Box::new(TextToSpeechNode::new(&params)?)),
        "SpeechToTextNode" => Ok(Box::new(SpeechToTextNode::new(&params)?)),
        "TurnDetectorNode" => Ok(Box::new(TurnDetectorNode::new(&params)?)),
        "HttpNode" => Ok(Box::new(HttpNode::new(&params)?)),
        other => Err(match unavailable_advice(other) {
            Some(advice) => NodeError::Unavailable {
                id: spec.id.clone(),
                node_type: other.to_owned(),
                advice,
            },
            None => NodeError::UnknownType {
                id: spec.id.clone(),
                node_type: other.to_owned(),
                known: NODE_TYPES.join(", "),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(node_type: &str, params: serde_json::Value) -> NodeSpec {
        NodeSpec {
            id: "n1".into(),
            node_type: node_type.into(),
            params,
            is_streaming: false,
        }
    }

    #[test]
    fn registry_builds_known_types() {
        for t in NODE_TYPES {
            // FastResampleNode's targetRate and HttpNode's url are required; everything else
            // has defaults.
            let params = match *t {
                "FastResampleNode" => serde_json::json!({"targetRate": 16000}),
                "HttpNode" => serde_json::json!({"url": "http://127.0.0.1:9/"}),
                _ => serde_json::Value::Null,
            };
            assert!(create_node(&spec(t, params)).is_ok(), "{t}");
        }
    }

    #[test]
    fn unknown_type_names_node_and_type() {
        let err = create_node(&spec("Nope", serde_json::json!({})))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`n1`") && err.contains("`Nope`"), "{err}");
    }

    #[test]
    fn params_must_be_a_map() {
        let err = create_node(&spec("PassThrough", serde_json::json!([1])))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("node `n1`: params"), "{err}");
    }
}
