//! The peer registry and pending offers in Redis: any replica sees every peer, and announce is
//! an atomic create (`SET NX`) across all of them. Each replica keeps a liveness key; the
//! peers of a replica whose key expired (it crashed) enter their resume grace, and whichever
//! replica sweeps first ends a grace that ran out; a detached peer is resumed or taken over
//! by one stream only (Lua scripts make each step atomic).

use std::collections::HashMap;
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

/// Lua: the index of a decoded record's scope, its room's or the lobby's (scripts that learn
/// the room only from the stored record). Room names are validated at announce.
macro_rules! scope_of {
    () => {
        r"
local function scope_of(r, lobby, rooms)
  local room = nil
  if type(r.metadata) == 'table' then room = r.metadata.room end
  if type(room) == 'string' and room ~= '' then return rooms .. room end
  return lobby
end
"
    };
}

/// Registers a peer unless its id is taken or its room is full, with its index entries.
/// KEYS[1] peer, KEYS[2] peer index, KEYS[3] this replica's peers, KEYS[4] the index of the
/// peer's room (or the lobby's); ARGV: record, TTL ms, peer id, now ms, participant cap
/// (0: none, the lobby). Returns 1, 0 (the id is taken) or -1 (the room is full).
const REGISTER_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('ZCARD', KEYS[4]) >= cap then return -1 end
local expires = tonumber(ARGV[4]) + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], expires, ARGV[3])
redis.call('ZADD', KEYS[4], expires, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
";

/// Removes a peer, its index entries and every pending offer from or to it.
/// KEYS[1] peer, KEYS[2] peer index, KEYS[3] detached, KEYS[4] this replica's peers,
/// KEYS[5] the peer's offers, KEYS[6] offer index, KEYS[7] lobby index; ARGV: peer id, room
/// index prefix.
const UNREGISTER_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('ZREM', scope_of(cjson.decode(v), KEYS[7], ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[7], ARGV[1])
end
for _, offer in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('DEL', offer)
  redis.call('ZREM', KEYS[6], offer)
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"
);

/// Drops a peer's pending offers. KEYS[1] the peer's offers, KEYS[2] offer index.
const DROP_OFFERS_SCRIPT: &str = r"
for _, offer in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', offer)
  redis.call('ZREM', KEYS[2], offer)
end
redis.call('DEL', KEYS[1])
return 1
";

/// Marks a peer detached if the given stream still holds it.
/// KEYS[1] peer, KEYS[2] detached, KEYS[3] peer index, KEYS[4] lobby index; ARGV: connection
/// id, detached-until ms, cursor ("" = none), TTL ms, peer id, now ms, room index prefix.
const DETACH_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.connection_id ~= ARGV[1] then return 0 end
local scope = scope_of(r, KEYS[4], ARGV[7])
r.detached_until_ms = tonumber(ARGV[2])
if ARGV[3] == '' then r.cursor = cjson.null else r.cursor = ARGV[3] end
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[4])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[5])
redis.call('ZADD', KEYS[3], tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
redis.call('ZADD', scope, tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
return 1
"
);

/// Takes a detached peer back with its token. Returns the record as it was, 'taken', or nil.
/// KEYS[1] peer, KEYS[2] detached, KEYS[3] peer index, KEYS[4] this replica's peers, KEYS[5]
/// lobby index; ARGV: token, owner, connection id, TTL ms, peer id, now ms, room index prefix.
const RESUME_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local r = cjson.decode(v)
local d = r.detached_until_ms
if d == nil or d == cjson.null or r.resume_token ~= ARGV[1] then return 'taken' end
local scope = scope_of(r, KEYS[5], ARGV[7])
r.detached_until_ms = cjson.null
r.owner = ARGV[2]
r.connection_id = ARGV[3]
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
redis.call('ZADD', scope, tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
redis.call('SADD', KEYS[4], ARGV[5])
return v
"
);

/// Gives a detached peer's id to a new stream: replaces its record. Returns the record as it
/// was, 'taken' (a live stream holds it), 'full' (the new record's room, another than the
/// old one's, is full), or nil (no such peer). The same room keeps its place: not counted.
/// KEYS as [`RESUME_SCRIPT`], KEYS[6] the new record's room index (or the lobby's); ARGV:
/// the new record, TTL ms, peer id, now ms, room index prefix, participant cap (0: none).
const TAKE_OVER_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local old = cjson.decode(v)
local d = old.detached_until_ms
if d == nil or d == cjson.null then return 'taken' end
local before = scope_of(old, KEYS[5], ARGV[5])
if before ~= KEYS[6] then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[4])
  local cap = tonumber(ARGV[6])
  if cap > 0 and redis.call('ZCARD', KEYS[6]) >= cap then return 'full' end
  redis.call('ZREM', before, ARGV[3])
