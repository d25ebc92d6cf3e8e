//! Audio codec, framing and resampling: no WebRTC types here.
//!
//! Everything in this module is sans-IO and synchronous: the server peer owns one encoder,
//! decoder, framer and resampler per session and drives them from its own task.
//! The media format everywhere is mono `f32` at [`SAMPLE_RATE`].

use std::time::Duration;

mod analysis;
mod error;
mod framer;
mod jitter_buffer;
mod opus_codec;
mod resample;

pub use analysis::{band_energy_ratio, dominant_frequency, rms, rms_dbfs, sine, SineGenerator};
pub use error::MediaError;
pub use framer::Framer;
pub use jitter_buffer::{JitterBuffer, JitterOutput, JitterStats};
pub use opus_codec::{opus_packet_samples, OpusConfig, OpusDecoder, OpusEncoder};
pub use resample::Resampler;

/// Sample rate of all audio on the media path (Opus' native rate, so no resampling at the codec).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples in one 20 ms mono frame at [`SAMPLE_RATE`]: the unit we encode and send.
pub const FRAME_SAMPLES: usize = 960;

/// Duration of one frame of [`FRAME_SAMPLES`]; the pacer ticks at this period.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Largest Opus packet duration (120 ms) in samples: the decoder's buffer size.
pub const MAX_PACKET_SAMPLES: usize = 5760;
