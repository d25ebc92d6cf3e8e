//! Redis key names. Peer ids are `[A-Za-z0-9._:-]`, so `/` separates two ids unambiguously
//! and no id contains a glob character.

/// Key builder for one deployment's prefix (`rm:` by default).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// A registered peer's record.
    pub fn peer(&self, peer_id: &str) -> String {
        format!("{}peer:{peer_id}", self.prefix)
    }

    /// Pattern matching every peer record.
    pub fn peer_pattern(&self) -> String {
        format!("{}peer:*", self.prefix)
    }

    /// The peer id of a peer record key.
    pub fn peer_id_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("peer:")
    }

    /// Index of the peer records: peer id scored by when its record expires (unix ms), so
    /// counting and listing never scan the key space.
    pub fn peer_index(&self) -> String {
        format!("{}peers", self.prefix)
    }

    /// The lobby's peers (those in no room), scored as [`Self::peer_index`]: a lobby
    /// broadcast reads only it.
    pub fn lobby_index(&self) -> String {
        format!("{}lobby", self.prefix)
    }

    /// One room's participants, scored as [`Self::peer_index`]: a room's broadcast and list
    /// read only it, and the participant cap counts it. Room names are `[A-Za-z0-9_-]`.
    pub fn room_index(&self, room: &str) -> String {
        format!("{}{room}", self.room_index_prefix())
    }

    /// What every room index key starts with (scripts append a record's room).
    pub fn room_index_prefix(&self) -> String {
        format!("{}room-peers:", self.prefix)
    }

    /// The index of the peers of `room` (`None`: the lobby's).
    pub fn scope_index(&self, room: Option<&str>) -> String {
        room.map_or_else(|| self.lobby_index(), |room| self.room_index(room))
    }

    /// Detached peers scored by the end of their grace (unix ms): the sweep reads only the
    /// expired ones.
    pub fn detached(&self) -> String {
        format!("{}detached", self.prefix)
    }

    /// Signaling replicas scored by when their liveness runs out (unix ms).
    pub fn replicas(&self) -> String {
        format!("{}replicas", self.prefix)
    }

    /// The peers a signaling replica holds (their grace starts when it dies).
    pub fn replica_peers(&self, replica_id: &str) -> String {
        format!("{}replica-peers:{replica_id}", self.prefix)
    }

    /// Pending offer keys scored by when they expire (unix ms).
    pub fn offer_index(&self) -> String {
        format!("{}offers", self.prefix)
    }

    /// The keys of the offers from and to a peer (dropped with it).
    pub fn peer_offers(&self, peer_id: &str) -> String {
        format!("{}peer-offers:{peer_id}", self.prefix)
    }

    /// What every notification stream key starts with (a broadcast script appends ids).
    pub fn inbox_prefix(&self) -> String {
        format!("{}inbox:", self.prefix)
    }

    /// The pending offer `from` sent to `to`.
    pub fn offer(&self, from: &str, to: &str) -> String {
        format!("{}offer:{from}/{to}", self.prefix)
    }

    /// Patterns of the offers from and to a peer.
    pub fn offer_patterns(&self, peer_id: &str) -> [String; 2] {
        [
            format!("{}offer:{peer_id}/*", self.prefix),
            format!("{}offer:*/{peer_id}", self.prefix),
        ]
    }

    /// Pattern matching every pending offer.
    pub fn offer_pattern(&self) -> String {
        format!("{}offer:*", self.prefix)
    }

    /// A peer's notification stream.
    pub fn inbox(&self, peer_id: &str) -> String {
        format!("{}inbox:{peer_id}", self.prefix)
    }

    /// A signaling replica's liveness (its peers enter their grace when it expires).
    pub fn replica(&self, replica_id: &str) -> String {
        format!("{}replica:{replica_id}", self.prefix)
    }

    /// A worker's heartbeat (expires when the worker stops sending them).
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}worker:{worker_id}", self.prefix)
    }

    /// Ids of every worker that has sent a heartbeat and not been reaped.
    pub fn known_workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// The peers whose server sessions a worker holds.
    pub fn worker_sessions(&self, worker_id: &str) -> String {
        format!("{}worker-sessions:{worker_id}", self.prefix)
    }

    /// Which worker holds a peer's server session.
    pub fn session(&self, peer_id: &str) -> String {
        format!("{}session:{peer_id}", self.prefix)
    }

    /// The controller asks a worker to drain (before scaling it away).
    pub fn drain(&self, worker_id: &str) -> String {
        format!("{}drain:{worker_id}", self.prefix)
    }

    /// The placement table the controller publishes.
    pub fn placement(&self) -> String {
        format!("{}placement", self.prefix)
    }

    /// The controllers' leader lock.
    pub fn controller_lock(&self) -> String {
        format!("{}controller-leader", self.prefix)
    }

    /// The fencing counter: each new leader term takes the next number.
    pub fn controller_term(&self) -> String {
        format!("{}controller-term", self.prefix)
    }

    /// A room's record (a hash: `workers`, `tracks`, `version`): the worker(s) it lives on.
    /// Room names are `[A-Za-z0-9_-]`.
    pub fn room(&self, room: &str) -> String {
        format!("{}room:{room}", self.prefix)
    }

    /// The counter every room record's `version` is drawn from (unique across records, so a
    /// compare-and-delete never takes a later record of the same room).
    pub fn room_version(&self) -> String {
        format!("{}room-version", self.prefix)
    }

    /// The pub/sub channel on which a room's hosting workers announce that their published
    /// tracks changed (the message: the worker's id).
    pub fn room_tracks_channel(&self, room: &str) -> String {
        format!("{}room-tracks:{room}", self.prefix)
    }

    /// The pub/sub channel on which a spanning room's lead tells the other hosting workers
    /// the active speakers and the room pipeline's data (`peer/room_lead.rs`).
    pub fn room_lead_channel(&self, room: &str) -> String {
        format!("{}room-lead:{room}", self.prefix)
    }

    /// The rooms placed on a worker (their records are cleared when it dies).
    pub fn worker_rooms(&self, worker_id: &str) -> String {
        format!("{}worker-rooms:{worker_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_colons_stay_unambiguous() {
        let keys = Keys::new("rm:");
        assert_eq!(keys.peer("a:b"), "rm:peer:a:b");
        assert_eq!(keys.peer_id_of("rm:peer:a:b"), Some("a:b"));
        assert_eq!(keys.offer("a:b", "c"), "rm:offer:a:b/c");
        assert_eq!(keys.offer_patterns("c")[1], "rm:offer:*/c");
    }
}
