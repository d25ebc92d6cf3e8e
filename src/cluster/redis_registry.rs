//! The peer registry and pending offers in Redis: any replica sees every peer, and announce is
//! an atomic create (`SET NX`) across all of them. Each replica keeps a liveness key; the
//! peers of a replica whose key expired (it crashed) enter their resume grace, and whichever
//! replica sweeps first ends a grace that ran out; a detached peer is resumed or taken over
//! by one stream only (Lua scripts make each step atomic).

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
use crate::signaling::{
    unix_millis, PeerRecord, PeerRegistry, PendingOffer, RegistryError, PENDING_OFFER_TTL,
};

/// A peer record lives this long without a refresh (a safety net: the sweep moves a crashed
/// replica's peers into their grace well before).
pub const PEER_TTL: Duration = Duration::from_secs(30);
/// A replica whose liveness key is this old is dead; its peers enter their grace.
pub const REPLICA_TTL: Duration = Duration::from_secs(10);
/// How often a replica refreshes its liveness key and the records of the peers it holds.
const REFRESH_INTERVAL: Duration = Duration::from_secs(3);
/// A detached record outlives its grace by this much, so a sweep claims it before it expires.
const DETACHED_MARGIN: Duration = Duration::from_secs(30);

/// Marks a peer detached if the given stream still holds it.
/// KEYS[1] peer; ARGV: connection id, detached-until ms, cursor ("" = none), TTL ms.
const DETACH_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.connection_id ~= ARGV[1] then return 0 end
r.detached_until_ms = tonumber(ARGV[2])
if ARGV[3] == '' then r.cursor = cjson.null else r.cursor = ARGV[3] end
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[4])
return 1
";

/// Takes a detached peer back with its token. Returns the record as it was, 'taken', or nil.
/// KEYS[1] peer; ARGV: token, owner, connection id, TTL ms.
const RESUME_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local r = cjson.decode(v)
local d = r.detached_until_ms
if d == nil or d == cjson.null or r.resume_token ~= ARGV[1] then return 'taken' end
r.detached_until_ms = cjson.null
r.owner = ARGV[2]
r.connection_id = ARGV[3]
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[4])
return v
";

/// Gives a detached peer's id to a new stream: replaces its record. Returns the record as it
/// was, 'taken' (a live stream holds it), or nil (no such peer).
/// KEYS[1] peer; ARGV: the new record, TTL ms.
const TAKE_OVER_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local d = cjson.decode(v).detached_until_ms
if d == nil or d == cjson.null then return 'taken' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return v
";

/// Deletes a peer whose grace ran out; 1 for the one caller that did.
/// KEYS[1] peer; ARGV: now ms.
const CLAIM_EXPIRED_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local d = cjson.decode(v).detached_until_ms
if d == nil or d == cjson.null or d > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Starts the grace of a connected peer whose replica died.
/// KEYS[1] peer; ARGV: dead owner, detached-until ms, TTL ms.
const ORPHAN_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
local d = r.detached_until_ms
if (d ~= nil and d ~= cjson.null) or r.owner ~= ARGV[1] then return 0 end
r.detached_until_ms = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[3])
return 1
";
/// Keys fetched per SCAN step.
const SCAN_COUNT: usize = 500;

/// [`PeerRegistry`] on Redis.
pub struct RedisRegistry {
    redis: ConnectionManager,
    keys: Keys,
    /// This replica, as owner of the peers it holds.
    replica_id: String,
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
    #[serde(default)]
    resume_token: String,
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    detached_until_ms: Option<u64>,
    /// The replica holding the peer's stream.
    #[serde(default)]
    owner: String,
}

impl StoredPeer {
    fn new(record: &PeerRecord, owner: &str) -> Self {
        Self {
            peer_id: record.peer_id.clone(),
            audio: record.capabilities.audio,
            video: record.capabilities.video,
            data: record.capabilities.data,
            extensions: record.capabilities.extensions.clone(),
            metadata: record.metadata.clone(),
            connected_at: record.connected_at,
            resume_token: record.resume_token.clone(),
            connection_id: record.connection_id.clone(),
            cursor: record.cursor.clone(),
            detached_until_ms: record.detached_until_ms,
            owner: owner.to_owned(),
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
            resume_token: stored.resume_token,
            connection_id: stored.connection_id,
            cursor: stored.cursor,
            detached_until_ms: stored.detached_until_ms,
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
        let replica_id = uuid::Uuid::new_v4().simple().to_string();
        tokio::spawn(refresh_local_peers(
            redis.clone(),
            keys.clone(),
            replica_id.clone(),
            Arc::clone(&local),
            stop,
        ));
        Self {
            redis,
            keys,
            replica_id,
            local,
        }
    }

    /// Every stored peer record.
    async fn stored_peers(&self) -> Vec<StoredPeer> {
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
        values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<StoredPeer>(&v).ok())
            .collect()
    }

    /// Owners among `owners` whose liveness key is gone.
    async fn dead_replicas(&self, owners: HashSet<String>) -> HashSet<String> {
        let owners: Vec<String> = owners
            .into_iter()
            .filter(|o| !o.is_empty() && *o != self.replica_id)
            .collect();
        if owners.is_empty() {
            return HashSet::new();
        }
        let alive: Result<Vec<Option<String>>, _> = redis::cmd("MGET")
            .arg(
                owners
                    .iter()
                    .map(|o| self.keys.replica(o))
                    .collect::<Vec<_>>(),
            )
            .query_async(&mut self.redis.clone())
            .await;
        match alive {
            Ok(alive) => owners
                .into_iter()
                .zip(alive)
                .filter(|(_, key)| key.is_none())
                .map(|(owner, _)| owner)
                .collect(),
            // Unknown is not dead: nobody loses its peers over a Redis hiccup.
            Err(_) => HashSet::new(),
        }
    }

