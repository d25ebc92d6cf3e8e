//! Reading the server's data-channel messages in a test: each `DataBuffer{json}` decoded,
//! with when it came.

use std::time::Instant;

use prost::Message;
use remotemedia_webrtc::pipeline::{Envelope, RuntimeData};
use remotemedia_webrtc::proto::common::DataBuffer;
use tokio::sync::mpsc::Receiver;

/// One JSON message: its `schema_type`, its payload and its arrival.
pub type JsonMessage = (String, serde_json::Value, Instant);

/// Each JSON message received until `deadline`, or until `stop` says the ones so far are
/// enough. Other data (text, binary) is skipped; a message that does not decode fails the
/// test.
pub async fn json_messages(
    messages: &mut Receiver<bytes::Bytes>,
    deadline: Instant,
    mut stop: impl FnMut(&[JsonMessage]) -> bool,
) -> Vec<JsonMessage> {
    let mut got = Vec::new();
    while !stop(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(bytes)) = tokio::time::timeout(left, messages.recv()).await else {
            break;
        };
        let buffer = DataBuffer::decode(bytes).expect("a DataBuffer");
        let envelope = Envelope::from_data_buffer(buffer).expect("an envelope");
        if let RuntimeData::Json {
            payload,
            schema_type,
        } = envelope.data
        {
            let value = serde_json::from_str(&payload).expect("JSON payload");
            got.push((schema_type, value, Instant::now()));
        }
    }
    got
}
