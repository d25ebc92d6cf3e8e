//! What flows through a pipeline, and its conversion to and from the wire `DataBuffer`.

use std::collections::HashMap;

use bytes::Bytes;

use super::error::DataError;

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
    Text {
        text: String,
        language: String,
    },
    /// The JSON text as it came, so an echo returns it byte for byte.
    Json {
        payload: String,
        schema_type: String,
    },
    Binary {
        data: Bytes,
        mime_type: String,
    },
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

/// Upper bounds that keep a hostile `DataBuffer` from steering resamplers or channel math into
/// absurd territory; real audio is far below both.
const MAX_SAMPLE_RATE: u32 = 768_000;
const MAX_CHANNELS: u32 = 64;

impl Envelope {
    /// Reads a wire `DataBuffer` (one data-channel message) into a pipeline payload.
    ///
    /// Audio is decoded according to its `format` into interleaved f32; text must be UTF-8; JSON
    /// must parse but is kept as the original text.
    ///
    /// # Errors
    /// [`DataError`] when no payload is set or the payload is malformed (see its variants).
    pub fn from_data_buffer(buffer: pb::DataBuffer) -> Result<Envelope, DataError> {
        use pb::data_buffer::DataType;
        let data = match buffer.data_type.ok_or(DataError::NoPayload)? {
            DataType::Audio(audio) => RuntimeData::Audio(audio_from_pb(audio)?),
            DataType::Text(text) => {
                let encoding = text.encoding.trim().to_ascii_lowercase();
                if !matches!(
                    encoding.as_str(),
                    "" | "utf-8" | "utf8" | "ascii" | "us-ascii"
                ) {
                    return Err(DataError::TextEncoding(text.encoding));
                }
                RuntimeData::Text {
                    text: String::from_utf8(text.text_data).map_err(DataError::TextUtf8)?,
                    language: text.language,
                }
            }
            DataType::Json(json) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&json.json_payload)
                    .map_err(DataError::Json)?;
                RuntimeData::Json {
                    payload: json.json_payload,
                    schema_type: json.schema_type,
                }
            }
            DataType::Binary(binary) => RuntimeData::Binary {
                data: Bytes::from(binary.data),
                mime_type: if binary.mime_type.is_empty() {
                    DEFAULT_MIME_TYPE.to_owned()
                } else {
                    binary.mime_type
                },
            },
            DataType::Control(control) => RuntimeData::Control(control),
            DataType::Video(video) => RuntimeData::Video(video),
            DataType::Tensor(tensor) => RuntimeData::Tensor(tensor),
        };
        Ok(Envelope {
            data,
            metadata: buffer.metadata,
        })
    }

    /// Writes this payload as a wire `DataBuffer`; audio always goes out as f32 little-endian.
    pub fn into_data_buffer(self) -> pb::DataBuffer {
        use pb::data_buffer::DataType;
        let data_type = match self.data {
            RuntimeData::Audio(frame) => DataType::Audio(audio_to_pb(&frame)),
            RuntimeData::Text { text, language } => DataType::Text(pb::TextBuffer {
                text_data: text.into_bytes(),
                encoding: "utf-8".to_owned(),
                language,
            }),
            RuntimeData::Json {
                payload,
                schema_type,
            } => DataType::Json(pb::JsonData {
                json_payload: payload,
                schema_type,
            }),
            RuntimeData::Binary { data, mime_type } => DataType::Binary(pb::BinaryBuffer {
                // Free when this is the only handle to the bytes, a copy otherwise.
                data: Vec::from(data),
                mime_type: if mime_type.is_empty() {
                    DEFAULT_MIME_TYPE.to_owned()
                } else {
                    mime_type
                },
            }),
            RuntimeData::Control(control) => DataType::Control(control),
            RuntimeData::Video(video) => DataType::Video(video),
            RuntimeData::Tensor(tensor) => DataType::Tensor(tensor),
        };
        pb::DataBuffer {
            data_type: Some(data_type),
            metadata: self.metadata,
        }
    }
}

/// The original's name for "unknown binary", kept so its clients see the same value.
const DEFAULT_MIME_TYPE: &str = "application/octet-stream";

fn audio_from_pb(audio: pb::AudioBuffer) -> Result<AudioFrame, DataError> {
    if audio.sample_rate == 0 || audio.sample_rate > MAX_SAMPLE_RATE {
        return Err(DataError::SampleRate {
            got: audio.sample_rate,
            max: MAX_SAMPLE_RATE,
        });
    }
    let channels = match u16::try_from(audio.channels) {
        Ok(c) if c >= 1 && u32::from(c) <= MAX_CHANNELS => c,
        _ => {
            return Err(DataError::Channels {
                got: audio.channels,
                max: MAX_CHANNELS,
            })
        }
    };
    let format = pb::AudioFormat::try_from(audio.format)
        .map_err(|_| DataError::UnknownFormat(audio.format))?;
    let bytes = &audio.samples[..];
    let size = match format {
        pb::AudioFormat::Unspecified | pb::AudioFormat::F32 | pb::AudioFormat::I32 => 4,
        pb::AudioFormat::I16 => 2,
    };
    if !bytes.len().is_multiple_of(size) {
        return Err(DataError::SampleBytes {
            len: bytes.len(),
            size,
        });
    }
    let samples: Vec<f32> = match format {
        pb::AudioFormat::Unspecified | pb::AudioFormat::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        pb::AudioFormat::I16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect(),
        pb::AudioFormat::I32 => bytes
            .chunks_exact(4)
            // f64 keeps the 32-bit precision until the final narrowing.
            .map(|b| {
                (f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 2_147_483_648.0) as f32
            })
            .collect(),
    };
    if !samples.len().is_multiple_of(usize::from(channels)) {
        return Err(DataError::ChannelMismatch {
            samples: samples.len(),
            channels: audio.channels,
        });
    }
    let per_channel = samples.len() / usize::from(channels);
    // 0 means "not filled in", which older clients do.
    if audio.num_samples != 0 && audio.num_samples != per_channel as u64 {
        return Err(DataError::NumSamples {
            declared: audio.num_samples,
            actual: per_channel,
        });
    }
    Ok(AudioFrame {
        samples,
        sample_rate: audio.sample_rate,
        channels,
    })
}

fn audio_to_pb(frame: &AudioFrame) -> pb::AudioBuffer {
    let mut bytes = Vec::with_capacity(frame.samples.len() * 4);
    for sample in &frame.samples {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    pb::AudioBuffer {
        samples: bytes,
        sample_rate: frame.sample_rate,
        channels: u32::from(frame.channels),
        format: pb::AudioFormat::F32 as i32,
        // max(1): a hand-built frame with 0 channels must not divide by zero.
        num_samples: (frame.samples.len() / usize::from(frame.channels.max(1))) as u64,
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
