//! The gRPC transport of signaling: one task per `Signal` stream drives a [`ConnectedPeer`].

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::auth::{bearer, Identity};
use super::core::sleep_or_never;
use super::core::{ConnectedPeer, OfferOutcome, SignalingCore};
use super::error::SignalingError;
use super::metrics::metrics;
use super::peer_id::SERVER_PEER_ID;
use super::rate_limit::RequestGate;
use super::session_host::IceCandidate;
use super::spans::{request_span, Transport};
use crate::admission::{Admission, Slot};
use crate::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_server::WebRtcSignaling,
    SignalingRequest, SignalingResponse,
};
use crate::telemetry::RemoteParent;

/// Responses buffered per stream before the stream task waits for the client to read.
const RESPONSE_BUFFER: usize = 128;
/// How often a stream task that waits for its client to read checks whether the bus has
/// cut the peer off meanwhile (its mailbox overflowed).
const STALL_CHECK: Duration = Duration::from_millis(250);

/// The `WebRtcSignaling` service.
pub struct GrpcSignaling {
    core: Arc<SignalingCore>,
    shutdown: CancellationToken,
    /// Stream tasks, so shutdown can wait for each peer's clean leave.
    streams: TaskTracker,
    /// The per-address cap, for clients behind a trusted HTTP proxy's `X-Forwarded-For`.
    admission: Option<Arc<Admission>>,
}

impl GrpcSignaling {
    /// Stream tasks are spawned on `streams`; `shutdown` ends them.
    pub fn new(
        core: Arc<SignalingCore>,
        shutdown: CancellationToken,
        streams: TaskTracker,
    ) -> Self {
        Self {
            core,
            shutdown,
            streams,
            admission: None,
        }
    }

    /// Caps `Signal` streams per client behind trusted HTTP proxies (a connection from
    /// anyone else was counted when it was accepted).
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// The slot of the client a trusted proxy's `X-Forwarded-For` names, if any.
    fn forwarded_slot<T>(&self, request: &Request<T>) -> Result<Option<Slot>, Status> {
        let (Some(admission), Some(source)) = (&self.admission, request.remote_addr()) else {
            return Ok(None);
        };
        let forwarded = request
            .metadata()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        admission
            .admit_forwarded(source.ip(), forwarded)
            .map_err(|_| SignalingError::TooManyConnections(admission.max_per_address()).into())
    }
}

type ResponseSender = mpsc::Sender<Result<SignalingResponse, Status>>;
type Item = Result<SignalingResponse, Status>;

/// Why a response could not be sent.
#[derive(Debug)]
enum Undelivered {
    /// The response stream is gone: the client left or the connection broke.
    Gone,
    /// The client stopped reading until its mailbox overflowed.
    SlowConsumer,
}

/// How a stream's loop ended.
enum End {
    /// The client ended its call: it leaves.
    Clean,
    /// The connection broke: the peer may resume.
    Broken,
    /// The client read too slowly: the stream ends with RESOURCE_EXHAUSTED and the peer is
    /// kept for a resume, like a broken stream.
    SlowConsumer,
    /// The client sent what ends its stream: a message that cannot be decoded or is too
    /// large to read (a gRPC stream cannot be read past it), or a flood far past the rate
    /// limit. It gets the error and leaves.
    Refused(SignalingError),
    ShuttingDown,
}

#[tonic::async_trait]
impl WebRtcSignaling for GrpcSignaling {
    type SignalStream = ReceiverStream<Result<SignalingResponse, Status>>;

