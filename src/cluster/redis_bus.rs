//! Notification delivery through Redis streams: one stream per peer, read by whichever
//! replica holds the peer's signaling stream. Streams keep what was published until it is
//! read, so a notification sent while the reader catches up is not lost (pub/sub would be).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prost::Message;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::StreamReadReply;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use crate::proto::signaling::SignalingNotification;
use crate::signaling::{
    BusError, Delivery, Mailbox, NotificationBus, PeerRegistry, MAILBOX_CAPACITY,
};

/// Longest a reader blocks in XREAD before it picks up new subscriptions.
const READ_BLOCK: Duration = Duration::from_millis(100);
/// Entries a peer's stream keeps at most (older ones are trimmed).
const STREAM_MAX_LEN: usize = MAILBOX_CAPACITY;
/// An unread stream disappears this long after its last write.
const STREAM_TTL: Duration = Duration::from_secs(120);
/// Field holding the encoded notification.
const FIELD: &str = "n";

/// Appends a notification to the stream of every live peer of the index but one. The stream
/// keys are built from the prefix (the peers are only known inside the script): a single
/// Redis, not Redis Cluster, as everywhere else.
/// KEYS[1] the index of the audience: the lobby's or one room's; ARGV: now ms, except, inbox prefix, max length, field, payload, TTL ms.
const BROADCAST_SCRIPT: &str = r"
local sent = 0
for _, peer in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  if peer ~= ARGV[2] then
    local key = ARGV[3] .. peer
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[4], '*', ARGV[5], ARGV[6])
    redis.call('PEXPIRE', key, ARGV[7])
    sent = sent + 1
  end
end
return sent
";

/// Appends a notification to a peer's stream only while a record still holds the expected
/// value, atomically (the session fence: see `fence.rs`).
/// KEYS[1] the record, KEYS[2] the stream; ARGV: expected value, max length, field, payload,
/// TTL ms. Returns 1 when published, 0 when fenced off.
const PUBLISH_IF_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
";

/// Publishes `notification` to `peer_id` only while the value at `record` is `expected`, in
/// one atomic step. Returns whether it was published.
///
/// # Errors
/// When Redis fails.
pub(crate) async fn publish_if(
    redis: &mut ConnectionManager,
    keys: &Keys,
    record: &str,
    expected: &str,
    peer_id: &str,
    notification: &SignalingNotification,
) -> redis::RedisResult<bool> {
    let published: i64 = redis::Script::new(PUBLISH_IF_SCRIPT)
        .key(record)
        .key(keys.inbox(peer_id))
        .arg(expected)
        .arg(STREAM_MAX_LEN)
        .arg(FIELD)
        .arg(notification.encode_to_vec())
        .arg(STREAM_TTL.as_millis() as u64)
        .invoke_async(redis)
        .await?;
    Ok(published == 1)
}

/// [`NotificationBus`] on Redis streams.
pub struct RedisBus {
    redis: ConnectionManager,
    keys: Keys,
    subscribers: Arc<Mutex<HashMap<String, Subscriber>>>,
    changed: Arc<Notify>,
    next_id: AtomicU64,
}

struct Subscriber {
    id: u64,
    sender: mpsc::Sender<Delivery>,
    /// Last stream entry delivered.
    last_id: String,
}

impl RedisBus {
    /// A bus on `redis`. The reader opens connections of its own from `client` (XREAD BLOCK
    /// would hold up every other command on a shared one), again after Redis restarts.
    /// Reads until `stop` fires.
    pub fn new(
        redis: ConnectionManager,
        client: redis::Client,
        keys: Keys,
        _registry: Arc<dyn PeerRegistry>,
        stop: CancellationToken,
    ) -> Self {
        let subscribers = Arc::new(Mutex::new(HashMap::new()));
        let changed = Arc::new(Notify::new());
        tokio::spawn(read_streams(
            client,
            keys.clone(),
            Arc::clone(&subscribers),
            Arc::clone(&changed),
            stop,
        ));
        Self {
            redis,
            keys,
            subscribers,
            changed,
            next_id: AtomicU64::new(0),
        }
    }

    async fn append(
        &self,
        peer_id: &str,
        notification: &SignalingNotification,
    ) -> Result<(), redis::RedisError> {
        let key = self.keys.inbox(peer_id);
        redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg("*")
            .arg(FIELD)
            .arg(notification.encode_to_vec())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(STREAM_TTL.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut self.redis.clone())
            .await
    }

    /// The id of the newest entry of `key` ("0-0" when empty): a new subscriber reads only
    /// what is published after it subscribed, not a previous session's leftovers.
    async fn stream_end(&self, key: &str) -> String {
        let newest: Result<redis::streams::StreamRangeReply, _> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis.clone())
            .await;
        newest
            .ok()
            .and_then(|reply| reply.ids.into_iter().next())
            .map_or_else(|| "0-0".to_owned(), |entry| entry.id)
    }

    /// Starts reading `peer_id`'s stream after entry `last_id`.
    fn open(&self, peer_id: &str, last_id: String) -> Result<Mailbox, BusError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(MAILBOX_CAPACITY);
        {
            let mut subscribers = self.subscribers.lock();
            if subscribers.contains_key(peer_id) {
                return Err(BusError::AlreadySubscribed(peer_id.to_owned()));
            }
            subscribers.insert(
                peer_id.to_owned(),
                Subscriber {
                    id,
                    sender,
                    last_id: last_id.clone(),
                },
            );
        }
        self.changed.notify_one();
        Ok(Mailbox::new(id, receiver, Some(last_id)))
    }
}

