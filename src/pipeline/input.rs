//! A pipeline session's input queue (`--pipeline-queue-frames`).
//!
//! Live audio must not wait: when a pipeline falls behind, the playout that feeds it keeps its
//! 20 ms pace and the *oldest* queued audio frame is dropped (old audio is worth least to a
//! real-time pipeline), counted in `remotemedia_limit_hits_total{limit="pipeline_queue"}`.
//! Everything else (data-channel messages) is never dropped: its sender waits for room, which
//! pushes back on the client through SCTP flow control. A full queue makes room for a message
//! by dropping the oldest audio frame too, so messages never wait behind stale audio.
//!
//! Messages are also bounded by bytes (`--pipeline-queue-bytes`): a data-channel message may
//! be hundreds of KiB, so a count alone would let one session hold tens of MiB here. A message
//! that would go over waits (one over the whole bound still goes in when no other message is
//! queued), counted once in `remotemedia_limit_hits_total{limit="pipeline_queue_bytes"}`.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::data::Envelope;
use crate::metrics::{limit_hit, Limit};

/// The receiving side went away (the session ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline session has ended")]
pub struct InputClosed;

/// Why [`PipelineInput::try_send`] did not queue a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrySendError {
    #[error("the pipeline input is full of messages")]
    Full(Box<Envelope>),
    #[error(transparent)]
    Closed(#[from] InputClosed),
}

/// The queue itself, sans IO: what is kept, what is dropped.
#[derive(Debug)]
struct Queue {
    items: VecDeque<Item>,
    capacity: usize,
    /// [`Envelope::size_bytes`] of the queued messages (not audio).
    message_bytes: usize,
    max_message_bytes: usize,
}

#[derive(Debug)]
struct Item {
    envelope: Envelope,
    /// Live audio: dropped, oldest first, when the queue is full.
    droppable: bool,
    /// What a message counts against `max_message_bytes` (0 for audio).
    bytes: usize,
}

/// A message given back, and why.
type Refused = (Box<Envelope>, Full);

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Items,
    Bytes,
}

impl Queue {
    fn new(capacity: usize, max_message_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
            message_bytes: 0,
            max_message_bytes,
        }
    }

    /// Makes room for one item if the queue is full, by dropping the oldest droppable item;
    /// whether there is room now.
    fn make_room(&mut self, dropped: &mut u64) -> bool {
        if self.items.len() < self.capacity {
            return true;
        }
        match self.items.iter().position(|item| item.droppable) {
            Some(oldest) => {
                self.items.remove(oldest);
                *dropped += 1;
                true
            }
            None => false,
        }
    }

    /// Queues live audio; when the queue is full of messages the new frame is dropped
    /// instead. Counts what was dropped into `dropped`.
    fn push_droppable(&mut self, envelope: Envelope, dropped: &mut u64) {
        if self.make_room(dropped) {
            self.items.push_back(Item {
                envelope,
                droppable: true,
                bytes: 0,
            });
        } else {
            *dropped += 1;
        }
    }

    /// Queues a message unless the queue is full of messages or of message bytes: then it is
    /// given back, with the reason.
    fn try_push(&mut self, envelope: Envelope, dropped: &mut u64) -> Result<(), Refused> {
        let bytes = envelope.size_bytes();
        if self.message_bytes > 0 && self.message_bytes + bytes > self.max_message_bytes {
            return Err((Box::new(envelope), Full::Bytes));
        }
        if !self.make_room(dropped) {
            return Err((Box::new(envelope), Full::Items));
        }
        self.message_bytes += bytes;
        self.items.push_back(Item {
            envelope,
            droppable: false,
            bytes,
        });
        Ok(())
    }

    fn pop(&mut self) -> Option<Envelope> {
        let item = self.items.pop_front()?;
        self.message_bytes -= item.bytes;
        Some(item.envelope)
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// An item was queued, or the last sender left (one receiver: `notify_one`).
    readable: Notify,
    /// An item was taken, or the receiver left (any number of waiting senders).
    writable: Notify,
}

#[derive(Debug)]
struct State {
    queue: Queue,
    senders: usize,
    receiver_gone: bool,
}

/// Where a session's inputs go; clone it for each producer. The session ends its input when
/// every clone is dropped.
#[derive(Debug)]
pub struct PipelineInput {
    shared: Arc<Shared>,
}