    async fn signal(
        &self,
        request: Request<Streaming<SignalingRequest>>,
    ) -> Result<Response<Self::SignalStream>, Status> {
        // Held for the life of the stream.
        let slot = self.forwarded_slot(&request)?;
        let identity = authenticate(&self.core, &request)?;
        // A client's `traceparent`: every request of the stream continues its trace.
        let parent = RemoteParent::from_metadata(request.metadata());
        let inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(RESPONSE_BUFFER);
        let stream = run_stream(
            Arc::clone(&self.core),
            identity,
            inbound,
            sender,
            self.shutdown.clone(),
            parent,
        );
        self.streams.spawn(async move {
            stream.await;
            drop(slot);
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_peers(
        &self,
        request: Request<pb::GetPeersRequest>,
    ) -> Result<Response<pb::GetPeersResponse>, Status> {
        // The peer list is for signed-in clients only (health checks stay open): the lobby,
        // or the room of the token's `room` claim.
        let identity = authenticate(&self.core, &request)?;
        let peers = self.core.peers_for(&identity).await?;
        Ok(Response::new(pb::GetPeersResponse {
            count: count(peers.len()),
            peers,
        }))
    }

    async fn health_check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let stats = self.core.stats().await;
        Ok(Response::new(pb::HealthCheckResponse {
            status: "healthy".into(),
            uptime_seconds: stats.uptime_seconds,
            connected_peers: count(stats.connected_peers),
            metrics: json!({
                "sessions": stats.sessions,
                "pending_offers": stats.pending_offers,
                "connected_peers": stats.connected_peers,
            })
            .to_string(),
        }))
    }
}

/// The caller's identity from its `authorization: Bearer <token>` metadata.
fn authenticate<T>(core: &SignalingCore, request: &Request<T>) -> Result<Identity, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    core.authenticate(header.and_then(bearer)).map_err(|err| {
        tracing::info!(%err, "signaling call refused");
        err.into()
    })
}

/// Reads the stream until the client half-closes, breaks, or the server shuts down.
async fn run_stream(
    core: Arc<SignalingCore>,
    identity: Identity,
    mut inbound: Streaming<SignalingRequest>,
    out: ResponseSender,
    shutdown: CancellationToken,
    parent: RemoteParent,
) {
    let gate = core.request_gate();
    let Some((request_id, announce)) =
        until_announce(&core, &mut inbound, &out, &gate, &shutdown).await
    else {
        return;
    };
    let span = request_span(
        Transport::Grpc,
        "announce",
        Some(&announce.peer_id),
        &request_id,
        &parent,
    );
    let announced = async {
        let peer = core.announce(announce, &identity).await?;
        let body = peer.announce_ack().await;
        Ok::<_, SignalingError>((peer, body))
    }
    .instrument(span.clone())
    .await;
    let (mut peer, body) = match announced {
        Ok(announced) => announced,
        Err(err) => {
            span.in_scope(|| tracing::info!(%err, "announce refused"));
            let _ = out.send(Err(err.into())).await;
            return;
        }
    };
    drop(span);
    // One slot is kept for the stream's last word (a status), so ending a stream whose
    // client stopped reading never waits for that client.
    let Ok(last_word) = out.clone().reserve_owned().await else {
        peer.detach().await;
        return;
    };
    let ack = ack(request_id, "announced", body);
    if out.send(Ok(ack)).await.is_err() {
        if ended_cleanly(&mut inbound).await {
            peer.leave().await;
        } else {
            peer.detach().await;
        }
        return;
    }

    let end = loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(request)) => {
                    match gate.admit(request.encoded_len()) {
                        Ok(()) => {}
                        Err(err) if err.ends_stream() => {
                            tracing::info!(peer_id = peer.peer_id(), %err, "stream cut off");
                            break End::Refused(err);
                        }
                        Err(err) => {
                            tracing::debug!(peer_id = peer.peer_id(), %err, "request refused");
                            let item = Ok(error_response(request.request_id, &err));
                            match send(&out, &peer, item).await {
                                Ok(()) => {}
                                Err(Undelivered::SlowConsumer) => break End::SlowConsumer,
                                Err(Undelivered::Gone) => break gone(&mut inbound).await,
                            }
                            continue;
                        }
                    }
                    let span = request_span(
                        Transport::Grpc,
                        method_name(request.request.as_ref()),
                        Some(peer.peer_id()),
                        &request.request_id,
                        &parent,
                    );
                    let handled = handle_request(&mut peer, request, &out)
                        .instrument(span)
                        .await;
                    match handled {
                        Ok(()) => {}
                        Err(Undelivered::SlowConsumer) => break End::SlowConsumer,
                        Err(Undelivered::Gone) => break gone(&mut inbound).await,
                    }
                }
                Ok(None) => break End::Clean,
                // The client cancelled its call (RST_STREAM CANCEL): it chose to go.
                Err(status) if status.code() == tonic::Code::Cancelled => break End::Clean,
                // A message too large to read: the stream cannot go on past it.
                Err(status) if is_oversized(&status) => {
                    let err = too_large_to_read(&core);
                    tracing::info!(peer_id = peer.peer_id(), %err, "stream cut off");
                    break End::Refused(err);
                }
                Err(status) => {
                    if let Some(err) = undecodable(&status) {
                        tracing::info!(peer_id = peer.peer_id(), %status, "undecodable request");
                        break End::Refused(err);
                    }
                    tracing::info!(peer_id = peer.peer_id(), %status, "signaling stream broke");
                    break End::Broken;
                }
            },
            notification = peer.next_notification() => {
                let Some(notification) = notification else {
                    break End::SlowConsumer;
                };
                let item = Ok(response(String::new(), Resp::Notification(notification)));
                match send(&out, &peer, item).await {
                    Ok(()) => {}
                    Err(Undelivered::SlowConsumer) => break End::SlowConsumer,
                    Err(Undelivered::Gone) => break gone(&mut inbound).await,
                }
            },
            () = shutdown.cancelled() => break End::ShuttingDown,
        }
    };
    // Whether the client ended the stream (it leaves) or not (it may resume).
    let clean = match end {
        End::Clean => true,
        End::Broken => false,
        End::SlowConsumer => {
            tracing::warn!(
                peer_id = peer.peer_id(),
                "client reads too slowly: stream ended, peer kept for a resume"
            );
            metrics().slow_consumers.with_label_values(&["grpc"]).inc();
            last_word.send(Err(SignalingError::SlowConsumer.into()));
            false
        }
        End::ShuttingDown => {
            last_word.send(Err(SignalingError::ShuttingDown.into()));
            !core.keeps_peers_on_shutdown()
        }
        End::Refused(err) => {
            last_word.send(Err(err.into()));
            true
        }
    };
    drop(out);
    // The stream's end in the client's trace too: it closes the server session.
    let method = if clean { "leave" } else { "detach" };
    let span = request_span(Transport::Grpc, method, Some(peer.peer_id()), "", &parent);
    if clean {
        peer.leave().instrument(span).await;
    } else {
        peer.detach().instrument(span).await;
    }
}