#[async_trait]
impl NotificationBus for RedisBus {
    /// The room needs no note here: broadcasts read the registry's room indexes.
    async fn subscribe(&self, peer_id: &str, _room: Option<&str>) -> Result<Mailbox, BusError> {
        if self.subscribers.lock().contains_key(peer_id) {
            return Err(BusError::AlreadySubscribed(peer_id.to_owned()));
        }
        let last_id = self.stream_end(&self.keys.inbox(peer_id)).await;
        self.open(peer_id, last_id)
    }

    async fn resume(
        &self,
        peer_id: &str,
        _room: Option<&str>,
        cursor: Option<String>,
    ) -> Result<Mailbox, BusError> {
        self.open(peer_id, cursor.unwrap_or_else(|| "0-0".to_owned()))
    }

    async fn detach(&self, peer_id: &str, mailbox: Mailbox) -> Option<String> {
        let mut subscribers = self.subscribers.lock();
        if subscribers.get(peer_id).is_some_and(|s| s.id == mailbox.id) {
            subscribers.remove(peer_id);
        }
        // Entries read into the mailbox but not taken are read again after the resume.
        mailbox.cursor()
    }

    async fn discard(&self, peer_id: &str) {
        let _ = redis::cmd("DEL")
            .arg(self.keys.inbox(peer_id))
            .query_async::<()>(&mut self.redis.clone())
            .await;
    }

    async fn unsubscribe(&self, peer_id: &str, mailbox_id: u64) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.get(peer_id).is_some_and(|s| s.id == mailbox_id) {
            subscribers.remove(peer_id);
        }
    }

    async fn publish(
        &self,
        peer_id: &str,
        notification: SignalingNotification,
    ) -> Result<(), BusError> {
        self.append(peer_id, &notification).await.map_err(|err| {
            tracing::warn!(%err, peer_id, "publishing a notification to Redis failed");
            BusError::Unavailable(err.to_string())
        })
    }

    /// One script (one round trip): an entry on the stream of every live peer of the room's
    /// index (or the lobby's) but `except`, whatever the number of peers and rooms.
    async fn broadcast(
        &self,
        room: Option<&str>,
        except: &str,
        notification: SignalingNotification,
    ) {
        let sent: Result<i64, _> = redis::Script::new(BROADCAST_SCRIPT)
            .key(self.keys.scope_index(room))
            .arg(crate::signaling::unix_millis())
            .arg(except)
            .arg(self.keys.inbox_prefix())
            .arg(STREAM_MAX_LEN)
            .arg(FIELD)
            .arg(notification.encode_to_vec())
            .arg(STREAM_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(err) = sent {
            tracing::warn!(%err, "broadcast through Redis failed");
        }
    }
}

/// Runs one XREAD on the reader connection, opening it first if needed (a restarted Redis
/// broke the last one).
async fn read(
    client: &redis::Client,
    reader: &mut Option<MultiplexedConnection>,
    command: &redis::Cmd,
) -> redis::RedisResult<Option<StreamReadReply>> {
    let connection = match reader {
        Some(connection) => connection,
        None => reader.insert(client.get_multiplexed_async_connection().await?),
    };
    command.query_async(connection).await
}

/// One loop per replica: XREAD over the streams of every local subscriber, delivered into
/// their mailboxes in order. A full mailbox cuts that peer off, as in memory.
async fn read_streams(
    client: redis::Client,
    keys: Keys,
    subscribers: Arc<Mutex<HashMap<String, Subscriber>>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut reader = None;
    loop {
        let targets: Vec<(String, String, String)> = subscribers
            .lock()
            .iter()
            .map(|(peer, s)| (keys.inbox(peer), s.last_id.clone(), peer.clone()))
            .collect();
        if targets.is_empty() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = changed.notified() => continue,
            }
        }
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(256)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (key, _, _) in &targets {
            command.arg(key);
        }
        for (_, last_id, _) in &targets {
            command.arg(last_id);
        }
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            reply = read(&client, &mut reader, &command) => reply,
        };
        let reply = match reply {
            Ok(Some(reply)) => reply,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(%err, "reading notifications from Redis failed; reconnecting");
                reader = None;
                tokio::time::sleep(READ_BLOCK).await;
                continue;
            }
        };
        let by_key: HashMap<&str, &str> = targets
            .iter()
            .map(|(key, _, peer)| (key.as_str(), peer.as_str()))
            .collect();
        let mut subscribers = subscribers.lock();
        for stream in reply.keys {
            let Some(peer_id) = by_key.get(stream.key.as_str()) else {
                continue;
            };
            let Some(subscriber) = subscribers.get_mut(*peer_id) else {
                continue;
            };
            let mut cut_off = false;
            for entry in stream.ids {
                subscriber.last_id.clone_from(&entry.id);
                let notification = match entry.map.get(FIELD) {
                    Some(redis::Value::BulkString(bytes)) => {
                        SignalingNotification::decode(bytes.as_slice()).ok()
                    }
                    _ => None,
                };
                let Some(notification) = notification else {
                    tracing::warn!(peer_id, id = entry.id, "undecodable notification skipped");
                    continue;
                };
                let delivery = Delivery {
                    cursor: Some(entry.id.clone()),
                    notification,
                };
                if subscriber.sender.try_send(delivery).is_err() {
                    cut_off = true;
                    break;
                }
            }
            if cut_off {
                tracing::warn!(
                    peer_id,
                    "notification mailbox full or closed, cutting the peer off"
                );
                subscribers.remove(*peer_id);
            }
        }
    }
}
