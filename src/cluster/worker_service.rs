//! The internal worker API (`remotemedia.v1.worker.MediaWorker`) over the worker's session
//! host: frontends create, feed and close server sessions here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::{info_span, Instrument};

use super::fence::SessionFence;
use super::remote_host::error_to_failure;
use super::room_span::RelayApi;
use super::worker_rooms::WorkerRooms;
use crate::proto::worker::{
    self as pb, create_session_response, media_worker_server::MediaWorker, session_failure::Kind,
};
use crate::signaling::{IceCandidate, SessionError, SessionHost, SessionRequest};
use crate::telemetry::RemoteParent;

/// Whether the worker drains (takes no new sessions), and wake-ups when that changes. A drain
/// on request can be undone (the controller abandoned a scale-down); the drain of a stopping
/// worker cannot.
#[derive(Debug, Default)]
pub struct DrainState {
    draining: AtomicBool,
    /// Set when the worker stops (SIGTERM): the drain is final.
    stopping: AtomicBool,
    started: Notify,
    ended: Notify,
}

impl DrainState {
    /// Starts draining; returns whether it was already.
    pub fn start(&self) -> bool {
        let was = self.draining.swap(true, Ordering::AcqRel);
        if !was {
            super::metrics::metrics().worker_draining.set(1);
            self.started.notify_waiters();
        }
        was
    }

    /// Starts the final drain of a stopping worker; [`Self::undo`] refuses from now on.
    pub fn start_final(&self) {
        self.stopping.store(true, Ordering::Release);
        self.start();
    }

    /// Takes sessions again; false when the worker is stopping (the drain stays).
    pub fn undo(&self) -> bool {
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        if self.draining.swap(false, Ordering::AcqRel) {
            super::metrics::metrics().worker_draining.set(0);
            self.ended.notify_waiters();
        }
        true
    }