/// Reads the stream until its announce; `None` when the stream ended first. Before the
/// announce, `ListPeers` is answered (the lobby's peers) and `Disconnect` acknowledged and
/// ignored, as the original did (its clients send them first); an offer, answer or candidate
/// ends the stream with FAILED_PRECONDITION, as does anything the gate refuses.
async fn until_announce(
    core: &SignalingCore,
    inbound: &mut Streaming<SignalingRequest>,
    out: &ResponseSender,
    gate: &RequestGate,
    shutdown: &CancellationToken,
) -> Option<(String, pb::AnnounceRequest)> {
    // Until the first message arrives; then nothing more is waited for here.
    let mut first = core.first_message_timeout();
    loop {
        let deadline = first.take();
        let message = tokio::select! {
            message = inbound.message() => message,
            () = shutdown.cancelled() => return None,
            () = sleep_or_never(deadline) => {
                let err = SignalingError::FirstMessageTimeout(deadline.unwrap_or_default());
                crate::metrics::limit_hit(crate::metrics::Limit::FirstMessage, 1);
                tracing::info!(%err, "signaling stream closed");
                let _ = out.send(Err(err.into())).await;
                return None;
            }
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => return None,
            Err(status) if is_oversized(&status) => {
                let _ = out.send(Err(too_large_to_read(core).into())).await;
                return None;
            }
            Err(status) => {
                if let Some(err) = undecodable(&status) {
                    let _ = out.send(Err(err.into())).await;
                }
                return None;
            }
        };
        // Refused before the announce: the stream ends, whatever refused it.
        if let Err(err) = gate.admit(request.encoded_len()) {
            let _ = out.send(Err(err.into())).await;
            return None;
        }
        let request_id = request.request_id;
        let reply = match request.request {
            Some(Req::Announce(announce)) => return Some((request_id, announce)),
            Some(Req::ListPeers(_)) => {
                let peers = core.lobby_peers().await;
                response(
                    request_id,
                    Resp::PeerList(pb::PeerListResponse {
                        count: count(peers.len()),
                        peers,
                    }),
                )
            }
            // Nothing to end yet: acknowledged, so the client's call does not hang.
            Some(Req::Disconnect(disconnect)) => ack(
                request_id,
                "not announced: nothing to disconnect",
                json!({"peer_id": disconnect.peer_id}),
            ),
            None => error_response(request_id, &SignalingError::EmptyRequest),
            Some(Req::Offer(_) | Req::Answer(_) | Req::IceCandidate(_)) => {
                let _ = out.send(Err(SignalingError::AnnounceRequired.into())).await;
                return None;
            }
        };
        // A client that does not read holds up only its own stream, and not shutdown.
        let sent = tokio::select! {
            sent = out.send(Ok(reply)) => sent.is_ok(),
            () = shutdown.cancelled() => false,
        };
        if !sent {
            return None;
        }
    }
}