    /// The keys of the pending offers from and to `peer_id`.
    async fn offer_keys(&self, peer_id: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for pattern in self.keys.offer_patterns(peer_id) {
            keys.extend(self.scan(&pattern).await);
        }
        keys
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
    replica_id: String,
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
        pipe.cmd("SET")
            .arg(keys.replica(&replica_id))
            .arg(1)
            .arg("PX")
            .arg(REPLICA_TTL.as_millis() as u64)
            .ignore();
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
        let value = serde_json::to_string(&StoredPeer::new(&record, &self.replica_id))
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
        doomed.extend(self.offer_keys(peer_id).await);
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
        let mut peers: Vec<PeerRecord> = self
            .stored_peers()
            .await
            .into_iter()
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

    async fn detach(
        &self,
        peer_id: &str,
        connection_id: &str,
        cursor: Option<String>,
        grace: Duration,
    ) -> bool {
        self.local.lock().remove(peer_id);
        let detached: Result<i64, _> = redis::Script::new(DETACH_SCRIPT)
            .key(self.keys.peer(peer_id))
            .arg(connection_id)
            .arg(unix_millis() + grace.as_millis() as u64)
            .arg(cursor.unwrap_or_default())
            .arg((grace + DETACHED_MARGIN).as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await;
        match detached {
            Ok(n) => n == 1,
            Err(err) => {
                tracing::warn!(%err, peer_id, "marking a peer detached in Redis failed");
                false
            }
        }
    }

    async fn resume(
        &self,
        peer_id: &str,
        token: &str,
        connection_id: &str,
    ) -> Result<Option<PeerRecord>, RegistryError> {
        let reply: Option<String> = redis::Script::new(RESUME_SCRIPT)
            .key(self.keys.peer(peer_id))
            .arg(token)
            .arg(&self.replica_id)
            .arg(connection_id)
            .arg(PEER_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        match reply.as_deref() {
            None => Ok(None),
            Some("taken") => Err(RegistryError::AlreadyExists(peer_id.to_owned())),
            Some(json) => {
                let stored: StoredPeer = serde_json::from_str(json)
                    .map_err(|e| RegistryError::Unavailable(format!("stored peer: {e}")))?;
                self.local.lock().insert(peer_id.to_owned());
                Ok(Some(stored.into()))
            }
        }
    }

    async fn take_over(&self, record: PeerRecord) -> Result<Option<PeerRecord>, RegistryError> {
        let peer_id = record.peer_id.clone();
        let value = serde_json::to_string(&StoredPeer::new(&record, &self.replica_id))
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let reply: Option<String> = redis::Script::new(TAKE_OVER_SCRIPT)
            .key(self.keys.peer(&peer_id))
            .arg(value)
            .arg(PEER_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let old: StoredPeer = match reply.as_deref() {
            None => return Ok(None),
            Some("taken") => return Err(RegistryError::AlreadyExists(peer_id)),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| RegistryError::Unavailable(format!("stored peer: {e}")))?,
        };
        self.local.lock().insert(peer_id.clone());
        // The old registration's offers. Not atomic with the swap: an offer made in between
        // goes too, as the notification carrying it does (the old notifications are discarded).
        let offers = self.offer_keys(&peer_id).await;
        if !offers.is_empty() {
            if let Err(err) = redis::cmd("DEL")
                .arg(&offers)
                .query_async::<()>(&mut self.redis.clone())
                .await
            {
                tracing::warn!(%err, peer_id, "removing taken-over offers from Redis failed; they expire");
            }
        }
        Ok(Some(old.into()))
    }

    async fn sweep(&self, grace: Duration) -> Vec<PeerRecord> {
        let now = unix_millis();
        let stored = self.stored_peers().await;
        let owners = stored
            .iter()
            .filter(|p| p.detached_until_ms.is_none())
            .map(|p| p.owner.clone())
            .collect();
        let dead = self.dead_replicas(owners).await;
        let mut ended = Vec::new();
        for peer in stored {
            let key = self.keys.peer(&peer.peer_id);
            match peer.detached_until_ms {
                Some(until) if until <= now => {
                    let claimed: Result<i64, _> = redis::Script::new(CLAIM_EXPIRED_SCRIPT)
                        .key(&key)
                        .arg(now)
                        .invoke_async(&mut self.redis.clone())
                        .await;
                    if matches!(claimed, Ok(1)) {
                        ended.push(peer.into());
                    }
                }
                None if dead.contains(&peer.owner) => {
                    let orphaned: Result<i64, _> = redis::Script::new(ORPHAN_SCRIPT)
                        .key(&key)
                        .arg(&peer.owner)
                        .arg(now + grace.as_millis() as u64)
                        .arg((grace + DETACHED_MARGIN).as_millis() as u64)
                        .invoke_async(&mut self.redis.clone())
                        .await;
                    if matches!(orphaned, Ok(1)) {
                        tracing::warn!(
                            peer_id = peer.peer_id,
                            replica = peer.owner,
                            "the peer's signaling replica died: it may resume elsewhere"
                        );
                    }
                }
                _ => {}
            }
        }
        ended
    }
}
