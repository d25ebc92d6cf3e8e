//! What the cluster knows about its media workers (DESIGN.md §5, §6): each worker's heartbeat
//! record, and the placement table the controller publishes from them.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::keys::Keys;

/// How often a worker writes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A worker without a heartbeat this long is dead: its record expires and nothing is placed on it.
pub const WORKER_DEAD_AFTER: Duration = Duration::from_secs(5);
/// A placement table older than this is stale (its controller is gone): frontends fall back to
/// the heartbeats.
pub const TABLE_STALE_AFTER: Duration = Duration::from_secs(5);

/// One worker's heartbeat: who it is, where to reach it, how loaded it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    /// A nonce of the process that writes this heartbeat (new at every start): two processes
    /// never share one id's record (see [`claim`](super::worker_id)). Empty from workers
    /// older than it.
    #[serde(default)]
    pub instance: String,
    /// The internal worker API (`host:port`).
    pub address: String,
    /// The shared ICE UDP port's advertised address, when it has one.
    #[serde(default)]
    pub udp_address: Option<String>,
    /// The relay socket's address (`--relay-port`), when it has one (#16).
    #[serde(default)]
    pub relay_address: Option<String>,
    pub capacity: u32,
    pub active_sessions: u32,
    /// Process CPU over the machine's cores in the last interval (0.0..=1.0).
    #[serde(default)]
    pub cpu_load: f64,
    pub draining: bool,
    /// Rooms with participants on this worker (it is the autoscaler's last choice to drain).
    #[serde(default)]
    pub rooms: u32,
    /// Room participants among `active_sessions` (a room's sessions all come here, whatever
    /// the placement table says).
    #[serde(default)]
    pub room_participants: u32,
    /// Set by the controller in Kubernetes discovery from the Pod's Ready condition; workers
    /// write `true`.
    #[serde(default = "ready_by_default")]
    pub ready: bool,
    pub updated_at_ms: u64,
}

fn ready_by_default() -> bool {
    true
}

impl WorkerStatus {
    /// Sessions over capacity (a full or capacity-less worker is 1.0).
    pub fn load(&self) -> f64 {
        if self.capacity == 0 {
            return 1.0;
        }
        f64::from(self.active_sessions) / f64::from(self.capacity)
    }

    /// Whether the heartbeat is recent enough to trust at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_at_ms) <= WORKER_DEAD_AFTER.as_millis() as u64
    }

    /// Whether new sessions may go to this worker at `now_ms`.
    pub fn takes_sessions(&self, now_ms: u64) -> bool {
        self.is_fresh(now_ms)
            && self.ready
            && !self.draining
            && self.active_sessions < self.capacity
    }
}

/// The controller's view of where sessions may go: ready, not draining, fresh, sorted by load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementTable {
    /// The controller that wrote it.
    pub leader: String,
    /// Its leadership term (fencing: a higher term always wins).
    pub term: u64,
    pub updated_at_ms: u64,
    pub workers: Vec<WorkerStatus>,
}

impl PlacementTable {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_at_ms) <= TABLE_STALE_AFTER.as_millis() as u64
    }
}

/// Milliseconds since the Unix epoch (heartbeats compare wall clocks across processes): the
/// signaling registry's clock, under the name the cluster's callers use.
pub use crate::signaling::unix_millis as now_ms;

/// Writes the heartbeat unless the record belongs to another instance (one with a nonce that
/// is neither ARGV[2], the writer's, nor ARGV[4], a dead predecessor being taken over).
/// KEYS: the record, the known-workers set. ARGV: JSON, instance, TTL ms, replaces, id.
const WRITE_HEARTBEAT_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and type(record.instance) == 'string'
     and record.instance ~= '' and record.instance ~= ARGV[2] and record.instance ~= ARGV[4] then
    return current
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[5])
return false
";

/// Deletes the heartbeat only while it is still this instance's.
const REMOVE_HEARTBEAT_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and record.instance ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Writes a worker's heartbeat; it expires unless renewed within [`WORKER_DEAD_AFTER`].
/// Returns `Some(record)` instead when another instance holds the id (nothing written);
/// `replaces` names a dead instance whose record may be overwritten.
///
/// # Errors
/// When Redis fails.
pub async fn write_heartbeat(
    redis: &mut ConnectionManager,
    keys: &Keys,
    status: &WorkerStatus,
    replaces: Option<&str>,
) -> redis::RedisResult<Option<WorkerStatus>> {
    let json = serde_json::to_string(status).unwrap_or_default();
    let holder: Option<String> = redis::Script::new(WRITE_HEARTBEAT_SCRIPT)
        .key(keys.worker(&status.id))
        .key(keys.known_workers())
        .arg(json)
        .arg(&status.instance)
        .arg(WORKER_DEAD_AFTER.as_millis() as u64)
        .arg(replaces.unwrap_or(status.instance.as_str()))
        .arg(&status.id)
        .invoke_async(redis)
        .await?;
    Ok(holder.and_then(|json| serde_json::from_str(&json).ok()))
}