    /// Completes once a drain on request has been undone.
    pub async fn ended(&self) {
        loop {
            let notified = self.ended.notified();
            if !self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Completes once draining has started.
    pub async fn started(&self) {
        loop {
            let notified = self.started.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }
}

/// [`MediaWorker`] on a session host.
pub struct WorkerService {
    host: Arc<dyn SessionHost>,
    drain: Arc<DrainState>,
    /// Which sessions publish only while the cluster still places them here.
    fence: Arc<SessionFence>,
    /// The rooms whose participants have sessions here.
    rooms: Arc<WorkerRooms>,
    /// Relay links other workers open here (`--relay-port`).
    relay: Option<RelayApi>,
}

impl WorkerService {
    pub(crate) fn new(
        host: Arc<dyn SessionHost>,
        drain: Arc<DrainState>,
        fence: Arc<SessionFence>,
        rooms: Arc<WorkerRooms>,
        relay: Option<RelayApi>,
    ) -> Self {
        Self {
            host,
            drain,
            fence,
            rooms,
            relay,
        }
    }

    fn relay(&self) -> Result<&RelayApi, Status> {
        self.relay
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this worker has no relay socket"))
    }
}

#[tonic::async_trait]
impl MediaWorker for WorkerService {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let parent = RemoteParent::from_metadata(request.metadata());
        let request = request.into_inner();
        // A child of the frontend's call: the session's spans join the offer's trace.
        let span = info_span!(
            "worker.create_session",
            otel.kind = "server",
            peer_id = request.peer_id,
            offer_id = request.offer_id,
        );
        parent.adopt(&span);
        self.create(request).instrument(span).await
    }

    async fn add_candidate(
        &self,
        request: Request<pb::AddCandidateRequest>,
    ) -> Result<Response<pb::AddCandidateResponse>, Status> {
        let parent = RemoteParent::from_metadata(request.metadata());
        let request = request.into_inner();
        let span = info_span!(
            "worker.add_candidate",
            otel.kind = "server",
            peer_id = request.peer_id
        );
        parent.adopt(&span);
        let candidate = IceCandidate {
            candidate: request.candidate,
            sdp_mid: request.sdp_mid,
            sdp_mline_index: request.sdp_mline_index,
        };
        let failure = self
            .host
            .add_candidate(&request.peer_id, candidate)
            .instrument(span)
            .await
            .err()
            .map(|err| error_to_failure(&err));
        Ok(Response::new(pb::AddCandidateResponse { failure }))
    }

    async fn answer_server_offer(
        &self,
        request: Request<pb::AnswerServerOfferRequest>,
    ) -> Result<Response<pb::AnswerServerOfferResponse>, Status> {
        let parent = RemoteParent::from_metadata(request.metadata());
        let request = request.into_inner();
        let span = info_span!(
            "worker.answer_server_offer",
            otel.kind = "server",
            peer_id = request.peer_id,
            offer_id = request.offer_id
        );
        parent.adopt(&span);
        let offer_id = Some(request.offer_id.as_str()).filter(|id| !id.is_empty());
        let failure = self
            .host
            .answer_server_offer(&request.peer_id, offer_id, request.answer_sdp)
            .instrument(span)
            .await
            .err()
            .map(|err| error_to_failure(&err));
        Ok(Response::new(pb::AnswerServerOfferResponse { failure }))
    }

    async fn set_stream_detached(
        &self,
        request: Request<pb::SetStreamDetachedRequest>,
    ) -> Result<Response<pb::SetStreamDetachedResponse>, Status> {
        let request = request.into_inner();
        if request.detached {
            self.host.stream_detached(&request.peer_id).await;
        } else {
            self.host.stream_resumed(&request.peer_id).await;
        }
        Ok(Response::new(pb::SetStreamDetachedResponse {}))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let parent = RemoteParent::from_metadata(request.metadata());
        let request = request.into_inner();
        let peer_id = request.peer_id;
        let span = info_span!("worker.close_session", otel.kind = "server", peer_id);
        parent.adopt(&span);
        let token = Some(request.session_token).filter(|t| !t.is_empty());
        if let Some(token) = &token {
            // A late close for an attempt the frontend gave up on must not end a newer
            // session of the same peer; one not created yet ends itself (see `create`).
            if self
                .fence
                .token(&peer_id)
                .is_some_and(|held| held != *token)
            {
                return Ok(Response::new(pb::CloseSessionResponse { existed: false }));
            }
        }
        let existed = self.host.close_session(&peer_id).instrument(span).await;
        // A session still being created keeps its fence: it ends itself once created.
        if existed || token.is_none() {
            self.fence.end(&peer_id, token.as_deref());
        }
        if existed {
            self.rooms.leave(&peer_id).await;
        }
        Ok(Response::new(pb::CloseSessionResponse { existed }))
    }

    async fn open_relay(
        &self,
        request: Request<pb::OpenRelayRequest>,
    ) -> Result<Response<pb::OpenRelayResponse>, Status> {
        // In the trace of the calling worker's `relay.link_open`.
        let parent = RemoteParent::from_metadata(request.metadata());
        let request = request.into_inner();
        let span = info_span!(
            "worker.open_relay",
            otel.kind = "server",
            room = request.room,
            from = request.worker_id,
            link = request.link_id
        );
        parent.adopt(&span);
        let relay = self.relay()?;
        relay
            .open(request)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn update_relay(
        &self,
        request: Request<pb::UpdateRelayRequest>,
    ) -> Result<Response<pb::UpdateRelayResponse>, Status> {
        self.relay()?
            .update(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn close_relay(
        &self,
        request: Request<pb::CloseRelayRequest>,
    ) -> Result<Response<pb::CloseRelayResponse>, Status> {
        self.relay()?
            .close(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn drain(
        &self,
        _request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        if !self.drain.start() {
            tracing::info!("drain requested: taking no new sessions");
        }
        Ok(Response::new(pb::DrainResponse {
            active_sessions: self.host.session_count() as u32,
        }))
    }

    async fn undrain(
        &self,
        _request: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::UndrainResponse>, Status> {
        if !self.drain.undo() {
            return Err(Status::failed_precondition(
                "this worker is stopping: its drain cannot be undone",
            ));
        }
        tracing::info!("undrain requested: taking sessions again");
        Ok(Response::new(pb::UndrainResponse {
            active_sessions: self.host.session_count() as u32,
        }))
    }
}

impl WorkerService {
    async fn create(
        &self,
        request: pb::CreateSessionRequest,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        if self.drain.is_draining() {
            // A room with participants here stays: its newcomers are refused (or, with the
            // frontends' --room-span-workers, go to other workers), so the drain ends. Any
            // other session goes elsewhere.
            let failure = if !request.room.is_empty()
                && self.rooms.hosts(&request.room, request.room_version)
            {
                error_to_failure(&SessionError::RoomClosing(request.room))
            } else {
                pb::SessionFailure {
                    kind: Kind::Draining as i32,
                    message: "this worker is draining and takes no new sessions".into(),
                    capacity: 0,
                }
            };
            return Ok(Response::new(pb::CreateSessionResponse {
                result: Some(create_session_response::Result::Failure(failure)),
            }));
        }
        let peer_id = request.peer_id;
        let room = Some(request.room).filter(|r| !r.is_empty());
        match &room {
            Some(room) => self.rooms.join(&peer_id, room, request.room_version).await,
            // A session in the lobby replaces whatever session the peer had, in a room or not.
            None => self.rooms.leave(&peer_id).await,
        }
        let token = Some(request.session_token).filter(|t| !t.is_empty());
        match &token {
            Some(token) => self.fence.begin(&peer_id, token),
            // A frontend that does not fence: this session publishes unfenced.
            None => {
                self.fence.end(&peer_id, None);
            }
        }
        let result = self
            .host
            .create_session(SessionRequest {
                peer_id: peer_id.clone(),
                offer_id: request.offer_id,
                offer_sdp: request.offer_sdp,
                manifest: Some(request.manifest).filter(|m| !m.is_empty()),
                room,
                room_manifest: Some(request.room_manifest).filter(|m| !m.is_empty()),
            })
            .await;
        let result = match (result, token) {
            (Ok(_), Some(token)) if !self.fence.holds(&peer_id, &token).await => {
                // The frontend gave up on this attempt (a timeout) and placed the peer
                // elsewhere: this session is an orphan that no client will use.
                // Unless a newer attempt for the peer came here meanwhile.
                let newer = self.fence.token(&peer_id).is_some_and(|held| held != token);
                if !newer {
                    self.host.close_session(&peer_id).await;
                    self.fence.end(&peer_id, Some(&token));
                    self.rooms.leave(&peer_id).await;
                }
                tracing::info!(
                    peer_id,
                    "session created after its frontend gave up: closed"
                );
                create_session_response::Result::Failure(error_to_failure(
                    &SessionError::Unavailable("the frontend gave up on this attempt".into()),
                ))
            }
            (Ok(answer), _) => create_session_response::Result::AnswerSdp(answer),
            (Err(err), token) => {
                self.fence.end(&peer_id, token.as_deref());
                self.rooms.leave(&peer_id).await;
                create_session_response::Result::Failure(error_to_failure(&err))
            }
        };
        Ok(Response::new(pb::CreateSessionResponse {
            result: Some(result),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_on_request_can_be_undone_but_not_a_stopping_workers_drain() {
        let drain = DrainState::default();
        assert!(!drain.start());
        assert!(drain.is_draining());
        assert!(drain.undo());
        assert!(!drain.is_draining(), "taking sessions again");

        drain.start_final();
        assert!(!drain.undo(), "a stopping worker stays drained");
        assert!(drain.is_draining());
    }
}
