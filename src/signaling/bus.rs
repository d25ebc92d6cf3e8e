//! Notification delivery: a bounded mailbox per connected peer. In memory here; Redis streams
//! in the cluster. A peer whose stream broke is detached: what is published for it is kept
//! until it resumes (and then comes first, in order) or is discarded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::proto::signaling::SignalingNotification;

/// Notifications a peer may have waiting before it counts as too slow and is cut off.
pub const MAILBOX_CAPACITY: usize = 1024;

/// The receiving end of a peer's mailbox. It ends (`recv` gives `None`) when the peer was cut
/// off for reading too slowly or was unsubscribed.
pub struct Mailbox {
    pub(crate) id: u64,
    pub(crate) receiver: mpsc::Receiver<Delivery>,
    /// Position of the last notification taken (Redis stream entry id); in memory `None`.
    pub(crate) cursor: Option<String>,
}

/// One notification and its position in the peer's stream.
#[derive(Debug)]
pub struct Delivery {
    pub cursor: Option<String>,
    pub notification: SignalingNotification,
}

impl Mailbox {
    pub(crate) fn new(id: u64, receiver: mpsc::Receiver<Delivery>, cursor: Option<String>) -> Self {
        Self {
            id,
            receiver,
            cursor,
        }
    }

    /// The next notification, or `None` once the mailbox is closed.
    pub async fn recv(&mut self) -> Option<SignalingNotification> {
        let delivery = self.receiver.recv().await?;
        if delivery.cursor.is_some() {
            self.cursor = delivery.cursor;
        }
        Some(delivery.notification)
    }

    /// The bus cut this mailbox off (it overflowed) or closed it; what it holds can still be
    /// taken, but nothing more will come.
    pub fn is_cut_off(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Where a resumed mailbox continues: after the last notification taken.
    pub fn cursor(&self) -> Option<String> {
        self.cursor.clone()
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("peer {0:?} already has a mailbox")]
    AlreadySubscribed(String),
    #[error("peer {0:?} has no mailbox")]
    NotSubscribed(String),
    #[error("notification delivery unavailable: {0}")]
    Unavailable(String),
}

/// Delivers notifications to connected peers.
#[async_trait]
pub trait NotificationBus: Send + Sync + 'static {
    /// Opens `peer_id`'s mailbox, for a peer of `room` (`None`: the lobby), which scopes the
    /// broadcasts it gets; fails if it already has one.
    async fn subscribe(&self, peer_id: &str, room: Option<&str>) -> Result<Mailbox, BusError>;
    /// Reopens the mailbox of a peer of `room` that resumes: what was published after
    /// `cursor` (in memory: what waited in its kept mailbox) comes first, in order.
    async fn resume(
        &self,
        peer_id: &str,
        room: Option<&str>,
        cursor: Option<String>,
    ) -> Result<Mailbox, BusError>;
    /// Stops delivering to `mailbox` but keeps what is published for `peer_id` until it
    /// resumes or is discarded. Returns the cursor to resume from.
    async fn detach(&self, peer_id: &str, mailbox: Mailbox) -> Option<String>;
    /// Drops whatever is kept for a peer that will not come back.
    async fn discard(&self, peer_id: &str);
    /// Closes the mailbox `mailbox_id` of `peer_id` (a newer mailbox of the same id stays).
    async fn unsubscribe(&self, peer_id: &str, mailbox_id: u64);
    /// Delivers to one peer.
    async fn publish(
        &self,
        peer_id: &str,
        notification: SignalingNotification,
    ) -> Result<(), BusError>;
    /// Delivers to every peer of `room` (`None`: every peer of the lobby, those in no room)
    /// except `except`.
    async fn broadcast(
        &self,
        room: Option<&str>,
        except: &str,
        notification: SignalingNotification,
    );
}

/// One open mailbox of the in-memory bus: its id, its sending end, and the room whose
/// broadcasts it gets (`None`: the lobby's).
struct Inbox {
    id: u64,
    sender: mpsc::Sender<Delivery>,
    room: Option<String>,
}

/// Single-process bus.
#[derive(Default)]
pub struct InMemoryBus {
    mailboxes: Mutex<HashMap<String, Inbox>>,
    /// Mailboxes of detached peers: publishing still fills them.
    kept: Mutex<HashMap<String, Mailbox>>,
    next_id: AtomicU64,
}

impl InMemoryBus {
    /// Never blocks: a full mailbox means its reader is stuck, so it is closed rather than
    /// letting one slow client stall signaling for everyone.
    fn deliver(
        mailboxes: &mut HashMap<String, Inbox>,
        peer_id: &str,
        notification: SignalingNotification,
    ) -> Result<(), BusError> {
        let Some(Inbox { sender, .. }) = mailboxes.get(peer_id) else {
            return Err(BusError::NotSubscribed(peer_id.to_owned()));
        };
        let delivery = Delivery {
            cursor: None,
            notification,
        };
        match sender.try_send(delivery) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer_id, "notification mailbox full, cutting the peer off");
                mailboxes.remove(peer_id);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                mailboxes.remove(peer_id);
                Err(BusError::NotSubscribed(peer_id.to_owned()))
            }
        }
    }
}

