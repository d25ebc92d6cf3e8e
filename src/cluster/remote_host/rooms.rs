//! Sessions of room participants: a room lives on one worker. The first offer into a room
//! places it as any session (the load-aware choice) and records it in Redis; every later
//! participant's session goes to that worker, whichever frontend it reaches and whatever the
//! placement table says of the worker (full or draining: the worker itself decides).

use std::collections::HashSet;

use super::{redis_unavailable, Attempt, RemoteSessionHost, ATTEMPTS};
use crate::cluster::redis_error;
use crate::cluster::room_record::{self, RoomRecord};
use crate::cluster::workers::{self, WorkerStatus};
use crate::proto::worker::session_failure::Kind;
use crate::signaling::{SessionError, SessionHost, SessionRequest};

impl RemoteSessionHost {
    /// Creates the session of a participant of `room` on the room's worker, placing the room
    /// first when it lives nowhere (or its worker is gone).
    pub(super) async fn create_in_room(
        &self,
        request: SessionRequest,
        room: &str,
    ) -> Result<String, SessionError> {
        let mut excluded = HashSet::new();
        let mut last_error = None;
        let mut replaced = false;
        for attempt in 1..=ATTEMPTS {
            let (worker, record) = match self.find_room(room).await? {
                Some(found) => found,
                None => {
                    let Some(candidate) = self.pick(&excluded, attempt) else {
                        break;
                    };
                    match self.place_room(room, candidate).await? {
                        Some(placed) => placed,
                        None => continue,
                    }
                }
            };
            // A re-offer replaces the old session, wherever it runs: after the join, whose
            // new version keeps the room's record if that session was its last participant.
            if !replaced {
                replaced = true;
                if self.session_worker(&request.peer_id).await?.is_some() {
                    self.close_session(&request.peer_id).await;
                }
            }
            let error = match self
                .attempt(&worker, &request, Some((room, record.version)))
                .await?
            {
                Attempt::Answer(answer) => return Ok(answer),
                Attempt::Failed { error, kind } => {
                    if !may_move(&record, kind) {
                        return Err(error);
                    }
                    error
                }
            };
            // The room has no participant there: it may live elsewhere.
            tracing::info!(room, worker_id = worker.id, %error, "room not taken; placing it again");
            self.forget_room(room, &worker.id, record.version).await;
            excluded.insert(worker.id.clone());
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| self.none_available()))
    }

    /// The room's record with a new version and its live worker, if it lives somewhere. A
    /// record whose worker is gone is cleared (on its version: a newer placement stays).
    async fn find_room(
        &self,
        room: &str,
    ) -> Result<Option<(WorkerStatus, RoomRecord)>, SessionError> {
        let record = room_record::join(&mut self.redis.clone(), &self.keys, room, None)
            .await
            .map_err(|err| redis_unavailable("room_place", &err))?;
        let Some(record) = record else {
            return Ok(None);
        };
        Ok(self
            .room_worker(room, &record)
            .await?
            .map(|worker| (worker, record)))
    }

    /// Places the room on `candidate` (placement's pick), unless another frontend placed it first
    /// (then that worker). `None`: its placement names a worker that is already gone.
    async fn place_room(
        &self,
        room: &str,
        candidate: WorkerStatus,
    ) -> Result<Option<(WorkerStatus, RoomRecord)>, SessionError> {
        let record = room_record::join(
            &mut self.redis.clone(),
            &self.keys,
            room,
            Some(&candidate.id),
        )
        .await
        .map_err(|err| redis_unavailable("room_place", &err))?
        .ok_or_else(|| SessionError::Internal(format!("room {room} was not placed")))?;
        if record.created {
            tracing::info!(room, worker_id = candidate.id, "room placed");
            return Ok(Some((candidate, record)));
        }
        Ok(self
            .room_worker(room, &record)
            .await?
            .map(|worker| (worker, record)))
    }

    /// The room's worker, full and draining ones included (from the heartbeats, read again
    /// when this frontend has not seen the worker yet). A dead or unnamed worker: the record
    /// is cleared and `None`.
    async fn room_worker(
        &self,
        room: &str,
        record: &RoomRecord,
    ) -> Result<Option<WorkerStatus>, SessionError> {
        let Some(worker_id) = record.worker() else {
            self.forget_room(room, "", record.version).await;
            return Ok(None);
        };
        if let Some(worker) = self.live.read().get(worker_id) {
            return Ok(Some(worker.clone()));
        }
        let heartbeat = workers::read_heartbeat(&mut self.redis.clone(), &self.keys, worker_id)
            .await
            .map_err(|err| redis_unavailable("read_heartbeats", &err))?;
        match heartbeat {
            Some(worker) if worker.is_fresh(workers::now_ms()) => Ok(Some(worker)),
            _ => {
                tracing::info!(
                    room,
                    worker_id,
                    "the room's worker is gone; placing it again"
                );
                self.forget_room(room, worker_id, record.version).await;
                Ok(None)
            }
        }
    }

    /// Deletes the room's record if it is still at `version`.
    async fn forget_room(&self, room: &str, worker_id: &str, version: u64) {
        let mut redis = self.redis.clone();
        let forgotten = room_record::forget(&mut redis, &self.keys, room, worker_id, version);
        if let Err(err) = forgotten.await {
            redis_error("room_forget", &err);
        }
    }
}

/// Whether a refused room participant may be placed elsewhere: only when the room has no
/// participant on that worker — this offer placed it there, or the worker drains without
/// it (a draining worker that hosts it says ROOM_CLOSING). A worker that did not answer
/// (`None`) is tried elsewhere only for a room this offer placed: one that may be alive
/// with the room's participants must not see the room split.
fn may_move(record: &RoomRecord, refusal: Option<Kind>) -> bool {
    match refusal {
        Some(Kind::Draining) => true,
        Some(Kind::AtCapacity) | None => record.created,
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created: bool) -> RoomRecord {
        RoomRecord {
            workers: vec!["w".into()],
            version: 1,
            created,
        }
    }

    #[test]
    fn a_room_moves_only_when_no_participant_is_where_it_lives() {
        // A worker draining without the room's participants, or full when this offer
        // placed the room there: elsewhere.
        assert!(may_move(&record(false), Some(Kind::Draining)));
        assert!(may_move(&record(true), Some(Kind::AtCapacity)));
        assert!(may_move(&record(true), None));
        // The room's worker is full, closing the room, unreachable, or the offer is bad:
        // the refusal stands.
        assert!(!may_move(&record(false), Some(Kind::AtCapacity)));
        assert!(!may_move(&record(false), Some(Kind::RoomClosing)));
        assert!(!may_move(&record(false), None));
        assert!(!may_move(&record(true), Some(Kind::InvalidSdp)));
        assert!(!may_move(&record(true), Some(Kind::RoomClosing)));
    }
}
