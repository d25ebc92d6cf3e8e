//! The session fence. A frontend that gives up on a worker's create (a timeout) places the
//! peer on another worker, but the first worker may still finish creating the session; that
//! orphan's events (its candidates, its end at the connect timeout) would reach a client whose
//! call now runs elsewhere, and end it with "server disconnected". So before each create the
//! frontend sets `session:<peer>` to `<worker>/<token>` (a token per attempt), and the worker
//! publishes a session's events only while that record stands (one script compares and
//! publishes), and ends a session whose record is gone by the time it is created.

use std::collections::HashMap;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use super::keys::Keys;
use super::redis_bus::publish_if;
use crate::signaling::{
    deliver_session_event, session_notification, NotificationBus, SessionEvent,
};

/// The value of `session:<peer>` for a session of `worker_id` created with `token`.
pub(crate) fn record(worker_id: &str, token: &str) -> String {
    format!("{worker_id}/{token}")
}

/// The worker a `session:<peer>` value names (worker ids never contain `/`; a value without a
/// token is a record from a frontend that does not fence).
pub(crate) fn worker_of(record: &str) -> &str {
    record.split_once('/').map_or(record, |(worker, _)| worker)
}

/// The worker side: the token of each fenced session, and the compare-and-publish.
pub(crate) struct SessionFence {
    redis: ConnectionManager,
    keys: Keys,
    worker_id: String,
    /// Token of each fenced session by peer. A session created without one (by a frontend
    /// that does not fence) has no entry and publishes unfenced. An entry lives as long as
    /// its session: removed when the session ends.
    tokens: Mutex<HashMap<String, String>>,
}

impl SessionFence {
    pub(crate) fn new(redis: ConnectionManager, keys: Keys, worker_id: String) -> Self {
        Self {
            redis,
            keys,
            worker_id,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A session for `peer_id` is being created with `token` (before the create, so the
    /// events it reports while it is created are fenced too).
    pub(crate) fn begin(&self, peer_id: &str, token: &str) {
        self.tokens
            .lock()
            .insert(peer_id.to_owned(), token.to_owned());
    }

    /// The token `peer_id`'s session was created with.
    pub(crate) fn token(&self, peer_id: &str) -> Option<String> {
        self.tokens.lock().get(peer_id).cloned()
    }

    /// Forgets `peer_id`'s session: any, or only the one created with `token`. Returns
    /// whether an entry went.
    pub(crate) fn end(&self, peer_id: &str, token: Option<&str>) -> bool {
        let mut tokens = self.tokens.lock();
        match (tokens.get(peer_id), token) {
            (Some(held), Some(token)) if held != token => false,
            (Some(_), _) => tokens.remove(peer_id).is_some(),
            (None, _) => false,
        }
    }

    /// Whether `session:<peer>` still names this worker and the session of `token`. When
    /// Redis cannot say, the session is kept (its events stay fenced all the same).
    pub(crate) async fn holds(&self, peer_id: &str, token: &str) -> bool {
        let current: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.keys.session(peer_id))
            .query_async(&mut self.redis.clone())
            .await;
        match current {
            Ok(current) => current.as_deref() == Some(record(&self.worker_id, token).as_str()),
            Err(err) => {
                super::redis_error("fence_check", &err);
                true
            }
        }
    }

    /// Delivers `event` to its client: a fenced session's only while its record stands.
    pub(crate) async fn publish(&self, bus: &dyn NotificationBus, event: SessionEvent) {
        let peer_id = match &event {
            SessionEvent::LocalCandidate { peer_id, .. }
            | SessionEvent::Closed { peer_id, .. }
            | SessionEvent::ServerOffer { peer_id, .. } => peer_id.clone(),
        };
        let Some(token) = self.token(&peer_id) else {
            return deliver_session_event(bus, event).await;
        };
        let (_, notification) = session_notification(event);
        let published = publish_if(
            &mut self.redis.clone(),
            &self.keys,
            &self.keys.session(&peer_id),
            &record(&self.worker_id, &token),
            &peer_id,
            &notification,
        )
        .await;
        match published {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                peer_id,
                "event of a session the cluster placed elsewhere dropped (fenced)"
            ),
            Err(err) => super::redis_error("fenced_publish", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_worker() {
        assert_eq!(worker_of(&record("worker-a", "t1")), "worker-a");
        assert_eq!(worker_of("worker-a"), "worker-a");
    }
}
