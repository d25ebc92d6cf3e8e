//! Where a room lives (DESIGN.md §3b, §5): `room:<name>` in Redis, a hash of
//! - `workers`: a JSON array of the ids of the workers that host the room, in the order they
//!   joined it: the first is the worker the room's first offer was placed on; a worker that
//!   refused a newcomer (full, or draining with the room's participants) makes the room spill
//!   onto another one, appended here (#16),
//! - `at:<worker>`: the version of the latest join sent to that worker,
//! - `tracks:<worker>`: a JSON array of the tracks published on that worker
//!   ([`RelayedTrack`]: publisher, track id, kind, simulcast rids, the worker's producer id,
//!   codec, header extensions; one field per worker, so two workers never read-modify-write
//!   one field; `[]` when the worker joins the room), written by that worker ([`set_tracks`])
//!   whenever its participants publish or unpublish, each change also published on the
//!   room's channel (`room-tracks:<room>`) so the other hosting workers re-read the record at
//!   once ([`read`]),
//! - `version`: a fresh number from `room-version` at every change (every join), unique
//!   across records.
//!
//! Frontends create, join and spill records ([`join`]): one script, so two frontends placing
//! the same room at once agree on its first worker. A hosting worker leaves the record when
//! its last participant of the room leaves ([`forget`], compared on `at:<worker>`: a
//! participant on its way there keeps it; the record goes with its last worker), keeps its
//! records alive while it hosts them ([`refresh`]), and frontends take a dead worker out of
//! the records ([`reap`]) so the room's participants rejoin on the others or elsewhere.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::keys::Keys;
use crate::room_relay::{parse_tracks, RelayedTrack};

/// A record expires unless one of its workers refreshes it (every heartbeat) or a participant
/// joins: a record whose workers forgot it (a join that never arrived) does not outlive this.
pub const ROOM_TTL: Duration = Duration::from_secs(30);

/// A room's record as a frontend found or made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The workers the room lives on (the first is where new participants go first).
    pub workers: Vec<String>,
    /// The record's version after this join.
    pub version: u64,
    /// Whether this join created the record (placed the room).
    pub created: bool,
    /// Whether this join added the candidate to `workers` (created the record, or spilled
    /// the room onto it): that worker has none of the room's participants yet.
    pub added: bool,
}

impl RoomRecord {
    /// Where a new participant's session goes first.
    pub fn worker(&self) -> Option<&str> {
        self.workers.first().map(String::as_str)
    }
}

