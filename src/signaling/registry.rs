//! Who is connected, and which offers wait for an answer. In memory here; Redis in the cluster.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::proto::signaling::PeerCapabilities;

/// How long an unanswered offer is kept.
pub const PENDING_OFFER_TTL: Duration = Duration::from_secs(60);

/// A registered client peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    pub peer_id: String,
    pub capabilities: PeerCapabilities,
    pub metadata: HashMap<String, String>,
    /// Unix seconds.
    pub connected_at: u64,
    /// Presented (announce metadata `resume_token`) to take the peer back after its stream broke.
    pub resume_token: String,
    /// The stream that holds the peer now: a late detach of an older stream changes nothing.
    pub connection_id: String,
    /// Where its notifications continue after a resume (the bus's position); `None`: from
    /// the first one kept.
    pub cursor: Option<String>,
    /// Set while the peer's stream is broken: it may resume until then (Unix milliseconds).
    pub detached_until_ms: Option<u64>,
}

impl PeerRecord {
    /// Whether the peer is in its resume grace (its stream broke, it has not come back).
    pub fn is_detached(&self) -> bool {
        self.detached_until_ms.is_some()
    }

    /// The room the peer joined (announce metadata `room`, validated at announce); `None`:
    /// the lobby.
    pub fn room(&self) -> Option<&str> {
        self.metadata.get(ROOM_METADATA_KEY).map(String::as_str)
    }
}

/// Announce metadata key of the room a peer joins (a token's `room` claim sets it).
pub const ROOM_METADATA_KEY: &str = "room";

/// Milliseconds since the Unix epoch (grace deadlines are compared across replicas).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An offer forwarded to a peer that has not answered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffer {
    pub offer_id: String,
    pub from: String,
    pub to: String,
    pub sdp: String,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("peer id {0:?} is already registered")]
    AlreadyExists(String),
    #[error("peer registry unavailable: {0}")]
    Unavailable(String),
    /// The room already has `max` participants (those in their resume grace included).
    #[error("room {room:?} is full: at most {max} participants")]
    RoomFull { room: String, max: usize },
}

