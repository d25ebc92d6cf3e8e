//! Pipeline output for the data channels, sent by a task of its own through a queue bounded
//! by bytes (`--datachannel-send-queue-bytes`).
//!
//! webrtc-sctp's `send` waits while its pending queue is full, which it stays for as long as
//! the client does not acknowledge or read (a zero receive window): a client that stops
//! reading its data channel would block whoever sends. So the task that paces the session's
//! audio only hands messages over, never waiting: what does not fit the queue is dropped and
//! counted, and the audio goes on.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::RTCDataChannel;

use super::data_channel::dropped;
use crate::metrics::{limit_hit, Limit};
use crate::pipeline::Envelope;

/// Messages the queue holds at most, however small (empty ones cost no bytes).
const QUEUE_MESSAGES: usize = 256;

/// The sending side, held by the output task: [`DataOutput::send`] never waits.
pub(crate) struct DataOutput {
    tx: mpsc::Sender<Queued>,
    /// Bytes the queue may still take; a queued message holds its length in permits.
    budget: Arc<Semaphore>,
}

/// One encoded message and the queue bytes it holds until it has been sent.
struct Queued {
    data: Bytes,
    _bytes: OwnedSemaphorePermit,
}

impl DataOutput {
    /// A queue of `max_bytes` bytes and the task that sends it to the session's channels
    /// (announced on `new_channels`) until `cancel` fires or the `DataOutput` is dropped.
    pub(crate) fn start(
        max_bytes: usize,
        new_channels: mpsc::Receiver<Arc<RTCDataChannel>>,
        cancel: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
        let budget = Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS)));
        (Self { tx, budget }, send_queued(rx, new_channels, cancel))
    }

    /// Queues `envelope` for the data channels, or drops and counts it when the queue is
    /// full (the client is not taking its messages).
    pub(crate) fn send(&self, envelope: Envelope) {
        let data = encode_data_message(envelope);
        let permits = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let Ok(bytes) = Arc::clone(&self.budget).try_acquire_many_owned(permits) else {
            return full(data.len());
        };
        match self.tx.try_send(Queued {
            data,
            _bytes: bytes,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => full(queued.data.len()),
            // The sending task ended with the session.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn full(len: usize) {
    tracing::debug!(len, "data-channel send queue full; pipeline output dropped");
    limit_hit(Limit::DatachannelSendQueueBytes, 1);
    dropped("send_queue_full");
}

/// Sends each queued message on every open channel, in order; a send may wait as long as the
/// client's SCTP does (only this task waits then).
async fn send_queued(
    mut queue: mpsc::Receiver<Queued>,
    mut new_channels: mpsc::Receiver<Arc<RTCDataChannel>>,
    cancel: CancellationToken,
) {
    let mut channels: Vec<Arc<RTCDataChannel>> = Vec::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(channel) = new_channels.recv() => channels.push(channel),
            queued = queue.recv() => match queued {
                Some(queued) => tokio::select! {
                    () = cancel.cancelled() => break,
                    () = send_to_channels(&mut channels, &queued.data) => {}
                },
                None => break,
            },
        }
    }
}

async fn send_to_channels(channels: &mut Vec<Arc<RTCDataChannel>>, data: &Bytes) {
    if channels.is_empty() {
        tracing::debug!("pipeline output for the data channel, but none is open; dropped");
        dropped("no_channel");
        return;
    }
    let mut open = Vec::with_capacity(channels.len());
    for channel in channels.drain(..) {
        match channel.send(data).await {
            Ok(_) => open.push(channel),
            // That message is too large for this client; the channel goes on.
            Err(err) if too_large_for_client(&err) => {
                tracing::debug!(
                    len = data.len(),
                    label = channel.label(),
                    "pipeline output larger than the client accepts; dropped"
                );
                dropped("too_large_for_client");
                open.push(channel);
            }
            Err(err) => tracing::debug!(%err, label = channel.label(), "data channel send failed"),
        }
    }
    *channels = open;
}

/// Whether a send failed because the message is above the client's `max-message-size`.
fn too_large_for_client(err: &webrtc::Error) -> bool {
    use webrtc::sctp::Error::ErrOutboundPacketTooLarge;
    matches!(
        err,
        webrtc::Error::Sctp(ErrOutboundPacketTooLarge)
            | webrtc::Error::Data(webrtc::data::Error::Sctp(ErrOutboundPacketTooLarge))
    )
}

/// Encodes a pipeline output for the data channel.
pub(crate) fn encode_data_message(envelope: Envelope) -> Bytes {
    use prost::Message;
    Bytes::from(envelope.into_data_buffer().encode_to_vec())
}