end
local expires = tonumber(ARGV[4]) + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], expires, ARGV[3])
redis.call('ZADD', KEYS[6], expires, ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
return v
"
);

/// Deletes a peer whose grace ran out and returns its record, to the one caller that did;
/// otherwise corrects the detached index (the peer resumed, or its grace moved).
/// KEYS[1] peer, KEYS[2] detached, KEYS[3] peer index, KEYS[4] lobby index; ARGV: now ms,
/// peer id, room index prefix.
const CLAIM_EXPIRED_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[4], ARGV[2])
  return nil
end
local r = cjson.decode(v)
local d = r.detached_until_ms
if d == nil or d == cjson.null then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return nil
end
if d > tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[2], d, ARGV[2])
  return nil
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', scope_of(r, KEYS[4], ARGV[3]), ARGV[2])
return v
"
);

/// Starts the grace of a connected peer whose replica died.
/// KEYS[1] peer, KEYS[2] detached, KEYS[3] peer index, KEYS[4] lobby index; ARGV: dead
/// owner, detached-until ms, TTL ms, peer id, now ms, room index prefix.
const ORPHAN_SCRIPT: &str = concat!(
    scope_of!(),
    r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local r = cjson.decode(v)
local d = r.detached_until_ms
if (d ~= nil and d ~= cjson.null) or r.owner ~= ARGV[1] then return 0 end
local scope = scope_of(r, KEYS[4], ARGV[6])
r.detached_until_ms = tonumber(ARGV[2])
redis.call('SET', KEYS[1], cjson.encode(r), 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[4])
redis.call('ZADD', KEYS[3], tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[4])
redis.call('ZADD', scope, tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[4])
return 1
"
);