#[async_trait]
impl NotificationBus for InMemoryBus {
    async fn subscribe(&self, peer_id: &str, room: Option<&str>) -> Result<Mailbox, BusError> {
        let mut mailboxes = self.mailboxes.lock();
        if mailboxes.contains_key(peer_id) {
            return Err(BusError::AlreadySubscribed(peer_id.to_owned()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(MAILBOX_CAPACITY);
        let inbox = Inbox {
            id,
            sender,
            room: room.map(str::to_owned),
        };
        mailboxes.insert(peer_id.to_owned(), inbox);
        Ok(Mailbox::new(id, receiver, None))
    }

    async fn resume(
        &self,
        peer_id: &str,
        room: Option<&str>,
        _cursor: Option<String>,
    ) -> Result<Mailbox, BusError> {
        let kept = self.kept.lock().remove(peer_id);
        match kept {
            Some(mailbox) => Ok(mailbox),
            // Cut off while away (its kept mailbox overflowed): start afresh.
            None => self.subscribe(peer_id, room).await,
        }
    }

    async fn detach(&self, peer_id: &str, mailbox: Mailbox) -> Option<String> {
        // A mailbox that was cut off is not kept: a resume would replay a queue that has
        // already lost notifications, then end at once. The peer starts afresh instead.
        if !mailbox.is_cut_off() {
            self.kept.lock().insert(peer_id.to_owned(), mailbox);
        }
        None
    }

    async fn discard(&self, peer_id: &str) {
        self.kept.lock().remove(peer_id);
        self.mailboxes.lock().remove(peer_id);
    }

    async fn unsubscribe(&self, peer_id: &str, mailbox_id: u64) {
        let mut mailboxes = self.mailboxes.lock();
        if mailboxes
            .get(peer_id)
            .is_some_and(|inbox| inbox.id == mailbox_id)
        {
            mailboxes.remove(peer_id);
        }
    }

    async fn publish(
        &self,
        peer_id: &str,
        notification: SignalingNotification,
    ) -> Result<(), BusError> {
        Self::deliver(&mut self.mailboxes.lock(), peer_id, notification)
    }

    async fn broadcast(
        &self,
        room: Option<&str>,
        except: &str,
        notification: SignalingNotification,
    ) {
        let mut mailboxes = self.mailboxes.lock();
        let targets: Vec<String> = mailboxes
            .iter()
            .filter(|(id, inbox)| id.as_str() != except && inbox.room.as_deref() == room)
            .map(|(id, _)| id.clone())
            .collect();
        for peer_id in targets {
            // A peer that vanished meanwhile simply misses the broadcast.
            let _ = Self::deliver(&mut mailboxes, &peer_id, notification.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::signaling::{signaling_notification::Notification, PeerLeftNotification};

    fn left(id: &str) -> SignalingNotification {
        SignalingNotification {
            notification: Some(Notification::PeerLeft(PeerLeftNotification {
                peer_id: id.into(),
            })),
        }
    }

    #[tokio::test]
    async fn broadcast_skips_the_sender_and_a_full_mailbox_is_cut_off() {
        let bus = InMemoryBus::default();
        let mut a = bus.subscribe("a", None).await.unwrap();
        let mut b = bus.subscribe("b", None).await.unwrap();
        assert!(bus.subscribe("a", None).await.is_err());
        bus.broadcast(None, "a", left("x")).await;
        assert_eq!(b.recv().await, Some(left("x")));
        for _ in 0..=MAILBOX_CAPACITY {
            bus.publish("a", left("y")).await.unwrap();
        }
        let mut received = 0;
        while a.recv().await.is_some() {
            received += 1;
        }
        assert_eq!(received, MAILBOX_CAPACITY);
        assert!(bus.publish("a", left("z")).await.is_err());
    }

    #[tokio::test]
    async fn a_broadcast_reaches_its_room_only() {
        let bus = InMemoryBus::default();
        let mut lobby = bus.subscribe("lobby", None).await.unwrap();
        let mut a = bus.subscribe("a", Some("r1")).await.unwrap();
        let mut b = bus.subscribe("b", Some("r1")).await.unwrap();
        let mut c = bus.subscribe("c", Some("r2")).await.unwrap();
        bus.broadcast(Some("r1"), "a", left("a")).await;
        bus.broadcast(None, "nobody", left("lobby")).await;
        assert_eq!(b.recv().await, Some(left("a")));
        assert_eq!(lobby.recv().await, Some(left("lobby")));
        for other in [&mut a, &mut b, &mut c, &mut lobby] {
            assert!(other.receiver.try_recv().is_err(), "nothing else arrived");
        }
    }
}
