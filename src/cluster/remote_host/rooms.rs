//! Sessions of room participants. The first offer into a room places it as any session (the
//! load-aware choice) and records it in Redis; every later participant's session goes first to
//! the room's first worker, whichever frontend it reaches and whatever the placement table says
//! of the worker (full or draining: the worker itself decides). When that worker refuses the
//! newcomer (full, or draining with the room's participants), the refusal reaches the client;
//! with `--room-span-workers` (experimental: workers relay each other's tracks, simulcast
//! layers, keyframe requests, NACKs; the room's lead runs speakers and pipeline) the room spills
//! instead: the newcomer goes to another worker, one that already hosts the room
//! if any can take it, else the usual load-aware choice, and the record lists that worker too
//! (#16).

use std::collections::HashSet;

use super::{redis_unavailable, Attempt, RemoteSessionHost, ATTEMPTS};
use crate::cluster::redis_error;
use crate::cluster::room_record::{self, Join, RoomRecord};
use crate::cluster::workers::{self, WorkerStatus};
use crate::proto::worker::session_failure::Kind;
use crate::signaling::{SessionError, SessionHost, SessionRequest};

impl RemoteSessionHost {
    /// Creates the session of a participant of `room` on one of the room's workers, placing
    /// the room first when it lives nowhere (or its workers are gone), and, with
    /// `--room-span-workers`, spilling it onto another worker when its workers refuse the
    /// newcomer.
    pub(super) async fn create_in_room(
        &self,
        request: SessionRequest,
        room: &str,
    ) -> Result<String, SessionError> {
        let mut excluded = HashSet::new();
        let mut last_error = None;
        let mut replaced = false;
        // The room's workers as last read: a spill prefers them.
        let mut hosts: Vec<String> = Vec::new();
        for attempt in 1..=ATTEMPTS {
            let found = if attempt == 1 {
                self.find_room(room).await?
            } else {
                None
            };
            let (worker, record) = match found {
                Some(found) => found,
                None => {
                    let spill = self.span_rooms && !hosts.is_empty();
                    let prefer: &[String] = if spill { &hosts } else { &[] };
                    let Some(candidate) = self.pick_for_room(prefer, &excluded, attempt) else {
                        break;
                    };
                    match self.place_room(room, candidate, spill).await? {
                        Some(placed) => placed,
                        None => continue,
                    }
                }
            };
            hosts.clone_from(&record.workers);
            if excluded.contains(&worker.id) {
                // Another frontend placed the room meanwhile on a worker that refused this
                // offer: the next attempt spills.
                continue;
            }
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
                    match after_refusal(self.span_rooms, record.added, kind) {
                        Refused::Stands => return Err(error),
                        Refused::Spill => {
                            tracing::info!(room, worker_id = worker.id, %error, "the room's worker refused a newcomer; the room spills");
                            error
                        }
                        Refused::Move => {
                            // The room has no participant there: that worker leaves its record.
                            tracing::info!(room, worker_id = worker.id, %error, "room not taken there; placing it elsewhere");
                            self.forget_room(room, &worker.id, record.version).await;
                            hosts.retain(|id| *id != worker.id);
                            error
                        }
                    }
                }
            };
            excluded.insert(worker.id.clone());
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| self.none_available()))
    }

    /// A worker for a newcomer to a room whose workers (`hosts`) refused it or are gone: one
    /// of them that takes sessions (the load-aware choice among them), else any.
    fn pick_for_room(
        &self,
        hosts: &[String],
        excluded: &HashSet<String>,
        attempt: usize,
    ) -> Option<WorkerStatus> {
        if !hosts.is_empty() {
            let mut others: HashSet<String> = self
                .workers
                .read()
                .iter()
                .filter(|w| !hosts.contains(&w.id))
                .map(|w| w.id.clone())
                .collect();
            others.extend(excluded.iter().cloned());
            if let Some(host) = self.pick(&others, attempt) {
                return Some(host);
            }
        }
        self.pick(excluded, attempt)
    }

    /// The room's record with a new version and its live worker, if it lives somewhere. A
    /// record whose worker is gone is cleared (on its version: a newer placement stays).
    async fn find_room(
        &self,
        room: &str,
    ) -> Result<Option<(WorkerStatus, RoomRecord)>, SessionError> {
        let record = room_record::join(&mut self.redis.clone(), &self.keys, room, Join::Existing)
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
    /// (then that worker); or, when `spill`, adds `candidate` to the room's workers.
    /// `None`: its placement names a worker that is already gone.
    async fn place_room(
        &self,
        room: &str,
        candidate: WorkerStatus,
        spill: bool,
    ) -> Result<Option<(WorkerStatus, RoomRecord)>, SessionError> {
        let how = if spill {
            Join::Spill(&candidate.id)
        } else {
            Join::Place(&candidate.id)
        };
        let record = room_record::join(&mut self.redis.clone(), &self.keys, room, how)
            .await
            .map_err(|err| redis_unavailable("room_place", &err))?
            .ok_or_else(|| SessionError::Internal(format!("room {room} was not placed")))?;
        if record.created {
            tracing::info!(room, worker_id = candidate.id, "room placed");
            return Ok(Some((candidate, record)));
        }
        if spill {
            tracing::info!(room, worker_id = candidate.id, workers = ?record.workers, "room spills onto another worker");
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

/// What a worker's refusal of a room's newcomer leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The refusal is the answer (a bad offer, or a worker that did not answer while it may
    /// hold the room's participants).
    Stands,
    /// The worker keeps the room's participants and takes no more: another worker joins the
    /// room (only with `--room-span-workers`).
    Spill,
    /// The worker has none of the room's participants: it leaves the room's record and
    /// another worker is tried.
    Move,
}

/// What a refusal leads to. `span`: `--room-span-workers`; without it a full or closing
/// room's worker's refusal stands (spanning workers stays opt-in while the relay is
/// incomplete). `added`: this offer's join put the worker among the room's workers (it has none
/// of its participants). A worker that did not answer (`None`) is tried elsewhere only when
/// this offer put it there: one that may be alive with the room's participants stays in the
/// record (a dead one is reaped).
fn after_refusal(span: bool, added: bool, refusal: Option<Kind>) -> Refused {
    match refusal {
        Some(Kind::Draining) => Refused::Move,
        Some(Kind::AtCapacity) | None if added => Refused::Move,
        Some(Kind::AtCapacity | Kind::RoomClosing) if span => Refused::Spill,
        _ => Refused::Stands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_closing_rooms_worker_spills_and_one_without_its_participants_leaves() {
        for span in [false, true] {
            // Draining without the room's participants, or full / silent when this offer put
            // the room there: the worker leaves the record, another is tried.
            assert_eq!(
                after_refusal(span, false, Some(Kind::Draining)),
                Refused::Move
            );
            assert_eq!(
                after_refusal(span, true, Some(Kind::AtCapacity)),
                Refused::Move
            );
            assert_eq!(after_refusal(span, true, None), Refused::Move);
            // Unreachable while it may hold participants, or a bad offer: the refusal stands.
            assert_eq!(after_refusal(span, false, None), Refused::Stands);
            for added in [false, true] {
                assert_eq!(
                    after_refusal(span, added, Some(Kind::InvalidSdp)),
                    Refused::Stands
                );
            }
        }
        // The room's worker is full or drains with the room's participants: the room spills
        // with --room-span-workers, and the refusal stands without it (main's behavior).
        for kind in [Kind::AtCapacity, Kind::RoomClosing] {
            assert_eq!(after_refusal(true, false, Some(kind)), Refused::Spill);
            assert_eq!(after_refusal(false, false, Some(kind)), Refused::Stands);
        }
        assert_eq!(
            after_refusal(false, true, Some(Kind::RoomClosing)),
            Refused::Stands
        );
    }
}