/// The span name of a request's method.
fn method_name(request: Option<&Req>) -> &'static str {
    match request {
        None => "empty",
        Some(Req::Announce(_)) => "announce",
        Some(Req::Offer(_)) => "offer",
        Some(Req::Answer(_)) => "answer",
        Some(Req::IceCandidate(_)) => "ice_candidate",
        Some(Req::Disconnect(_)) => "disconnect",
        Some(Req::ListPeers(_)) => "list_peers",
    }
}

/// Queues `item` for the client. While the queue is full (the client is not reading), the
/// wait ends when the bus cuts the peer off: a client that stopped reading holds up only
/// its own stream, and only until its mailbox overflows.
async fn send(out: &ResponseSender, peer: &ConnectedPeer, item: Item) -> Result<(), Undelivered> {
    let item = match out.try_send(item) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(Undelivered::Gone),
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    let mut check = tokio::time::interval(STALL_CHECK);
    loop {
        tokio::select! {
            permit = out.reserve() => {
                let permit = permit.map_err(|_| Undelivered::Gone)?;
                permit.send(item);
                return Ok(());
            }
            _ = check.tick() => {
                if peer.is_cut_off() {
                    return Err(Undelivered::SlowConsumer);
                }
            }
        }
    }
}

/// What tonic (0.14: codec/decode.rs, and tonic-prost's decode errors) says when a request
/// stream fails because of what the client sent rather than the transport.
const CLIENT_FAULTS: [&str; 5] = [
    "failed to decode Protobuf message",
    "decoded message length too large",
    "protocol error: received message with",
    "Unexpected EOF decoding stream",
    "Error decompressing",
];

/// The INVALID_ARGUMENT for a request that is not a gRPC-framed `SignalingRequest` (bad
/// framing, not protobuf, over the size limit); `None` for a transport failure.
fn undecodable(status: &Status) -> Option<SignalingError> {
    let client_fault = matches!(
        status.code(),
        tonic::Code::Internal | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    ) && CLIENT_FAULTS.iter().any(|m| status.message().contains(m));
    client_fault.then(|| {
        SignalingError::InvalidRequest(format!("undecodable request: {}", status.message()))
    })
}

/// The responses can no longer be sent: how did the client go?
async fn gone(inbound: &mut Streaming<SignalingRequest>) -> End {
    if ended_cleanly(inbound).await {
        End::Clean
    } else {
        End::Broken
    }
}

/// How long a stream whose responses can no longer be sent is given to show how it ended.
const END_PROBE: Duration = Duration::from_secs(1);

/// The responses can no longer be sent: the client went away. Whether it ended its call
/// (half-close or cancel: it leaves) or the connection broke (it may resume) shows on the
/// request side.
async fn ended_cleanly(inbound: &mut Streaming<SignalingRequest>) -> bool {
    loop {
        match tokio::time::timeout(END_PROBE, inbound.message()).await {
            // Requests still in flight are dropped: nothing can answer them.
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return true,
            Ok(Err(status)) => return status.code() == tonic::Code::Cancelled,
            Err(_) => return false,
        }
    }
}

