//! Errors of the media module.

/// Why a codec, framing or resampling operation failed.
///
/// Bad input (wrong frame size, corrupt packet) is an error, never a panic: packets come
/// from the network.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// libopus refused to create an encoder.
    #[error("failed to create Opus encoder")]
    EncoderCreate(#[source] opus::Error),

    /// libopus refused an encoder setting (bitrate, complexity, ...).
    #[error("failed to set Opus encoder {setting}")]
    EncoderConfig {
        /// The setting that was refused.
        setting: &'static str,
        #[source]
        source: opus::Error,
    },

    /// libopus refused to create a decoder.
    #[error("failed to create Opus decoder")]
    DecoderCreate(#[source] opus::Error),

    /// Encoding a frame failed.
    #[error("Opus encode failed")]
    Encode(#[source] opus::Error),

    /// Decoding a packet (or concealing a lost one) failed, typically a corrupt packet.
    #[error("Opus decode failed")]
    Decode(#[source] opus::Error),

    /// An empty packet was given to decode; loss is signalled with `conceal` instead.
    #[error("empty Opus packet")]
    EmptyPacket,

    /// The encoder only takes whole 20 ms frames.
    #[error("bad frame size: expected {expected} samples, got {actual}")]
    BadFrameSize {
        /// Samples the encoder needs per frame.
        expected: usize,
        /// Samples it was given.
        actual: usize,
    },

    /// Concealment and FEC lengths must be whole 2.5 ms units up to 120 ms.
    #[error("bad concealment length: {samples} samples (must be a multiple of 120, at most 5760)")]
    BadConcealLength {
        /// Samples requested.
        samples: usize,
    },

    /// A sample rate of zero or one the resampler cannot handle.
    #[error("cannot resample from {from} Hz to {to} Hz")]
    ResamplerCreate {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        #[source]
        source: Option<rubato::ResamplerConstructionError>,
    },

    /// The resampler failed while processing (a broken buffer-size invariant).
    #[error("resampling failed")]
    Resample(#[source] rubato::ResampleError),

    /// A buffer did not fit the resampler's chunk size (a broken invariant).
    #[error("resampler buffer has the wrong size")]
    ResampleBuffer(#[source] rubato::audioadapter_buffers::SizeError),
}

impl MediaError {
    /// A fixed label per kind, for metrics (never `Debug` text, so cardinality stays bounded).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::EncoderCreate(_) => "encoder_create",
            Self::EncoderConfig { .. } => "encoder_config",
            Self::DecoderCreate(_) => "decoder_create",
            Self::Encode(_) => "encode",
            Self::Decode(_) => "decode",
            Self::EmptyPacket => "empty_packet",
            Self::BadFrameSize { .. } => "bad_frame_size",
            Self::BadConcealLength { .. } => "bad_conceal_length",
            Self::ResamplerCreate { .. } => "resampler_create",
            Self::Resample(_) => "resample",
            Self::ResampleBuffer(_) => "resample_buffer",
        }
    }
}