/// How a frontend joins a room's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join<'a> {
    /// Only an existing record; the newcomer goes to its first worker.
    Existing,
    /// The existing record, else a new one placing the room on this worker.
    Place(&'a str),
    /// The newcomer goes to this worker: it joins the room's workers (the record is made if
    /// it went meanwhile).
    Spill(&'a str),
}

/// Joins a room: a new version, recorded as `at:<worker>` for the worker the newcomer goes to.
/// KEYS: the record, the version counter, the candidate's room set. ARGV: candidate worker
/// ('' joins only), TTL ms, room name, mode ('place' or 'spill').
/// Returns the workers (JSON), the version, whether it created the record, whether it added
/// the candidate to the workers.
const JOIN_SCRIPT: &str = r"
local encoded = redis.call('HGET', KEYS[1], 'workers')
if not encoded and ARGV[1] == '' then return false end
local version = redis.call('INCR', KEYS[2])
local created, added = 0, 0
local workers = {}
if encoded then
  local ok, list = pcall(cjson.decode, encoded)
  if ok and type(list) == 'table' then workers = list end
end
local target = workers[1]
if not encoded then
  workers = {ARGV[1]}
  target = ARGV[1]
  created, added = 1, 1
elseif ARGV[4] == 'spill' then
  target = ARGV[1]
  local present = false
  for _, worker in ipairs(workers) do
    if worker == target then present = true end
  end
  if not present then
    table.insert(workers, target)
    added = 1
  end
end
if added == 1 then
  encoded = cjson.encode(workers)
  redis.call('HSET', KEYS[1], 'workers', encoded, 'tracks:' .. target, '[]')
  redis.call('SADD', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[1], 'version', version)
if target then redis.call('HSET', KEYS[1], 'at:' .. target, version) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {encoded, version, created, added}
";

/// Takes worker ARGV[3] out of the record while `at:<worker>` is ARGV[1] (no join was sent
/// there since; a record without the field compares `version`), and the room (ARGV[2]) out of
/// the worker's set. The record goes with its last worker. A record that does not name the
/// worker is left as it is (unless it names none). Returns 1 when it left.
const FORGET_SCRIPT: &str = r"
local encoded = redis.call('HGET', KEYS[1], 'workers')
if not encoded then return 0 end
local ok, list = pcall(cjson.decode, encoded)
if not ok or type(list) ~= 'table' then list = {} end
local left, named = {}, false
for _, worker in ipairs(list) do
  if worker == ARGV[3] then named = true else table.insert(left, worker) end
end
if #list > 0 and not named then return 0 end
local at = redis.call('HGET', KEYS[1], 'at:' .. ARGV[3])
if not at then at = redis.call('HGET', KEYS[1], 'version') end
if at ~= ARGV[1] then return 0 end
if #left == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'workers', cjson.encode(left))
  redis.call('HDEL', KEYS[1], 'at:' .. ARGV[3], 'tracks:' .. ARGV[3])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// Takes a dead worker (ARGV[1]) out of the records of the rooms it hosted; a record it was
/// the last worker of goes. Returns those rooms. ARGV[2]: the record key prefix.
const REAP_SCRIPT: &str = r"
local rooms = redis.call('SMEMBERS', KEYS[1])
local reaped = {}
for _, room in ipairs(rooms) do
  local key = ARGV[2] .. room
  local workers = redis.call('HGET', key, 'workers')
  if workers then
    local ok, list = pcall(cjson.decode, workers)
    if ok and type(list) == 'table' then
      local left, named = {}, false
      for _, worker in ipairs(list) do
        if worker == ARGV[1] then named = true else table.insert(left, worker) end
      end
      if named then
        if #left == 0 then
          redis.call('DEL', key)
        else
          redis.call('HSET', key, 'workers', cjson.encode(left))
          redis.call('HDEL', key, 'at:' .. ARGV[1], 'tracks:' .. ARGV[1])
        end
        table.insert(reaped, room)
      end
    end
  end
end
redis.call('DEL', KEYS[1])
return reaped
";

/// Renews the records of the rooms a worker hosts (ARGV[3..]) and drops the rooms whose
/// records are gone from its set. ARGV[1]: the record key prefix, ARGV[2]: TTL ms.
const REFRESH_SCRIPT: &str = r"
for i = 3, #ARGV do
  redis.call('PEXPIRE', ARGV[1] .. ARGV[i], ARGV[2])
end
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. room) == 0 then
    redis.call('SREM', KEYS[1], room)
  end
end
return 1
";

/// Sets `tracks:<worker>` (ARGV[1], ARGV[2]) while the record lists the worker, and, when
/// that changed the field, publishes the worker's id on the room's channel (ARGV[3]).
/// Returns 1 when the field changed, 0 when it already held that, -1 when the record does
/// not list the worker.
const SET_TRACKS_SCRIPT: &str = r"
local encoded = redis.call('HGET', KEYS[1], 'workers')
if not encoded then return -1 end
local ok, list = pcall(cjson.decode, encoded)
if not ok or type(list) ~= 'table' then return -1 end
for _, worker in ipairs(list) do
  if worker == ARGV[1] then
    local field = 'tracks:' .. ARGV[1]
    if redis.call('HGET', KEYS[1], field) == ARGV[2] then return 0 end
    redis.call('HSET', KEYS[1], field, ARGV[2])
    redis.call('PUBLISH', ARGV[3], ARGV[1])
    return 1
  end
end
return -1
";

/// What [`set_tracks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracksWritten {
    /// The field changed; the room's channel was told.
    Changed,
    /// The field already held these tracks.
    Unchanged,
    /// The record does not list the worker (gone, or the worker left it).
    NotHosting,
}

/// Writes the tracks published on `worker_id` to `room`'s record (only while the record
/// lists the worker), and tells the room's channel when that changed them.
///
/// # Errors
/// When Redis fails.
pub async fn set_tracks(
    redis: &mut ConnectionManager,
    keys: &Keys,
    room: &str,
    worker_id: &str,
    tracks: &[RelayedTrack],
) -> redis::RedisResult<TracksWritten> {
    let json = serde_json::to_string(tracks).unwrap_or_else(|_| "[]".into());
    let written: i64 = redis::Script::new(SET_TRACKS_SCRIPT)
        .key(keys.room(room))
        .arg(worker_id)
        .arg(json)
        .arg(keys.room_tracks_channel(room))
        .invoke_async(redis)
        .await?;
    Ok(match written {
        1 => TracksWritten::Changed,
        0 => TracksWritten::Unchanged,
        _ => TracksWritten::NotHosting,
    })
}