/// Handles one request; `Err` means its answer could not be delivered.
async fn handle_request(
    peer: &mut ConnectedPeer,
    request: SignalingRequest,
    out: &ResponseSender,
) -> Result<(), Undelivered> {
    let request_id = request.request_id;
    let result: Result<Vec<Resp>, SignalingError> = match request.request {
        None => Err(SignalingError::EmptyRequest),
        Some(Req::Announce(_)) => Err(SignalingError::AlreadyAnnounced(peer.peer_id().into())),
        Some(Req::Offer(offer)) => match peer.offer(&offer.to_peer_id, &offer.sdp).await {
            Ok(OfferOutcome::Answered {
                offer_id,
                answer_sdp,
            }) => Ok(vec![
                Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::Answer(pb::AnswerNotification {
                        from_peer_id: SERVER_PEER_ID.into(),
                        sdp: answer_sdp,
                        r#type: "answer".into(),
                    })),
                }),
                ack_body(
                    "answer sent",
                    json!({"offer_id": offer_id, "to_peer_id": SERVER_PEER_ID, "answer_sent": true}),
                ),
            ]),
            Ok(OfferOutcome::Forwarded { offer_id }) => Ok(vec![ack_body(
                "offer forwarded",
                json!({"offer_id": offer_id, "to_peer_id": offer.to_peer_id}),
            )]),
            Err(err) => Err(err),
        },
        Some(Req::Answer(answer)) => peer
            .answer(&answer.to_peer_id, &answer.sdp, answer.offer_id.as_deref())
            .await
            .map(|()| {
                vec![ack_body(
                    "answer forwarded",
                    json!({"to_peer_id": answer.to_peer_id}),
                )]
            }),
        Some(Req::IceCandidate(ice)) => {
            let candidate = IceCandidate {
                candidate: ice.candidate,
                sdp_mid: ice.sdp_mid,
                sdp_mline_index: ice.sdp_mline_index,
            };
            peer.ice_candidate(&ice.to_peer_id, candidate)
                .await
                .map(|()| {
                    vec![ack_body(
                        "candidate delivered",
                        json!({"to_peer_id": ice.to_peer_id}),
                    )]
                })
        }
        Some(Req::Disconnect(disconnect)) => peer.disconnect(&disconnect.peer_id).await.map(|()| {
            vec![ack_body(
                "disconnected",
                json!({"peer_id": disconnect.peer_id}),
            )]
        }),
        Some(Req::ListPeers(_)) => {
            let peers = peer.peers().await;
            Ok(vec![Resp::PeerList(pb::PeerListResponse {
                count: count(peers.len()),
                peers,
            })])
        }
    };
    match result {
        Ok(responses) => {
            for body in responses {
                let request_id = match body {
                    Resp::Notification(_) => String::new(),
                    _ => request_id.clone(),
                };
                send(out, peer, Ok(response(request_id, body))).await?;
            }
        }
        Err(err) => {
            tracing::info!(peer_id = peer.peer_id(), request_id, %err, "request failed");
            send(out, peer, Ok(error_response(request_id, &err))).await?;
        }
    }
    Ok(())
}

/// The `ErrorResponse` of a failed request; the stream goes on.
fn error_response(request_id: String, err: &SignalingError) -> SignalingResponse {
    let error = pb::ErrorResponse {
        code: err.code() as u32,
        message: err.to_string(),
        details: String::new(),
    };
    response(request_id, Resp::Error(error))
}

/// Whether the inbound stream failed on a message above tonic's decoding limit (the hard
/// message limit): tonic reports that, and only that, as OUT_OF_RANGE.
fn is_oversized(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange
}

/// The error a message too large to read ends its stream with (counted).
fn too_large_to_read(core: &SignalingCore) -> SignalingError {
    crate::metrics::limit_hit(crate::metrics::Limit::SignalingMessageBytes, 1);
    SignalingError::MessageTooLargeToRead(core.hard_message_bytes())
}

fn response(request_id: String, body: Resp) -> SignalingResponse {
    SignalingResponse {
        request_id,
        response: Some(body),
    }
}

fn ack_body(message: &str, data: serde_json::Value) -> Resp {
    Resp::Ack(pb::AckResponse {
        message: message.into(),
        data: data.to_string(),
    })
}

fn ack(request_id: String, message: &str, data: serde_json::Value) -> SignalingResponse {
    response(request_id, ack_body(message, data))
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