/// The peer registry and the pending offers, shared by every signaling stream.
#[async_trait]
pub trait PeerRegistry: Send + Sync + 'static {
    /// Registers a peer; atomic with the duplicate check and, for a room participant, with
    /// the check that its room has fewer than `max_room_participants` (`RoomFull`).
    async fn register(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<(), RegistryError>;
    /// Removes a peer and every pending offer from or to it.
    async fn unregister(&self, peer_id: &str);
    async fn get(&self, peer_id: &str) -> Option<PeerRecord>;
    /// Every registered peer, sorted by id.
    async fn list(&self) -> Vec<PeerRecord>;
    /// The peers of one room (`None`: the lobby, the peers in no room), sorted by id.
    async fn list_room(&self, room: Option<&str>) -> Vec<PeerRecord> {
        let mut peers = self.list().await;
        peers.retain(|record| record.room() == room);
        peers
    }
    /// Stores an offer keyed by its (from, to) pair, replacing an older one of that pair.
    async fn put_offer(&self, offer: PendingOffer);
    /// Removes and returns the live offer `from` sent to `to`.
    async fn take_offer(&self, from: &str, to: &str) -> Option<PendingOffer>;
    /// Registered peers (detached ones included), without listing them: `HealthCheck`
    /// answers unauthenticated callers, so its cost must not grow with the cluster.
    async fn peer_count(&self) -> usize {
        self.list().await.len()
    }
    /// Live pending offers.
    async fn pending_offer_count(&self) -> usize;
    /// The stream `connection_id` of `peer_id` broke: keep the peer, and its notification
    /// `cursor`, for `grace`. Returns false when the peer is gone or held by another stream.
    async fn detach(
        &self,
        peer_id: &str,
        connection_id: &str,
        cursor: Option<String>,
        grace: Duration,
    ) -> bool;
    /// Takes a detached peer back for the stream `connection_id` if `token` is its resume
    /// token. `Ok(None)`: no such peer (its grace ended); `AlreadyExists`: connected, or a
    /// wrong token.
    async fn resume(
        &self,
        peer_id: &str,
        token: &str,
        connection_id: &str,
    ) -> Result<Option<PeerRecord>, RegistryError>;
    /// Gives the id of a detached peer to a new stream that has no (valid) resume token:
    /// replaces its record with `record` and drops its pending offers, atomically with the
    /// check. Returns the old record; `Ok(None)`: no such peer; `AlreadyExists`: a live
    /// stream holds it (never taken); `RoomFull`: `record` joins another room than the old
    /// one and that room has `max_room_participants` (the same room: its place is taken over,
    /// not counted again).
    async fn take_over(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<Option<PeerRecord>, RegistryError>;
    /// Removes the peers whose grace ran out and returns them, each to exactly one caller
    /// (across replicas), which ends their sessions. In a cluster it also starts the grace of
    /// peers whose replica died.
    async fn sweep(&self, grace: Duration) -> Vec<PeerRecord>;
}

/// Single-process registry.
#[derive(Default)]
pub struct InMemoryRegistry {
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    peers: HashMap<String, PeerRecord>,
    offers: HashMap<(String, String), (PendingOffer, Instant)>,
}

impl RegistryState {
    /// `RoomFull` when `record` joins a room that already has `max` participants other
    /// than `record`'s own id (whose place a takeover reuses).
    fn check_room(&self, record: &PeerRecord, max: usize) -> Result<(), RegistryError> {
        let Some(room) = record.room() else {
            return Ok(());
        };
        let participants = self
            .peers
            .values()
            .filter(|p| p.room() == Some(room) && p.peer_id != record.peer_id)
            .count();
        if participants >= max {
            return Err(RegistryError::RoomFull {
                room: room.to_owned(),
                max,
            });
        }
        Ok(())
    }

    fn drop_expired_offers(&mut self, now: Instant) {
        self.offers
            .retain(|_, (_, created)| now.duration_since(*created) < PENDING_OFFER_TTL);
    }
}

#[async_trait]
impl PeerRegistry for InMemoryRegistry {
    async fn register(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        if state.peers.contains_key(&record.peer_id) {
            return Err(RegistryError::AlreadyExists(record.peer_id));
        }
        state.check_room(&record, max_room_participants)?;
        state.peers.insert(record.peer_id.clone(), record);
        Ok(())
    }

    async fn unregister(&self, peer_id: &str) {
        let mut state = self.state.lock();
        state.peers.remove(peer_id);
        state
            .offers
            .retain(|(from, to), _| from != peer_id && to != peer_id);
    }

    async fn get(&self, peer_id: &str) -> Option<PeerRecord> {
        self.state.lock().peers.get(peer_id).cloned()
    }

    async fn list(&self) -> Vec<PeerRecord> {
        let mut peers: Vec<_> = self.state.lock().peers.values().cloned().collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        peers
    }

    async fn put_offer(&self, offer: PendingOffer) {
        let now = Instant::now();
        let mut state = self.state.lock();
        // Expiry is swept here rather than by a timer task: offers only grow through this call.
        state.drop_expired_offers(now);
        state
            .offers
            .insert((offer.from.clone(), offer.to.clone()), (offer, now));
    }

    async fn take_offer(&self, from: &str, to: &str) -> Option<PendingOffer> {
        let mut state = self.state.lock();
        state.drop_expired_offers(Instant::now());
        state
            .offers
            .remove(&(from.to_owned(), to.to_owned()))
            .map(|(offer, _)| offer)
    }

    async fn pending_offer_count(&self) -> usize {
        let mut state = self.state.lock();
        state.drop_expired_offers(Instant::now());
        state.offers.len()
    }

    async fn detach(
        &self,
        peer_id: &str,
        connection_id: &str,
        cursor: Option<String>,
        grace: Duration,
    ) -> bool {
        let mut state = self.state.lock();
        match state.peers.get_mut(peer_id) {
            Some(record) if record.connection_id == connection_id => {
                record.cursor = cursor;
                record.detached_until_ms = Some(unix_millis() + grace.as_millis() as u64);
                true
            }
            _ => false,
        }
    }

    async fn resume(
        &self,
        peer_id: &str,
        token: &str,
        connection_id: &str,
    ) -> Result<Option<PeerRecord>, RegistryError> {
        let mut state = self.state.lock();
        let Some(record) = state.peers.get_mut(peer_id) else {
            return Ok(None);
        };
        if !record.is_detached() || record.resume_token != token {
            return Err(RegistryError::AlreadyExists(peer_id.to_owned()));
        }
        let before = record.clone();
        record.detached_until_ms = None;
        connection_id.clone_into(&mut record.connection_id);
        Ok(Some(before))
    }

    async fn take_over(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<Option<PeerRecord>, RegistryError> {
        let mut state = self.state.lock();
        let peer_id = record.peer_id.clone();
        match state.peers.get(&peer_id) {
            None => return Ok(None),
            Some(old) if !old.is_detached() => return Err(RegistryError::AlreadyExists(peer_id)),
            Some(_) => {}
        }
        state.check_room(&record, max_room_participants)?;
        state
            .offers
            .retain(|(from, to), _| *from != peer_id && *to != peer_id);
        Ok(state.peers.insert(peer_id, record))
    }

    async fn sweep(&self, _grace: Duration) -> Vec<PeerRecord> {
        let now = unix_millis();
        let mut state = self.state.lock();
        let ended: Vec<String> = state
            .peers
            .values()
            .filter(|r| r.detached_until_ms.is_some_and(|until| until <= now))
            .map(|r| r.peer_id.clone())
            .collect();
        ended
            .iter()
            .filter_map(|id| state.peers.remove(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--max-room-participants` of these tests.
    const CAP: usize = 2;

    fn record(id: &str) -> PeerRecord {
        PeerRecord {
            peer_id: id.into(),
            capabilities: PeerCapabilities::default(),
            metadata: HashMap::new(),
            connected_at: 0,
            resume_token: format!("token-{id}"),
            connection_id: "c1".into(),
            cursor: None,
            detached_until_ms: None,
        }
    }

    fn offer(from: &str, to: &str) -> PendingOffer {
        PendingOffer {
            offer_id: format!("{from}-{to}"),
            from: from.into(),
            to: to.into(),
            sdp: "v=0".into(),
        }
    }

    #[tokio::test]
    async fn register_is_a_duplicate_checked_create() {
        let registry = InMemoryRegistry::default();
        registry.register(record("a"), CAP).await.unwrap();
        assert!(matches!(
            registry.register(record("a"), CAP).await,
            Err(RegistryError::AlreadyExists(_))
        ));
        registry.unregister("a").await;
        registry.register(record("a"), CAP).await.unwrap();
    }

    #[tokio::test]
    async fn offers_are_keyed_by_pair_and_cleared_with_their_peers() {
        let registry = InMemoryRegistry::default();
        registry.put_offer(offer("a", "b")).await;
        registry.put_offer(offer("a", "b")).await;
        registry.put_offer(offer("c", "a")).await;
        assert_eq!(registry.pending_offer_count().await, 2);
        assert!(registry.take_offer("a", "b").await.is_some());
        assert!(registry.take_offer("a", "b").await.is_none());
        registry.unregister("a").await;
        assert_eq!(registry.pending_offer_count().await, 0);
    }

    #[tokio::test]
    async fn a_detached_peer_resumes_with_its_token_only_and_expires_after_its_grace() {
        let registry = InMemoryRegistry::default();
        registry.register(record("a"), CAP).await.unwrap();
        // Connected: no resume, whatever the token.
        assert!(registry.resume("a", "token-a", "c2").await.is_err());
        // Only the stream that holds the peer detaches it.
        assert!(
            !registry
                .detach("a", "other", None, Duration::from_secs(30))
                .await
        );
        assert!(
            registry
                .detach("a", "c1", Some("5-0".into()), Duration::from_secs(30))
                .await
        );
        assert!(registry.resume("a", "wrong", "c2").await.is_err());
        let resumed = registry
            .resume("a", "token-a", "c2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resumed.cursor.as_deref(), Some("5-0"));
        assert!(registry.sweep(Duration::ZERO).await.is_empty());
        assert!(registry.resume("nobody", "t", "c").await.unwrap().is_none());

        // The old stream's late detach changes nothing; the new one's does.
        assert!(!registry.detach("a", "c1", None, Duration::ZERO).await);
        assert!(registry.detach("a", "c2", None, Duration::ZERO).await);
        let ended = registry.sweep(Duration::ZERO).await;
        assert_eq!(ended.len(), 1);
        assert!(registry.get("a").await.is_none());
        assert!(registry.sweep(Duration::ZERO).await.is_empty());
    }

    #[tokio::test]
    async fn only_a_detached_peer_is_taken_over_and_its_offers_go_with_it() {
        let registry = InMemoryRegistry::default();
        let mut newer = record("a");
        newer.connection_id = "c2".into();
        newer.resume_token = "token-new".into();
        assert!(registry
            .take_over(newer.clone(), CAP)
            .await
            .unwrap()
            .is_none());
        registry.register(record("a"), CAP).await.unwrap();
        registry.put_offer(offer("a", "b")).await;
        registry.put_offer(offer("b", "a")).await;
        registry.put_offer(offer("b", "c")).await;
        // Connected: never taken.
        assert!(matches!(
            registry.take_over(newer.clone(), CAP).await,
            Err(RegistryError::AlreadyExists(_))
        ));
        assert_eq!(registry.pending_offer_count().await, 3);
        assert!(
            registry
                .detach("a", "c1", None, Duration::from_secs(30))
                .await
        );
        let old = registry
            .take_over(newer.clone(), CAP)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.connection_id, "c1");
        assert_eq!(registry.get("a").await, Some(newer.clone()));
        assert_eq!(registry.pending_offer_count().await, 1);
        // The old token no longer resumes, the old stream's late detach changes nothing, and
        // the new registration is live: not taken again, not swept.
        assert!(registry.resume("a", "token-a", "c3").await.is_err());
        assert!(!registry.detach("a", "c1", None, Duration::ZERO).await);
        assert!(registry.take_over(record("a"), CAP).await.is_err());
        assert!(registry.sweep(Duration::ZERO).await.is_empty());
    }

    fn participant(id: &str, room: &str) -> PeerRecord {
        let mut record = record(id);
        record
            .metadata
            .insert(ROOM_METADATA_KEY.to_owned(), room.to_owned());
        record
    }

    #[tokio::test]
    async fn a_room_takes_its_cap_of_participants_and_lists_only_them() {
        let registry = InMemoryRegistry::default();
        registry.register(record("lobby-1"), CAP).await.unwrap();
        registry
            .register(participant("a", "r1"), CAP)
            .await
            .unwrap();
        registry
            .register(participant("b", "r1"), CAP)
            .await
            .unwrap();
        // Another room and the lobby do not count.
        registry
            .register(participant("c", "r2"), CAP)
            .await
            .unwrap();
        registry.register(record("lobby-2"), CAP).await.unwrap();
        match registry.register(participant("d", "r1"), CAP).await {
            Err(RegistryError::RoomFull { room, max }) => {
                assert_eq!((room.as_str(), max), ("r1", CAP))
            }
            other => panic!("a third participant of r1 must be refused: {other:?}"),
        }
        assert!(registry.get("d").await.is_none());
        let ids = |records: Vec<PeerRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.peer_id).collect()
        };
        assert_eq!(ids(registry.list_room(Some("r1")).await), ["a", "b"]);
        assert_eq!(ids(registry.list_room(Some("r2")).await), ["c"]);
        assert_eq!(ids(registry.list_room(None).await), ["lobby-1", "lobby-2"]);
        // A leave frees a place.
        registry.unregister("a").await;
        registry
            .register(participant("d", "r1"), CAP)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_takeover_keeps_its_place_in_its_room_and_needs_one_in_another() {
        let registry = InMemoryRegistry::default();
        registry
            .register(participant("a", "r1"), CAP)
            .await
            .unwrap();
        registry
            .register(participant("b", "r1"), CAP)
            .await
            .unwrap();
        registry
            .register(participant("c", "r2"), CAP)
            .await
            .unwrap();
        registry
            .register(participant("d", "r2"), CAP)
            .await
            .unwrap();
        assert!(
            registry
                .detach("a", "c1", None, Duration::from_secs(30))
                .await
        );
        // The same room: the detached participant's own place, not a second one.
        let mut again = participant("a", "r1");
        again.connection_id = "c2".into();
        assert!(registry.take_over(again, CAP).await.unwrap().is_some());
        assert!(
            registry
                .detach("a", "c2", None, Duration::from_secs(30))
                .await
        );
        // A full other room: refused, and the old registration stays as it was.
        let mut elsewhere = participant("a", "r2");
        elsewhere.connection_id = "c3".into();
        assert!(matches!(
            registry.take_over(elsewhere, CAP).await,
            Err(RegistryError::RoomFull { .. })
        ));
        let kept = registry.get("a").await.unwrap();
        assert_eq!(
            (kept.room(), kept.connection_id.as_str()),
            (Some("r1"), "c2")
        );
        assert!(kept.is_detached());
    }
}
