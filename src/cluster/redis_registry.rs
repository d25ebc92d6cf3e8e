//! The peer registry and pending offers in Redis: any replica sees every peer, and announce is
//! an atomic create (`SET NX`) across all of them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use crate::proto::signaling::PeerCapabilities;
use crate::signaling::{PeerRecord, PeerRegistry, PendingOffer, RegistryError, PENDING_OFFER_TTL};

/// A peer record lives this long without a refresh: a crashed replica's peers expire.
pub const PEER_TTL: Duration = Duration::from_secs(30);
/// How often a replica refreshes the records of the peers it holds.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Keys fetched per SCAN step.
const SCAN_COUNT: usize = 500;

/// [`PeerRegistry`] on Redis.
pub struct RedisRegistry {
    redis: ConnectionManager,
    keys: Keys,
    /// Peers registered through this replica, whose TTL it refreshes.
    local: Arc<Mutex<HashSet<String>>>,
}

/// The stored form of a [`PeerRecord`].
#[derive(Serialize, Deserialize)]
struct StoredPeer {
    peer_id: String,
    audio: bool,
    video: bool,
    data: bool,
    extensions: String,
    metadata: HashMap<String, String>,
    connected_at: u64,
}

impl From<&PeerRecord> for StoredPeer {
    fn from(record: &PeerRecord) -> Self {
        Self {
            peer_id: record.peer_id.clone(),
            audio: record.capabilities.audio,
            video: record.capabilities.video,
            data: record.capabilities.data,
            extensions: record.capabilities.extensions.clone(),
            metadata: record.metadata.clone(),
            connected_at: record.connected_at,
        }
    }
}

impl From<StoredPeer> for PeerRecord {
    fn from(stored: StoredPeer) -> Self {
        Self {
            peer_id: stored.peer_id,
            capabilities: PeerCapabilities {
                audio: stored.audio,
                video: stored.video,
                data: stored.data,
                extensions: stored.extensions,
            },
            metadata: stored.metadata,
            connected_at: stored.connected_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredOffer {
    offer_id: String,
    from: String,
    to: String,
    sdp: String,
}

impl RedisRegistry {
    /// A registry on `redis`; refreshes its peers' TTL until `stop` fires.
    pub fn new(redis: ConnectionManager, keys: Keys, stop: CancellationToken) -> Self {
        let local = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(refresh_local_peers(
            redis.clone(),
            keys.clone(),
            Arc::clone(&local),
            stop,
        ));
        Self { redis, keys, local }
    }

    async fn scan(&self, pattern: &str) -> Vec<String> {
        let mut redis = self.redis.clone();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let step: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut redis)
                .await;
            match step {
                Ok((next, keys)) => {
                    found.extend(keys);
                    if next == 0 {
                        return found;
                    }
                    cursor = next;
                }
                Err(err) => {
                    tracing::warn!(%err, pattern, "Redis SCAN failed");
                    return found;
                }
            }
        }
    }
}

async fn refresh_local_peers(
    redis: ConnectionManager,
    keys: Keys,
    local: Arc<Mutex<HashSet<String>>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let peers: Vec<String> = local.lock().iter().cloned().collect();
        let mut pipe = redis::pipe();
        for peer_id in &peers {
            pipe.cmd("PEXPIRE")
                .arg(keys.peer(peer_id))
                .arg(PEER_TTL.as_millis() as u64)
                .ignore();
        }
        if let Err(err) = pipe.query_async::<()>(&mut redis.clone()).await {
            tracing::warn!(%err, peers = peers.len(), "refreshing peer records in Redis failed");
        }
    }
}

#[async_trait]
impl PeerRegistry for RedisRegistry {
    async fn register(&self, record: PeerRecord) -> Result<(), RegistryError> {
        let value = serde_json::to_string(&StoredPeer::from(&record))
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let created: Option<String> = redis::cmd("SET")
            .arg(self.keys.peer(&record.peer_id))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(PEER_TTL.as_millis() as u64)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        if created.is_none() {
            return Err(RegistryError::AlreadyExists(record.peer_id));
        }
        self.local.lock().insert(record.peer_id);
        Ok(())
    }

    async fn unregister(&self, peer_id: &str) {
        self.local.lock().remove(peer_id);
        let mut doomed = vec![self.keys.peer(peer_id)];
        for pattern in self.keys.offer_patterns(peer_id) {
            doomed.extend(self.scan(&pattern).await);
        }
        if let Err(err) = redis::cmd("DEL")
            .arg(&doomed)
            .query_async::<()>(&mut self.redis.clone())
            .await
        {
            tracing::warn!(%err, peer_id, "removing a peer from Redis failed; it expires");
        }
    }

    async fn get(&self, peer_id: &str) -> Option<PeerRecord> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.keys.peer(peer_id))
            .query_async(&mut self.redis.clone())
            .await
            .ok()?;
        serde_json::from_str::<StoredPeer>(&value?)
            .ok()
            .map(Into::into)
    }

    async fn list(&self) -> Vec<PeerRecord> {
        let keys = self.scan(&self.keys.peer_pattern()).await;
        if keys.is_empty() {
            return Vec::new();
        }
        let values: Vec<Option<String>> = match redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis.clone())
            .await
        {
            Ok(values) => values,
            Err(err) => {
                tracing::warn!(%err, "listing peers from Redis failed");
                return Vec::new();
            }
        };
        let mut peers: Vec<PeerRecord> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<StoredPeer>(&v).ok())
            .map(Into::into)
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        peers
    }

    async fn put_offer(&self, offer: PendingOffer) {
        let key = self.keys.offer(&offer.from, &offer.to);
        let stored = StoredOffer {
            offer_id: offer.offer_id,
            from: offer.from,
            to: offer.to,
            sdp: offer.sdp,
        };
        let Ok(value) = serde_json::to_string(&stored) else {
            return;
        };
        if let Err(err) = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(PENDING_OFFER_TTL.as_millis() as u64)
            .query_async::<()>(&mut self.redis.clone())
            .await
        {
            tracing::warn!(%err, "storing a pending offer in Redis failed");
        }
    }

    async fn take_offer(&self, from: &str, to: &str) -> Option<PendingOffer> {
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.keys.offer(from, to))
            .query_async(&mut self.redis.clone())
            .await
            .ok()?;
        let stored: StoredOffer = serde_json::from_str(&value?).ok()?;
        Some(PendingOffer {
            offer_id: stored.offer_id,
            from: stored.from,
            to: stored.to,
            sdp: stored.sdp,
        })
    }

    async fn pending_offer_count(&self) -> usize {
        self.scan(&self.keys.offer_pattern()).await.len()
    }
}