/// The pipeline's end of the queue.
#[derive(Debug)]
pub(crate) struct InputReceiver {
    shared: Arc<Shared>,
}

/// A queue that holds `capacity` items (at least one), messages of any size.
#[cfg(test)]
pub(crate) fn input_queue(capacity: usize) -> (PipelineInput, InputReceiver) {
    bounded_input_queue(capacity, usize::MAX)
}

/// A queue that holds `capacity` items (at least one), and messages of `max_message_bytes`
/// (or a single larger one).
pub(crate) fn bounded_input_queue(
    capacity: usize,
    max_message_bytes: usize,
) -> (PipelineInput, InputReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: Queue::new(capacity, max_message_bytes),
            senders: 1,
            receiver_gone: false,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
    });
    (
        PipelineInput {
            shared: Arc::clone(&shared),
        },
        InputReceiver { shared },
    )
}

/// Counts dropped audio frames.
fn count_drops(dropped: u64) {
    if dropped > 0 {
        limit_hit(Limit::PipelineQueue, dropped);
    }
}

impl PipelineInput {
    /// Queues live audio frames without waiting, dropping the oldest queued audio when the
    /// queue is full; returns how many frames were dropped (also counted).
    ///
    /// # Errors
    /// [`InputClosed`] once the session has ended.
    pub fn push_audio(
        &self,
        frames: impl IntoIterator<Item = Envelope>,
    ) -> Result<u64, InputClosed> {
        let mut dropped = 0;
        {
            // One lock for the whole batch: the frames of one playout wake go in together.
            let mut state = self.shared.state.lock();
            if state.receiver_gone {
                return Err(InputClosed);
            }
            for frame in frames {
                state.queue.push_droppable(frame, &mut dropped);
            }
        }
        count_drops(dropped);
        self.shared.readable.notify_one();
        Ok(dropped)
    }

    /// Queues a message, waiting while the queue is full of messages (never dropped).
    ///
    /// # Errors
    /// [`InputClosed`] once the session has ended.
    pub async fn send(&self, envelope: Envelope) -> Result<(), InputClosed> {
        let mut envelope = envelope;
        let mut counted = false;
        loop {
            let writable = self.shared.writable.notified();
            tokio::pin!(writable);
            // Registered before the check, so a pop between the check and the wait wakes us.
            writable.as_mut().enable();
            match self.push_message(envelope)? {
                Ok(()) => return Ok(()),
                Err((back, full)) => {
                    if full == Full::Bytes && !counted {
                        limit_hit(Limit::PipelineQueueBytes, 1);
                        counted = true;
                    }
                    envelope = *back;
                }
            }
            writable.await;
        }
    }

    /// Queues a message if there is room (or audio to drop for it).
    ///
    /// # Errors
    /// `Full` (with the message) when the queue is full of messages, `Closed` once the session
    /// has ended.
    pub fn try_send(&self, envelope: Envelope) -> Result<(), TrySendError> {
        self.push_message(envelope)?
            .map_err(|(back, _)| TrySendError::Full(back))
    }

    /// Queues a message if there is room, or gives it back with the reason.
    fn push_message(&self, envelope: Envelope) -> Result<Result<(), Refused>, InputClosed> {
        let mut dropped = 0;
        let pushed = {
            let mut state = self.shared.state.lock();
            if state.receiver_gone {
                return Err(InputClosed);
            }
            state.queue.try_push(envelope, &mut dropped)
        };
        count_drops(dropped);
        if pushed.is_ok() {
            self.shared.readable.notify_one();
        }
        Ok(pushed)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().receiver_gone
    }
}

impl Clone for PipelineInput {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for PipelineInput {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.state.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

impl InputReceiver {
    /// The next input, oldest first; `None` once every sender is gone and the queue is empty.
    /// Cancel-safe: an input is only taken when it is returned.
    pub async fn recv(&mut self) -> Option<Envelope> {
        loop {
            {
                let mut state = self.shared.state.lock();
                if let Some(envelope) = state.queue.pop() {
                    drop(state);
                    self.shared.writable.notify_waiters();
                    return Some(envelope);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            // A push after the check above left a permit: this returns at once then.
            self.shared.readable.notified().await;
        }
    }
}

impl Drop for InputReceiver {
    fn drop(&mut self) {
        self.shared.state.lock().receiver_gone = true;
        self.shared.writable.notify_waiters();
    }
}

#[cfg(test)]
#[path = "input_tests.rs"]
mod tests;
