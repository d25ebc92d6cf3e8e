//! Who is connected, and which offers wait for an answer. In memory here; Redis in the cluster.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
}

/// The peer registry and the pending offers, shared by every signaling stream.
#[async_trait]
pub trait PeerRegistry: Send + Sync + 'static {
    /// Registers a peer; atomic with the duplicate check.
    async fn register(&self, record: PeerRecord) -> Result<(), RegistryError>;
    /// Removes a peer and every pending offer from or to it.
    async fn unregister(&self, peer_id: &str);
    async fn get(&self, peer_id: &str) -> Option<PeerRecord>;
    /// Every registered peer, sorted by id.
    async fn list(&self) -> Vec<PeerRecord>;
    /// Stores an offer keyed by its (from, to) pair, replacing an older one of that pair.
    async fn put_offer(&self, offer: PendingOffer);
    /// Removes and returns the live offer `from` sent to `to`.
    async fn take_offer(&self, from: &str, to: &str) -> Option<PendingOffer>;
    /// Live pending offers.
    async fn pending_offer_count(&self) -> usize;
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
    fn drop_expired_offers(&mut self, now: Instant) {
        self.offers
            .retain(|_, (_, created)| now.duration_since(*created) < PENDING_OFFER_TTL);
    }
}

#[async_trait]
impl PeerRegistry for InMemoryRegistry {
    async fn register(&self, record: PeerRecord) -> Result<(), RegistryError> {
        let mut state = self.state.lock();
        if state.peers.contains_key(&record.peer_id) {
            return Err(RegistryError::AlreadyExists(record.peer_id));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> PeerRecord {
        PeerRecord {
            peer_id: id.into(),
            capabilities: PeerCapabilities::default(),
            metadata: HashMap::new(),
            connected_at: 0,
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
        registry.register(record("a")).await.unwrap();
        assert!(matches!(
            registry.register(record("a")).await,
            Err(RegistryError::AlreadyExists(_))
        ));
        registry.unregister("a").await;
        registry.register(record("a")).await.unwrap();
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
}
