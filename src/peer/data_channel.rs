//! Inbound data channels: each message is read whole by a task of ours, checked against
//! `--max-datachannel-message-bytes`, decoded, and queued for the pipeline.
//!
//! Channels are detached (webrtc-rs `detach_data_channels`) because webrtc-rs's own reader has
//! a 64 KiB buffer and closes the channel on any larger message: one big message from a
//! client used to end its data channel for good. Ours reads into a buffer as large as the
//! SCTP receive window, so every message a client can complete is read, and a message over
//! the limit is dropped and counted while the channel stays open.
//!
//! A session reads at most `--max-datachannels` channels at once (each has such a buffer); a
//! client that opens more has the extra ones closed, counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::RTCDataChannel;

use super::activity::Activity;
use super::metrics::metrics;
use crate::metrics::{limit_hit, Limit};
use crate::pipeline::{Envelope, PipelineInput, RuntimeData};
use crate::proto::common::DataBuffer;

/// webrtc-sctp's receive window: no message larger than this can complete (the sender stalls
/// on a zero window), so a read buffer this large never fails on size. A message larger than
/// the buffer would fail the read, and webrtc-data then closes the channel. The buffer is
/// zeroed memory the OS maps lazily: only messages this large touch all of it.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// What a channel's reader feeds, and how large a message it passes on.
#[derive(Clone)]
pub(crate) struct DataInput {
    pub input: PipelineInput,
    pub activity: Arc<Activity>,
    /// `--max-datachannel-message-bytes`.
    pub max_message_bytes: usize,
    /// Channels being read now, shared by the session's channels.
    pub open: Arc<AtomicUsize>,
    /// `--max-datachannels`.
    pub max_channels: usize,
    /// Where a channel that was let in is announced, for the pipeline's output.
    pub accepted: mpsc::Sender<Arc<RTCDataChannel>>,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
}

/// One of the session's open channels; the count goes down when its reader ends.
struct OpenChannel(Arc<AtomicUsize>);

impl OpenChannel {
    /// Counts a channel in, unless `max` are open already.
    fn admit(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(Arc::clone(open)))
    }
}

impl Drop for OpenChannel {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts reading `channel` once it is open, and hands it to the pipeline's output; closes it
/// instead when the session has `--max-datachannels` open already.
pub(crate) fn read_when_open(channel: &Arc<RTCDataChannel>, data: DataInput) {
    // Weak: the handler lives in the channel, which must not keep itself alive.
    let weak: Weak<RTCDataChannel> = Arc::downgrade(channel);
    channel.on_open(Box::new(move || {
        Box::pin(async move {
            let Some(channel) = weak.upgrade() else {
                return;
            };
            let Some(slot) = OpenChannel::admit(&data.open, data.max_channels) else {
                tracing::debug!(
                    label = channel.label(),
                    limit = data.max_channels,
                    "too many data channels; closed"
                );
                limit_hit(Limit::Datachannels, 1);
                if let Err(err) = channel.close().await {
                    tracing::debug!(%err, "closing a data channel over the limit failed");
                }
                return;
            };
            match channel.detach().await {
                Ok(raw) => {
                    let tasks = data.tasks.clone();
                    let (accepted, cancel) = (data.accepted.clone(), data.cancel.clone());
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = accepted.send(channel) => {}
                            () = cancel.cancelled() => {}
                        }
                    });
                    tasks.spawn(read_messages(raw, data, slot));
                }
                Err(err) => {
                    tracing::warn!(%err, label = channel.label(), "cannot read data channel")
                }
            }
        })
    }));
}

/// Reads messages until the channel closes or the session ends; waits while the pipeline's
/// input is full of messages (SCTP flow control then slows the client down).
async fn read_messages(channel: Arc<DataChannel>, data: DataInput, _slot: OpenChannel) {
    let mut buffer = vec![0u8; READ_BUFFER_BYTES.max(data.max_message_bytes)];
    loop {
        // An empty message reads as 0 bytes, like the end of the stream; only a message
        // moves this count.
        let received = channel.messages_received();
        let read = tokio::select! {
            read = channel.read_data_channel(&mut buffer) => read,
            () = data.cancel.cancelled() => break,
        };
        let (len, is_string) = match read {
            // The stream was reset or shut down.
            Ok((0, _)) if channel.messages_received() == received => break,
            Ok(read) => read,
            Err(err) => {
                if matches!(
                    err,
                    webrtc::data::Error::Sctp(webrtc::sctp::Error::ErrShortBuffer { .. })
                ) {
                    too_large(usize::MAX, data.max_message_bytes);
                }
                tracing::debug!(%err, "data channel read ended");
                break;
            }
        };
        data.activity.touch();
        if len > data.max_message_bytes {
            too_large(len, data.max_message_bytes);
            continue;
        }
        let Some(envelope) = decode(&buffer[..len], is_string) else {
            continue;
        };
        if data.input.send(envelope).await.is_err() {
            break;
        }
    }
}

fn too_large(len: usize, limit: usize) {
    tracing::debug!(len, limit, "data channel message over the limit; dropped");
    limit_hit(Limit::DatachannelMessageBytes, 1);
    dropped("too_large");
}

/// Counts a data-channel message dropped for `reason` (one of
/// [`super::metrics::DATACHANNEL_DROP_REASONS`]).
pub(crate) fn dropped(reason: &'static str) {
    metrics()
        .datachannel_dropped
        .with_label_values(&[reason])
        .inc();
}

/// One data-channel message into a pipeline input: a binary protobuf `DataBuffer`, or, for
/// convenience, a text message as text. Anything else is dropped and counted.
pub(crate) fn decode(message: &[u8], is_string: bool) -> Option<Envelope> {
    use prost::Message;
    let malformed = |why: &dyn std::fmt::Display| {
        tracing::warn!(%why, len = message.len(), "data channel message dropped");
        dropped("malformed");
        None
    };
    if is_string {
        return match std::str::from_utf8(message) {
            Ok(text) => Some(Envelope::new(RuntimeData::Text {
                text: text.to_owned(),
                language: String::new(),
            })),
            Err(err) => malformed(&err),
        };
    }
    match DataBuffer::decode(message) {
        Ok(buffer) => match Envelope::from_data_buffer(buffer) {
            Ok(envelope) => Some(envelope),
            Err(err) => malformed(&err),
        },
        Err(err) => malformed(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_databuffers_decode_and_garbage_is_dropped() {
        assert!(matches!(
            decode(b"hello", true).map(|e| e.data),
            Some(RuntimeData::Text { text, .. }) if text == "hello"
        ));
        assert!(decode(&[0xff, 0xfe], true).is_none());
        assert!(decode(&[0xff, 0xff, 0xff], false).is_none());
    }
}
