//! The original's node names: the ones a node of ours does the same job for (aliases), and the
//! ones we have no node for, with what to use instead, so its manifests load or fail with advice
//! rather than a bare "unknown node_type".

/// Original name → our node type. Params are read by our node (camelCase or snake_case), so the
/// original's spellings work; params only the original had are ignored.
pub const NODE_ALIASES: &[(&str, &str)] = &[
    // The original's Rust "fast" VAD (an energy threshold); ours is WebRTC's GMM VAD.
    ("RustVADNode", "VADNode"),
    // The original's Rust resampler, the same rubato-style job as FastResampleNode.
    ("RustResampleNode", "FastResampleNode"),
    // Names of the pass-through node in the original's Python client and test fixtures.
    ("PassThroughNode", "PassThrough"),
    ("PassthroughNode", "PassThrough"),
];

const TTS: &str = "this server's text-to-speech node is TextToSpeechNode (engine espeak-ng; \
                   params voice, rate, pitch): put it in this node's place, as examples/tts.yaml \
                   does";
const ASR: &str = "this server has no speech-recognition node; let VADNode and \
                   AudioBufferAccumulatorNode cut utterances and run the recognizer in your client \
                   or a separate service";
const PYTHON: &str = "this server runs no Python nodes (no Python runtime); use the Rust nodes it \
                      lists, or keep this step in your client";
const VIDEO: &str = "this server does not decode video: video frames pass through pipelines \
                     untouched, and media.video (loopback, forward, drop) says what the server \
                     peer does with the video track";

/// Original node types we have no node for, each with what to use instead.
const UNAVAILABLE: &[(&str, &str)] = &[
    ("KokoroTTSNode", TTS),
    ("KokoroTTS", TTS),
    ("VibeVoiceTTSNode", TTS),
    ("TTSNode", TTS),
    ("LFM2AudioNode", ASR),
    ("WhisperNode", ASR),
    ("WhisperSTT", ASR),
    ("WhisperASR", ASR),
    ("RustWhisperTranscriber", ASR),
    ("WhisperXTranscriber", ASR),
    ("OmniASRNode", ASR),
    ("OmniASRTranscriber", ASR),
    ("SimplePyTorchNode", PYTHON),
    ("PythonNode", PYTHON),
    ("ExpanderNode", PYTHON),
    ("RangeGeneratorNode", PYTHON),
    ("TransformAndExpandNode", PYTHON),
    ("ChainedTransformNode", PYTHON),
    ("ConditionalExpanderNode", PYTHON),
    ("FilterNode", PYTHON),
    ("VideoFlip", VIDEO),
    ("VideoProcessorNode", VIDEO),
    ("SynchronizedAudioVideoNode", VIDEO),
    (
        "RemotePipelineNode",
        "this server has no remote-pipeline node; to run pipelines on other machines, run it as \
         a cluster (--mode frontend with --mode worker processes), which places whole sessions",
    ),
    (
        "AudioTransform",
        "use FastResampleNode (targetRate, channels) for the resampling part",
    ),
    (
        "AudioResample",
        "use FastResampleNode (targetRate required)",
    ),
    (
        "AudioResampleNode",
        "use FastResampleNode (targetRate required)",
    ),
    (
        "RustFormatConverterNode",
        "not needed: every node here works on f32 audio, and audio from the data channel is \
         converted from its AudioBuffer.format on arrival; remove the node",
    ),
    (
        "OpusEncoderNode",
        "not needed: the server peer encodes and decodes Opus itself (media.opus in the \
         manifest sets bitrate, complexity, FEC and DTX); remove the node",
    ),
    (
        "OpusDecoderNode",
        "not needed: the server peer decodes Opus itself; remove the node",
    ),
    (
        "Echo",
        "use PassThrough (the original's Echo wrapped each input in a JSON object with a counter)",
    ),
    (
        "EchoNode",
        "use PassThrough (the original's Echo wrapped each input in a JSON object with a counter)",
    ),
    (
        "MediaReaderNode",
        "this server reads no files: a pipeline's input is the peer's audio track and data \
         channel",
    ),
    (
        "AudioTrackSource",
        "not needed: the peer's audio track is the pipeline's input",
    ),
];

/// Our node type for `node_type`: the alias target, or `node_type` itself.
pub fn canonical_type(node_type: &str) -> &str {
    NODE_ALIASES
        .iter()
        .find(|(original, _)| *original == node_type)
        .map_or(node_type, |(_, ours)| ours)
}

/// What to use instead of an original node type we do not have; `None` for any other name.
pub fn unavailable_advice(node_type: &str) -> Option<&'static str> {
    UNAVAILABLE
        .iter()
        .find(|(name, _)| *name == node_type)
        .map(|(_, advice)| *advice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_point_at_our_nodes_and_never_at_an_unavailable_one() {
        for (original, ours) in NODE_ALIASES {
            assert!(
                super::super::NODE_TYPES.contains(ours),
                "{original} -> {ours}"
            );
            assert!(unavailable_advice(original).is_none(), "{original}");
        }
        assert_eq!(canonical_type("RustVADNode"), "VADNode");
        assert_eq!(canonical_type("GainNode"), "GainNode");
    }
}
