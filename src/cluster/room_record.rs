//! Where a room lives (DESIGN.md §3b, §5): `room:<name>` in Redis, a hash of
//! - `workers`: a JSON array of worker ids (one today: the worker the room's first offer was
//!   placed on; rooms that span workers add theirs),
//! - `tracks`: a JSON array of the room's published tracks (empty until rooms span workers),
//! - `version`: a fresh number from `room-version` at every change (every join), unique
//!   across records, so a compare-and-delete never takes a later record of the same room.
//!
//! Frontends create and join records ([`join`]): one script, so two frontends placing the same
//! room at once agree on its worker. The room's worker deletes the record when its last
//! participant leaves ([`forget`], compared on the version: a participant on its way keeps
//! it), keeps its records alive while it hosts them ([`refresh`]), and frontends clear the
//! records of a dead worker ([`reap`]) so the room's participants rejoin elsewhere.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::keys::Keys;

/// A record expires unless its worker refreshes it (every heartbeat) or a participant joins:
/// a record whose worker forgot it (a join that never arrived) does not outlive this.
pub const ROOM_TTL: Duration = Duration::from_secs(30);

/// A room's record as a frontend found or made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The workers the room lives on (the first is where new participants go).
    pub workers: Vec<String>,
    /// The record's version after this join.
    pub version: u64,
    /// Whether this join created the record (placed the room).
    pub created: bool,
}

impl RoomRecord {
    /// Where a new participant's session goes.
    pub fn worker(&self) -> Option<&str> {
        self.workers.first().map(String::as_str)
    }
}

/// Joins a room: a new version for an existing record (returned as it is), else, when
/// ARGV[1] names a worker, a new record placing the room there.
/// KEYS: the record, the version counter, the candidate's room set. ARGV: candidate worker
/// ('' joins only), TTL ms, room name.
const JOIN_SCRIPT: &str = r"
local workers = redis.call('HGET', KEYS[1], 'workers')
if not workers and ARGV[1] == '' then return false end
local version = redis.call('INCR', KEYS[2])
local created = 0
if workers then
  redis.call('HSET', KEYS[1], 'version', version)
else
  workers = cjson.encode({ARGV[1]})
  redis.call('HSET', KEYS[1], 'workers', workers, 'tracks', '[]', 'version', version)
  redis.call('SADD', KEYS[3], ARGV[3])
  created = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {workers, version, created}
";

/// Deletes the record only while its version is ARGV[1]; then drops the room (ARGV[2]) from
/// the worker's set.
const FORGET_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
";

/// Deletes the records of the rooms placed on a dead worker (ARGV[1]) that still name it;
/// returns those rooms. ARGV[2]: the record key prefix.
const REAP_SCRIPT: &str = r"
local rooms = redis.call('SMEMBERS', KEYS[1])
local reaped = {}
for _, room in ipairs(rooms) do
  local key = ARGV[2] .. room
  local workers = redis.call('HGET', key, 'workers')
  if workers then
    local ok, list = pcall(cjson.decode, workers)
    if ok and type(list) == 'table' then
      for _, worker in ipairs(list) do
        if worker == ARGV[1] then
          redis.call('DEL', key)
          table.insert(reaped, room)
          break
        end
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

/// Joins `room`: its record with a new version, or, when there is none and `place_on` names
/// a worker, a new record placing the room there. `None`: no record (and none made).
///
/// # Errors
/// When Redis fails.
pub async fn join(
    redis: &mut ConnectionManager,
    keys: &Keys,
    room: &str,
    place_on: Option<&str>,
) -> redis::RedisResult<Option<RoomRecord>> {
    let candidate = place_on.unwrap_or_default();
    let reply: Option<(String, u64, i64)> = redis::Script::new(JOIN_SCRIPT)
        .key(keys.room(room))
        .key(keys.room_version())
        .key(keys.worker_rooms(candidate))
        .arg(candidate)
        .arg(ROOM_TTL.as_millis() as u64)
        .arg(room)
        .invoke_async(redis)
        .await?;
    Ok(reply.map(|(workers, version, created)| RoomRecord {
        workers: parse_workers(&workers),
        version,
        created: created == 1,
    }))
}

/// Deletes `room`'s record if its version is still `version` (nothing joined since); returns
/// whether it did.
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
        .invoke_async(redis)
        .await?;
    Ok(deleted == 1)
}

/// Clears the records of the rooms that live on the dead `worker_id`; returns those rooms.
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