/// A room's hosting workers and the tracks each lists, in the record's order.
///
/// # Errors
/// When Redis fails.
pub async fn read(
    redis: &mut ConnectionManager,
    keys: &Keys,
    room: &str,
) -> redis::RedisResult<Vec<(String, Vec<RelayedTrack>)>> {
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.room(room))
        .query_async(redis)
        .await?;
    let workers = fields
        .get("workers")
        .map(|json| parse_workers(json))
        .unwrap_or_default();
    Ok(workers
        .into_iter()
        .map(|worker| {
            let tracks = fields
                .get(&format!("tracks:{worker}"))
                .map(|json| parse_tracks(json))
                .unwrap_or_default();
            (worker, tracks)
        })
        .collect())
}

/// Joins `room` as `how` says: its record with a new version (and the candidate among its
/// workers when spilling), or a new record placing the room. `None`: no record (and none
/// made).
///
/// # Errors
/// When Redis fails.
pub async fn join(
    redis: &mut ConnectionManager,
    keys: &Keys,
    room: &str,
    how: Join<'_>,
) -> redis::RedisResult<Option<RoomRecord>> {
    let (candidate, mode) = match how {
        Join::Existing => ("", ""),
        Join::Place(worker) => (worker, "place"),
        Join::Spill(worker) => (worker, "spill"),
    };
    let reply: Option<(String, u64, i64, i64)> = redis::Script::new(JOIN_SCRIPT)
        .key(keys.room(room))
        .key(keys.room_version())
        .key(keys.worker_rooms(candidate))
        .arg(candidate)
        .arg(ROOM_TTL.as_millis() as u64)
        .arg(room)
        .arg(mode)
        .invoke_async(redis)
        .await?;
    Ok(reply.map(|(workers, version, created, added)| RoomRecord {
        workers: parse_workers(&workers),
        version,
        created: created == 1,
        added: added == 1,
    }))
}

/// Takes `worker_id` out of `room`'s workers if the latest join sent there had `version`
/// (none came since), the record with it when it was the last; returns whether it did.
///
/// # Errors
/// When Redis fails.
pub async fn forget(
    redis: &mut ConnectionManager,
    keys: &Keys,
    room: &str,
    worker_id: &str,
    version: u64,
) -> redis::RedisResult<bool> {
    let deleted: i64 = redis::Script::new(FORGET_SCRIPT)
        .key(keys.room(room))
        .key(keys.worker_rooms(worker_id))
        .arg(version)
        .arg(room)
        .arg(worker_id)
        .invoke_async(redis)
        .await?;
    Ok(deleted == 1)
}

/// Takes the dead `worker_id` out of the records of the rooms it hosted (a record it was the
/// last worker of goes); returns those rooms.
///
/// # Errors
/// When Redis fails.
pub async fn reap(
    redis: &mut ConnectionManager,
    keys: &Keys,
    worker_id: &str,
) -> redis::RedisResult<Vec<String>> {
    redis::Script::new(REAP_SCRIPT)
        .key(keys.worker_rooms(worker_id))
        .arg(worker_id)
        .arg(keys.room(""))
        .invoke_async(redis)
        .await
}

/// Keeps the records of the rooms `worker_id` hosts alive for another [`ROOM_TTL`].
///
/// # Errors
/// When Redis fails.
pub async fn refresh(
    redis: &mut ConnectionManager,
    keys: &Keys,
    worker_id: &str,
    rooms: &[String],
) -> redis::RedisResult<()> {
    let script = redis::Script::new(REFRESH_SCRIPT);
    let mut invocation = script.key(keys.worker_rooms(worker_id));
    invocation
        .arg(keys.room(""))
        .arg(ROOM_TTL.as_millis() as u64);
    for room in rooms {
        invocation.arg(room);
    }
    invocation.invoke_async::<i64>(redis).await.map(drop)
}

/// The `workers` field: a JSON array of ids (anything else reads as no worker, and the room
/// is placed again).
fn parse_workers(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_field_is_a_json_array_and_garbage_names_no_worker() {
        let record = RoomRecord {
            workers: parse_workers(r#"["worker-a","worker-b"]"#),
            version: 3,
            created: false,
            added: false,
        };
        assert_eq!(record.worker(), Some("worker-a"));
        assert!(parse_workers("worker-a").is_empty());
        assert!(parse_workers("{}").is_empty());
        let empty = RoomRecord {
            workers: parse_workers("[]"),
            ..record
        };
        assert_eq!(empty.worker(), None);
    }
}
