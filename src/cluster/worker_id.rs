//! One worker id, one process. Every worker process draws an instance nonce at start and
//! writes it into its heartbeat; a heartbeat write never overwrites another instance's record.
//! At start a worker claims its id:
//!
//! - no record (or one from a worker too old to carry a nonce): the id is free;
//! - a record with the same advertised API address: it is this address's previous process (a
//!   restarted container; this process now holds the port, so that one is gone): take over;
//! - a record from another address: watch it for [`LIVENESS_WAIT`]. Renewed meanwhile, another
//!   live process holds the id: refuse to start. Not renewed, its process is dead (killed, or
//!   restarted elsewhere): take over.
//!
//! Taking over ends the sessions the previous process left in Redis (their clients are told),
//! so placement never mixes two processes' sessions under one id.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::keys::Keys;
use super::workers::{self, WorkerStatus, HEARTBEAT_INTERVAL};
use crate::error::Error;
use crate::signaling::{deliver_session_event, NotificationBus, SessionEvent};

/// How long a record from another instance is watched for a renewal: one heartbeat interval
/// and a margin for a slow beat.
pub const LIVENESS_WAIT: Duration =
    Duration::from_millis(HEARTBEAT_INTERVAL.as_millis() as u64 + 1_500);

/// Removes and returns the peers whose `session:<peer>` still names the worker (sessions a
/// previous process of this id left behind).
const ORPHANS_SCRIPT: &str = r"
local peers = redis.call('SMEMBERS', KEYS[1])
local orphans = {}
for _, peer in ipairs(peers) do
  local key = ARGV[2] .. peer
  local held = redis.call('GET', key)
  if held == ARGV[1] or (held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. '/') then
    redis.call('DEL', key)
    table.insert(orphans, peer)
  end
end
redis.call('DEL', KEYS[1])
return orphans
";

/// A fresh nonce for this process.
pub fn new_instance() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Claims `status.id` for `status.instance`, writing `status` (not ready: nothing is placed
/// before the worker serves) as its first heartbeat.
///
/// # Errors
/// `Unsupported` with the holder's address when another live process has the id; `Cluster`
/// when Redis fails.
pub async fn claim(
    redis: &mut ConnectionManager,
    keys: &Keys,
    status: &WorkerStatus,
) -> Result<(), Error> {
    let failed = |err: redis::RedisError| {
        Error::Unsupported(format!(
            "claiming worker id {:?} in Redis: {err}",
            status.id
        ))
    };
    let mut replaces: Option<String> = None;
    for _ in 0..3 {
        let Some(holder) = workers::write_heartbeat(redis, keys, status, replaces.as_deref())
            .await
            .map_err(failed)?
        else {
            if let Some(previous) = &replaces {
                tracing::warn!(
                    worker_id = status.id,
                    previous,
                    "took the worker id over from its previous process"
                );
            }
            return Ok(());
        };
        if holder.address == status.address {
            tracing::info!(
                worker_id = status.id,
                address = status.address,
                "restarted at the same address: taking the worker id over"
            );
            replaces = Some(holder.instance);
            continue;
        }
        let deadline = tokio::time::Instant::now() + LIVENESS_WAIT;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = workers::read_heartbeat(redis, keys, &status.id)
                .await
                .map_err(failed)?;
            match now {
                None => {
                    replaces = None;
                    break;
                }
                Some(now) if now.instance != holder.instance => {
                    return Err(in_use(&status.id, &now));
                }
                Some(now) if now.updated_at_ms != holder.updated_at_ms => {
                    return Err(in_use(&status.id, &now));
                }
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    replaces = Some(holder.instance.clone());
                    break;
                }
                Some(_) => {}
            }
        }
    }
    Err(Error::Unsupported(format!(
        "worker id {:?}: could not claim it in Redis (other processes keep taking it)",
        status.id
    )))
}

fn in_use(id: &str, holder: &WorkerStatus) -> Error {
    Error::Unsupported(format!(
        "worker id {id:?} is in use by another live worker (API at {}, heartbeating to this \
         Redis); give each worker its own --worker-id",
        holder.address
    ))
}

/// Ends the sessions an earlier process of this worker id left in Redis: their records go and
/// their clients learn the server session ended. Returns how many.
pub async fn end_orphans(
    redis: &mut ConnectionManager,
    keys: &Keys,
    bus: &Arc<dyn NotificationBus>,
    worker_id: &str,
) -> usize {
    let orphans: Vec<String> = match redis::Script::new(ORPHANS_SCRIPT)
        .key(keys.worker_sessions(worker_id))
        .arg(worker_id)
        .arg(keys.session(""))
        .invoke_async(redis)
        .await
    {
        Ok(orphans) => orphans,
        Err(err) => {
            super::redis_error("reap", &err);
            return 0;
        }
    };
    if !orphans.is_empty() {
        tracing::warn!(
            worker_id,
            sessions = orphans.len(),
            "sessions of this worker id's previous process end"
        );
    }
    let count = orphans.len();
    for peer_id in orphans {
        deliver_session_event(
            bus.as_ref(),
            SessionEvent::Closed {
                peer_id,
                reason: format!("media worker {worker_id} restarted"),
            },
        )
        .await;
    }
    count
}
