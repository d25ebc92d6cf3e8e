//! What flows through a pipeline, and its conversion to and from the wire `DataBuffer`.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
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
    /// A NumPy array of later originals' clients, carried as is; nodes that want audio get a
    /// 1-D float32/int16 one as audio (see [`Envelope::numpy_as_audio`]).
    Numpy(pb::NumpyBuffer),
    /// A file reference of later originals' clients: its path is data, never opened here.
    File(pb::FileBuffer),
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

    /// About the memory its payload and metadata hold, in bytes: what a queue counts.
    pub fn size_bytes(&self) -> usize {
        use prost::Message;
        let payload = match &self.data {
            RuntimeData::Audio(frame) => frame.samples.len() * std::mem::size_of::<f32>(),
            RuntimeData::Text { text, language } => text.len() + language.len(),
            RuntimeData::Json {
                payload,
                schema_type,
            } => payload.len() + schema_type.len(),
            RuntimeData::Binary { data, mime_type } => data.len() + mime_type.len(),
            RuntimeData::Control(m) => m.encoded_len(),
            RuntimeData::Video(m) => m.encoded_len(),
            RuntimeData::Tensor(m) => m.encoded_len(),
            RuntimeData::Numpy(m) => m.encoded_len(),
            RuntimeData::File(m) => m.encoded_len(),
        };
        let metadata: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        payload + metadata
    }
}

/// Upper bounds that keep a hostile `DataBuffer` from steering resamplers or channel math into
/// absurd territory; real audio is far below both.
const MAX_SAMPLE_RATE: u32 = 768_000;
const MAX_CHANNELS: u32 = 64;

/// Envelope metadata keys that carry fields of later originals' buffers which our payload
/// types do not hold, so they travel with the payload (through nodes that keep metadata) and
/// go back into their field on the way out, never into the wire's metadata map.
/// `AudioBuffer.metadata_json`, base64 (standard, padded) since it is bytes.
pub const AUDIO_METADATA_JSON_KEY: &str = "remotemedia.audio.metadata_json";
/// `TextBuffer.channel`.
pub const TEXT_CHANNEL_KEY: &str = "remotemedia.text.channel";

/// The rate of numpy audio whose metadata names none (WebRTC's Opus rate).
pub const NUMPY_DEFAULT_SAMPLE_RATE: u32 = 48_000;

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
        let mut metadata = buffer.metadata;
        // A client's own map never sets our internal keys.
        metadata.remove(AUDIO_METADATA_JSON_KEY);
        metadata.remove(TEXT_CHANNEL_KEY);
        let data = match buffer.data_type.ok_or(DataError::NoPayload)? {
            DataType::Audio(mut audio) => {
                if let Some(json) = audio.metadata_json.take() {
                    metadata.insert(AUDIO_METADATA_JSON_KEY.to_owned(), BASE64.encode(json));
                }
                RuntimeData::Audio(audio_from_pb(audio)?)
            }
            DataType::Text(text) => {
                if !text.channel.is_empty() {
                    metadata.insert(TEXT_CHANNEL_KEY.to_owned(), text.channel);
                }
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
            DataType::Numpy(array) => RuntimeData::Numpy(array),
            DataType::File(file) => RuntimeData::File(file),
        };
        Ok(Envelope { data, metadata })
    }

    /// This envelope as mono audio, when it is a 1-D, contiguous float32 or int16 NumPy array
    /// (48 kHz unless the metadata's `sample_rate` names another rate); `None` otherwise. The
    /// graph hands this to a node that works on audio ([`Node::wants_audio`](super::Node)).
    pub fn numpy_as_audio(&self) -> Option<Envelope> {
        let RuntimeData::Numpy(array) = &self.data else {
            return None;
        };
        let size = match array.dtype.trim() {
            "float32" | "f4" | "<f4" => 4,
            "int16" | "i2" | "<i2" => 2,
            _ => return None,
        };
        let [len] = array.shape[..] else {
            return None;
        };
        let contiguous = match array.strides[..] {
            [] => true,
            [stride] => stride == size as i64,
            _ => false,
        };
        if !contiguous || Some(array.data.len() as u64) != len.checked_mul(size as u64) {
            return None;
        }
        let sample_rate = match self.metadata.get("sample_rate") {
            None => NUMPY_DEFAULT_SAMPLE_RATE,
            Some(rate) => match rate.trim().parse::<u32>() {
                Ok(rate) if (1..=MAX_SAMPLE_RATE).contains(&rate) => rate,
                _ => return None,
            },
        };
        let samples = if size == 4 {
            decode_f32(&array.data)
        } else {
            decode_i16(&array.data)
        };
        Some(Envelope {
            data: RuntimeData::Audio(AudioFrame {
                samples,
                sample_rate,
                channels: 1,
            }),
            metadata: self.metadata.clone(),
        })
    }

    /// Writes this payload as a wire `DataBuffer`; audio always goes out as f32 little-endian.
    pub fn into_data_buffer(self) -> pb::DataBuffer {
        use pb::data_buffer::DataType;
        let mut metadata = self.metadata;
        let metadata_json = metadata
            .remove(AUDIO_METADATA_JSON_KEY)
            .and_then(|b64| BASE64.decode(b64).ok());
        let channel = metadata.remove(TEXT_CHANNEL_KEY).unwrap_or_default();
        let data_type = match self.data {
            RuntimeData::Audio(frame) => DataType::Audio(pb::AudioBuffer {
                metadata_json,
                ..audio_to_pb(&frame)
            }),
            RuntimeData::Text { text, language } => DataType::Text(pb::TextBuffer {
                text_data: text.into_bytes(),
                encoding: "utf-8".to_owned(),
                language,
                channel,
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
            RuntimeData::Numpy(array) => DataType::Numpy(array),
            RuntimeData::File(file) => DataType::File(file),
        };
        pb::DataBuffer {
            data_type: Some(data_type),
            metadata,
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
        pb::AudioFormat::Unspecified | pb::AudioFormat::F32 => decode_f32(bytes),
        pb::AudioFormat::I16 => decode_i16(bytes),
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
    // 0 means "not filled in", which older clients do. The original counted all samples of
    // all channels, we count per channel: either is taken (they differ only for 2+ channels).
    if audio.num_samples != 0
        && audio.num_samples != per_channel as u64
        && audio.num_samples != samples.len() as u64
    {
        return Err(DataError::NumSamples {
            declared: audio.num_samples,
            actual: per_channel,
            total: samples.len(),
        });
    }
    Ok(AudioFrame {
        samples,
        sample_rate: audio.sample_rate,
        channels,
    })
}

/// Little-endian f32 samples; a trailing partial sample is ignored (callers check lengths).
fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Little-endian i16 samples scaled to [-1, 1).
fn decode_i16(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

/// Per-channel `num_samples` (ours; the original's readers want the total for 2+ channels,
/// but what leaves here is mono or goes out on the audio track, not as an `AudioBuffer`).
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
        metadata_json: None,
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