/// Stores a pending offer and indexes it under both peers.
/// KEYS[1] offer, KEYS[2] offer index, KEYS[3] sender's offers, KEYS[4] receiver's offers;
/// ARGV: offer, TTL ms, now ms, index TTL ms.
const PUT_OFFER_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), KEYS[1])
for i = 3, 4 do
  redis.call('SADD', KEYS[i], KEYS[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
return 1
";

/// Detached peers claimed per sweep round trip at most (the rest wait for the next sweep).
const SWEEP_BATCH: usize = 500;

/// [`PeerRegistry`] on Redis.
pub struct RedisRegistry {
    redis: ConnectionManager,
    keys: Keys,
    /// This replica, as owner of the peers it holds.
    replica_id: String,
    /// Peers registered through this replica, whose TTL it refreshes, each with the index
    /// of its room (or the lobby's).
    local: Arc<Mutex<HashMap<String, String>>>,
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

/// The refusal of `record`, whose room has `max` participants.
fn room_full(record: &PeerRecord, max: usize) -> RegistryError {
    RegistryError::RoomFull {
        room: record.room().unwrap_or_default().to_owned(),
        max,
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
        let local = Arc::new(Mutex::new(HashMap::new()));
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

    /// The stored records of an index's live entries (the peer index: every peer; a room's
    /// or the lobby's: theirs): two commands, no scan of the key space.
    async fn stored_peers(&self, index: String) -> Vec<StoredPeer> {
        let mut redis = self.redis.clone();
        let ids: Vec<String> = match redis::cmd("ZRANGEBYSCORE")
            .arg(index)
            .arg(unix_millis())
            .arg("+inf")
            .query_async(&mut redis)
            .await
        {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(%err, "listing peers from Redis failed");
                return Vec::new();
            }
        };
        if ids.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.peer(id)).collect();
        let values: Vec<Option<String>> =
            match redis::cmd("MGET").arg(&keys).query_async(&mut redis).await {
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

    /// The records of an index's live entries, sorted by peer id.
    async fn sorted(&self, index: String) -> Vec<PeerRecord> {
        let mut peers: Vec<PeerRecord> = self
            .stored_peers(index)
            .await
            .into_iter()
            .map(Into::into)
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        peers
    }

    /// Live entries of an index scored by expiry time: one `ZCOUNT`, whatever the size.
    async fn count_live(&self, index: String) -> usize {
        redis::cmd("ZCOUNT")
            .arg(index)
            .arg(unix_millis())
            .arg("+inf")
            .query_async::<usize>(&mut self.redis.clone())
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(%err, "counting in Redis failed");
                0
            })
    }

    async fn drop_offers(&self, peer_id: &str) {
        let dropped: Result<i64, _> = redis::Script::new(DROP_OFFERS_SCRIPT)
            .key(self.keys.peer_offers(peer_id))
            .key(self.keys.offer_index())
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(err) = dropped {
            tracing::warn!(%err, peer_id, "removing offers from Redis failed; they expire");
        }
    }

    /// Starts the grace of the peers of replicas whose liveness ran out (normally none).
    async fn orphan_peers_of(&self, dead: Vec<String>, grace: Duration) {
        let now = unix_millis();
        for owner in dead.into_iter().filter(|o| *o != self.replica_id) {
            let mut redis = self.redis.clone();
            let set = self.keys.replica_peers(&owner);
            let peers: Vec<String> = match redis::cmd("SMEMBERS")
                .arg(&set)
                .query_async(&mut redis)
                .await
            {
                Ok(peers) => peers,
                // Unknown is not dead: nobody loses its peers over a Redis hiccup.
                Err(_) => continue,
            };
            for peer_id in peers {
                let orphaned: Result<i64, _> = redis::Script::new(ORPHAN_SCRIPT)
                    .key(self.keys.peer(&peer_id))
                    .key(self.keys.detached())
                    .key(self.keys.peer_index())
                    .key(self.keys.lobby_index())
                    .arg(&owner)
                    .arg(now + grace.as_millis() as u64)
                    .arg((grace + DETACHED_MARGIN).as_millis() as u64)
                    .arg(&peer_id)
                    .arg(now)
                    .arg(self.keys.room_index_prefix())
                    .invoke_async(&mut redis)
                    .await;
                if matches!(orphaned, Ok(1)) {
                    tracing::warn!(
                        peer_id,
                        replica = owner,
                        "the peer's signaling replica died: it may resume elsewhere"
                    );
                }
            }
            let _ = redis::pipe()
                .cmd("ZREM")
                .arg(self.keys.replicas())
                .arg(&owner)
                .ignore()
                .cmd("DEL")
                .arg(&set)
                .ignore()
                .query_async::<()>(&mut redis)
                .await;
        }
    }
}

/// Every few seconds, in one transaction: this replica's liveness (key and index score), the
/// set of the peers it holds, and their records' TTL and index scores (the peer index and
/// their room's or the lobby's).
async fn refresh_local_peers(
    redis: ConnectionManager,
    keys: Keys,
    replica_id: String,
    local: Arc<Mutex<HashMap<String, String>>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(REFRESH_INTERVAL);
    let held = keys.replica_peers(&replica_id);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (peers, scopes) = {
            let local = local.lock();
            let mut scopes: HashMap<String, Vec<String>> = HashMap::new();
            for (peer_id, scope) in local.iter() {
                scopes
                    .entry(scope.clone())
                    .or_default()
                    .push(peer_id.clone());
            }
            (local.keys().cloned().collect::<Vec<_>>(), scopes)
        };
        let now = unix_millis();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(keys.replica(&replica_id))
            .arg(1)
            .arg("PX")
            .arg(REPLICA_TTL.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(keys.replicas())
            .arg(now + REPLICA_TTL.as_millis() as u64)
            .arg(&replica_id)
            .ignore()
            .cmd("DEL")
            .arg(&held)
            .ignore();
        if !peers.is_empty() {
            pipe.cmd("SADD").arg(&held).arg(&peers).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&held)
                .arg(PEER_TTL.as_millis() as u64)
                .ignore();
            let expires = now + PEER_TTL.as_millis() as u64;
            let index = pipe.cmd("ZADD").arg(keys.peer_index()).arg("XX");
            for peer_id in &peers {
                index.arg(expires).arg(peer_id);
            }
            index.ignore();
            for (scope, members) in &scopes {
                let index = pipe.cmd("ZADD").arg(scope).arg("XX");
                for peer_id in members {
                    index.arg(expires).arg(peer_id);
                }
                index.ignore();
            }
        }
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
    async fn register(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<(), RegistryError> {
        let value = serde_json::to_string(&StoredPeer::new(&record, &self.replica_id))
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let scope = self.keys.scope_index(record.room());
        let cap = if record.room().is_some() {
            max_room_participants
        } else {
            0
        };
        let created: i64 = redis::Script::new(REGISTER_SCRIPT)
            .key(self.keys.peer(&record.peer_id))
            .key(self.keys.peer_index())
            .key(self.keys.replica_peers(&self.replica_id))
            .key(&scope)
            .arg(value)
            .arg(PEER_TTL.as_millis() as u64)
            .arg(&record.peer_id)
            .arg(unix_millis())
            .arg(cap)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        match created {
            1 => {}
            -1 => return Err(room_full(&record, max_room_participants)),
            _ => return Err(RegistryError::AlreadyExists(record.peer_id)),
        }
        self.local.lock().insert(record.peer_id, scope);
        Ok(())
    }

    async fn unregister(&self, peer_id: &str) {
        self.local.lock().remove(peer_id);
        let removed: Result<i64, _> = redis::Script::new(UNREGISTER_SCRIPT)
            .key(self.keys.peer(peer_id))
            .key(self.keys.peer_index())
            .key(self.keys.detached())
            .key(self.keys.replica_peers(&self.replica_id))
            .key(self.keys.peer_offers(peer_id))
            .key(self.keys.offer_index())
            .key(self.keys.lobby_index())
            .arg(peer_id)
            .arg(self.keys.room_index_prefix())
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(err) = removed {
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
        self.sorted(self.keys.peer_index()).await
    }

    /// A room's (or the lobby's) index: the listing reads only its peers' records.
    async fn list_room(&self, room: Option<&str>) -> Vec<PeerRecord> {
        self.sorted(self.keys.scope_index(room)).await
    }

    async fn peer_count(&self) -> usize {
        self.count_live(self.keys.peer_index()).await
    }

    async fn put_offer(&self, offer: PendingOffer) {
        let key = self.keys.offer(&offer.from, &offer.to);
        let (from_offers, to_offers) = (
            self.keys.peer_offers(&offer.from),
            self.keys.peer_offers(&offer.to),
        );
        let stored = StoredOffer {
            offer_id: offer.offer_id,
            from: offer.from,
            to: offer.to,
            sdp: offer.sdp,
        };
        let Ok(value) = serde_json::to_string(&stored) else {
            return;
        };
        let ttl = PENDING_OFFER_TTL.as_millis() as u64;
        let stored: Result<i64, _> = redis::Script::new(PUT_OFFER_SCRIPT)
            .key(key)
            .key(self.keys.offer_index())
            .key(from_offers)
            .key(to_offers)
            .arg(value)
            .arg(ttl)
            .arg(unix_millis())
            .arg(ttl)
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(err) = stored {
            tracing::warn!(%err, "storing a pending offer in Redis failed");
        }
    }

    async fn take_offer(&self, from: &str, to: &str) -> Option<PendingOffer> {
        let key = self.keys.offer(from, to);
        let (value,): (Option<String>,) = redis::pipe()
            .atomic()
            .cmd("GETDEL")
            .arg(&key)
            .cmd("ZREM")
            .arg(self.keys.offer_index())
            .arg(&key)
            .ignore()
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
        self.count_live(self.keys.offer_index()).await
    }

    async fn detach(
        &self,
        peer_id: &str,
        connection_id: &str,
        cursor: Option<String>,
        grace: Duration,
    ) -> bool {
        self.local.lock().remove(peer_id);
        let now = unix_millis();
        let detached: Result<i64, _> = redis::Script::new(DETACH_SCRIPT)
            .key(self.keys.peer(peer_id))
            .key(self.keys.detached())
            .key(self.keys.peer_index())
            .key(self.keys.lobby_index())
            .arg(connection_id)
            .arg(now + grace.as_millis() as u64)
            .arg(cursor.unwrap_or_default())
            .arg((grace + DETACHED_MARGIN).as_millis() as u64)
            .arg(peer_id)
            .arg(now)
            .arg(self.keys.room_index_prefix())
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
            .key(self.keys.detached())
            .key(self.keys.peer_index())
            .key(self.keys.replica_peers(&self.replica_id))
            .key(self.keys.lobby_index())
            .arg(token)
            .arg(&self.replica_id)
            .arg(connection_id)
            .arg(PEER_TTL.as_millis() as u64)
            .arg(peer_id)
            .arg(unix_millis())
            .arg(self.keys.room_index_prefix())
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        match reply.as_deref() {
            None => Ok(None),
            Some("taken") => Err(RegistryError::AlreadyExists(peer_id.to_owned())),
            Some(json) => {
                let stored: StoredPeer = serde_json::from_str(json)
                    .map_err(|e| RegistryError::Unavailable(format!("stored peer: {e}")))?;
                let record: PeerRecord = stored.into();
                let scope = self.keys.scope_index(record.room());
                self.local.lock().insert(peer_id.to_owned(), scope);
                Ok(Some(record))
            }
        }
    }

    async fn take_over(
        &self,
        record: PeerRecord,
        max_room_participants: usize,
    ) -> Result<Option<PeerRecord>, RegistryError> {
        let peer_id = record.peer_id.clone();
        let value = serde_json::to_string(&StoredPeer::new(&record, &self.replica_id))
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let scope = self.keys.scope_index(record.room());
        let cap = if record.room().is_some() {
            max_room_participants
        } else {
            0
        };
        let reply: Option<String> = redis::Script::new(TAKE_OVER_SCRIPT)
            .key(self.keys.peer(&peer_id))
            .key(self.keys.detached())
            .key(self.keys.peer_index())
            .key(self.keys.replica_peers(&self.replica_id))
            .key(self.keys.lobby_index())
            .key(&scope)
            .arg(value)
            .arg(PEER_TTL.as_millis() as u64)
            .arg(&peer_id)
            .arg(unix_millis())
            .arg(self.keys.room_index_prefix())
            .arg(cap)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let old: StoredPeer = match reply.as_deref() {
            None => return Ok(None),
            Some("taken") => return Err(RegistryError::AlreadyExists(peer_id)),
            Some("full") => return Err(room_full(&record, max_room_participants)),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| RegistryError::Unavailable(format!("stored peer: {e}")))?,
        };
        self.local.lock().insert(peer_id.clone(), scope);
        // The old registration's offers. Not atomic with the swap: an offer made in between
        // goes too, as the notification carrying it does (the old notifications are discarded).
        self.drop_offers(&peer_id).await;
        Ok(Some(old.into()))
    }

    /// One round trip reads the expired graces and the dead replicas (normally both empty)
    /// and trims the indexes; then one script per expired peer. Nothing scans the key space.
    async fn sweep(&self, grace: Duration) -> Vec<PeerRecord> {
        let now = unix_millis();
        let mut redis = self.redis.clone();
        let read: Result<(Vec<String>, Vec<String>), _> = redis::pipe()
            .cmd("ZRANGEBYSCORE")
            .arg(self.keys.detached())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .cmd("ZRANGEBYSCORE")
            .arg(self.keys.replicas())
            .arg("-inf")
            .arg(now)
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.peer_index())
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.offer_index())
            .arg("-inf")
            .arg(now)
            .ignore()
            .query_async(&mut redis)
            .await;
        let (expired, dead) = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(%err, "sweeping detached peers in Redis failed");
                return Vec::new();
            }
        };
        let mut ended = Vec::new();
        for peer_id in expired {
            let claimed: Result<Option<String>, _> = redis::Script::new(CLAIM_EXPIRED_SCRIPT)
                .key(self.keys.peer(&peer_id))
                .key(self.keys.detached())
                .key(self.keys.peer_index())
                .key(self.keys.lobby_index())
                .arg(now)
                .arg(&peer_id)
                .arg(self.keys.room_index_prefix())
                .invoke_async(&mut redis)
                .await;
            if let Ok(Some(json)) = claimed {
                if let Ok(stored) = serde_json::from_str::<StoredPeer>(&json) {
                    ended.push(stored.into());
                }
            }
        }
        if !dead.is_empty() {
            self.orphan_peers_of(dead, grace).await;
        }
        ended
    }
}