/// The heartbeat record of `worker_id`, if one is live.
///
/// # Errors
/// When Redis fails.
pub async fn read_heartbeat(
    redis: &mut ConnectionManager,
    keys: &Keys,
    worker_id: &str,
) -> redis::RedisResult<Option<WorkerStatus>> {
    let json: Option<String> = redis::cmd("GET")
        .arg(keys.worker(worker_id))
        .query_async(redis)
        .await?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

/// Removes a worker's heartbeat at once (a clean exit: nothing more is placed on it), unless
/// another instance has taken the id over meanwhile.
///
/// # Errors
/// When Redis fails.
pub async fn remove_heartbeat(
    redis: &mut ConnectionManager,
    keys: &Keys,
    worker_id: &str,
    instance: &str,
) -> redis::RedisResult<()> {
    redis::Script::new(REMOVE_HEARTBEAT_SCRIPT)
        .key(keys.worker(worker_id))
        .arg(instance)
        .invoke_async::<i64>(redis)
        .await
        .map(drop)
}

/// Every live heartbeat, and the ids of known workers whose heartbeat has expired (dead).
///
/// # Errors
/// When Redis fails.
pub async fn read_heartbeats(
    redis: &mut ConnectionManager,
    keys: &Keys,
) -> redis::RedisResult<(Vec<WorkerStatus>, Vec<String>)> {
    let ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.known_workers())
        .query_async(redis)
        .await?;
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let records: Vec<Option<String>> = redis::cmd("MGET")
        .arg(ids.iter().map(|id| keys.worker(id)).collect::<Vec<_>>())
        .query_async(redis)
        .await?;
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for (id, record) in ids.into_iter().zip(records) {
        match record.map(|json| serde_json::from_str::<WorkerStatus>(&json)) {
            Some(Ok(status)) => live.push(status),
            Some(Err(err)) => tracing::warn!(worker_id = id, %err, "unreadable worker heartbeat"),
            None => dead.push(id),
        }
    }
    Ok((live, dead))
}

/// The placement table, if a controller has written one.
///
/// # Errors
/// When Redis fails.
pub async fn read_table(
    redis: &mut ConnectionManager,
    keys: &Keys,
) -> redis::RedisResult<Option<PlacementTable>> {
    let json: Option<String> = redis::cmd("GET")
        .arg(keys.placement())
        .query_async(redis)
        .await?;
    Ok(json.and_then(|json| match serde_json::from_str(&json) {
        Ok(table) => Some(table),
        Err(err) => {
            tracing::warn!(%err, "unreadable placement table");
            None
        }
    }))
}

/// A fresh, ready worker record for tests.
#[cfg(test)]
pub(crate) fn test_worker(id: &str, active: u32, capacity: u32) -> WorkerStatus {
    WorkerStatus {
        id: id.into(),
        instance: String::new(),
        address: format!("{id}:50052"),
        udp_address: None,
        relay_address: None,
        capacity,
        active_sessions: active,
        cpu_load: 0.0,
        draining: false,
        rooms: 0,
        room_participants: 0,
        ready: true,
        updated_at_ms: 1_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_takes_sessions_only_when_fresh_ready_undrained_and_not_full() {
        let now = 1_000_000 + 1_000;
        let w = test_worker("a", 3, 10);
        assert!(w.takes_sessions(now));
        assert!(!w.takes_sessions(now + WORKER_DEAD_AFTER.as_millis() as u64));
        assert!(!WorkerStatus {
            draining: true,
            ..w.clone()
        }
        .takes_sessions(now));
        assert!(!WorkerStatus {
            ready: false,
            ..w.clone()
        }
        .takes_sessions(now));
        assert!(!WorkerStatus {
            active_sessions: 10,
            ..w.clone()
        }
        .takes_sessions(now));
        assert!((w.load() - 0.3).abs() < 1e-9);
        assert!((WorkerStatus { capacity: 0, ..w }.load() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn heartbeats_without_ready_field_read_as_ready() {
        let json = r#"{"id":"w","address":"w:1","capacity":2,"active_sessions":0,"draining":false,"updated_at_ms":5}"#;
        let status: WorkerStatus = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert!(status.ready);
    }
}
