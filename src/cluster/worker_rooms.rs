//! The rooms a worker hosts, by their participants' sessions here: it refuses newcomers to
//! them while it drains, counts them in its heartbeat, keeps their records alive, and deletes
//! a room's record when its last participant here leaves (compared on the latest version the
//! worker saw, so a participant a frontend is sending here keeps the room in place).

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use super::keys::Keys;
use super::{redis_error, room_record};

/// Rooms and their participants here, as plain state.
#[derive(Debug, Default)]
pub(crate) struct RoomBook {
    /// Each participant's room.
    room_of: HashMap<String, String>,
    rooms: HashMap<String, HostedRoom>,
}

#[derive(Debug, Default)]
struct HostedRoom {
    participants: HashSet<String>,
    /// The highest record version among the joins that came here.
    version: u64,
}

/// A room whose last participant here left: its record goes if its version is still
/// `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Emptied {
    pub room: String,
    pub version: u64,
}

impl RoomBook {
    /// `peer` joins `room`, whose record had `version` when the frontend sent it here (joining
    /// again is harmless). Returns the room it was in before, if that one emptied.
    pub fn join(&mut self, peer: &str, room: &str, version: u64) -> Option<Emptied> {
        let left = match self.room_of.get(peer) {
            Some(current) if current != room => self.leave(peer),
            _ => None,
        };
        self.room_of.insert(peer.to_owned(), room.to_owned());
        let hosted = self.rooms.entry(room.to_owned()).or_default();
        hosted.participants.insert(peer.to_owned());
        hosted.version = hosted.version.max(version);
        left
    }

    /// `peer`'s session here ended. Returns its room if that emptied.
    pub fn leave(&mut self, peer: &str) -> Option<Emptied> {
        let room = self.room_of.remove(peer)?;
        let hosted = self.rooms.get_mut(&room)?;
        hosted.participants.remove(peer);
        if !hosted.participants.is_empty() {
            return None;
        }
        let version = hosted.version;
        self.rooms.remove(&room);
        Some(Emptied { room, version })
    }

    /// Whether `room` has a participant here. If so, its record's `version` (from a join
    /// refused here: it moved the record's version all the same) counts as seen.
    pub fn hosts(&mut self, room: &str, version: u64) -> bool {
        let Some(hosted) = self.rooms.get_mut(room) else {
            return false;
        };
        hosted.version = hosted.version.max(version);
        true
    }

    /// The rooms with a participant here.
    pub fn rooms(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// Rooms hosted and their participants here.
    pub fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.room_of.len())
    }
}

/// A worker's [`RoomBook`] and the room records it keeps in Redis.
pub(crate) struct WorkerRooms {
    book: Mutex<RoomBook>,
    redis: ConnectionManager,
    keys: Keys,
    worker_id: String,
}

impl WorkerRooms {
    pub fn new(redis: ConnectionManager, keys: Keys, worker_id: String) -> Self {
        Self {
            book: Mutex::new(RoomBook::default()),
            redis,
            keys,
            worker_id,
        }
    }

    /// `peer` joins `room` (before its session is created: a leave meanwhile does not empty
    /// the room).
    pub async fn join(&self, peer: &str, room: &str, version: u64) {
        let emptied = self.book.lock().join(peer, room, version);
        self.forget(emptied).await;
    }

    /// `peer`'s session here ended or was never made; an emptied room's record goes.
    pub async fn leave(&self, peer: &str) {
        let emptied = self.book.lock().leave(peer);
        self.forget(emptied).await;
    }

    /// Whether `room` has a participant here (see [`RoomBook::hosts`]).
    pub fn hosts(&self, room: &str, version: u64) -> bool {
        self.book.lock().hosts(room, version)
    }

    /// Rooms hosted and their participants here.
    pub fn counts(&self) -> (usize, usize) {
        self.book.lock().counts()
    }

    /// Keeps the hosted rooms' records from expiring (every heartbeat).
    pub async fn refresh(&self) {
        let rooms = self.book.lock().rooms();
        if let Err(err) =
            room_record::refresh(&mut self.redis.clone(), &self.keys, &self.worker_id, &rooms).await
        {
            redis_error("room_refresh", &err);
        }
    }

    async fn forget(&self, emptied: Option<Emptied>) {
        let Some(Emptied { room, version }) = emptied else {
            return;
        };
        match room_record::forget(
            &mut self.redis.clone(),
            &self.keys,
            &room,
            &self.worker_id,
            version,
        )
        .await
        {
            Ok(deleted) => tracing::info!(room, deleted, "last participant of the room left"),
            Err(err) => redis_error("room_forget", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_empties_with_its_last_participant_at_the_latest_version_seen() {
        let mut book = RoomBook::default();
        assert_eq!(book.join("alice", "r", 5), None);
        // Joins may arrive out of order: the highest version counts.
        assert_eq!(book.join("bob", "r", 7), None);
        assert_eq!(book.join("carol", "r", 6), None);
        assert!(book.hosts("r", 0));
        assert_eq!(book.counts(), (1, 3));
        assert_eq!(book.leave("alice"), None);
        assert_eq!(book.leave("bob"), None);
        assert_eq!(book.leave("nobody"), None);
        // A join refused here (the worker drains) still moved the record's version.
        assert!(book.hosts("r", 8));
        assert_eq!(
            book.leave("carol"),
            Some(Emptied {
                room: "r".into(),
                version: 8
            })
        );
        assert!(!book.hosts("r", 9));
        assert_eq!(book.counts(), (0, 0));
        assert_eq!(book.leave("carol"), None, "leaving twice empties nothing");
    }

    #[test]
    fn joining_again_is_harmless_and_joining_another_room_leaves_the_first() {
        let mut book = RoomBook::default();
        book.join("alice", "r", 1);
        assert_eq!(book.join("alice", "r", 2), None);
        assert_eq!(book.counts(), (1, 1));
        assert_eq!(
            book.join("alice", "s", 3),
            Some(Emptied {
                room: "r".into(),
                version: 2
            })
        );
        assert!(!book.hosts("r", 0));
        assert!(book.hosts("s", 0));
        assert_eq!(book.rooms(), vec!["s".to_owned()]);
    }
}
