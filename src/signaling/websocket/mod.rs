//! The WebSocket transport of signaling for browsers: JSON-RPC 2.0 text frames at `/ws`, one
//! task per connection driving a [`ConnectedPeer`] as the gRPC stream does. The socket itself
//! is the only outbound queue (each send waits for the client), and the peer's mailbox is
//! bounded by the core, so a slow browser never grows memory.

mod methods;
mod origin;
mod rpc;

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use origin::OriginPolicy;

use super::auth::Identity;
use super::core::{ConnectedPeer, SignalingCore};
use super::error::{RpcError, SignalingError};
use super::spans::{request_span, websocket_method, Transport};
use crate::proto::signaling::SignalingNotification;
use crate::telemetry::{RemoteParent, TRACEPARENT, TRACESTATE};

/// Largest text frame answered; a larger one gets -32600 and the connection stays.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Messages above this are not even buffered: the connection is closed (1009).
const HARD_MESSAGE_BYTES: usize = 1024 * 1024;

/// The `/ws` endpoint's shared state.
#[derive(Clone)]
pub struct WebSocketSignaling {
    core: Arc<SignalingCore>,
    origins: Arc<OriginPolicy>,
    shutdown: CancellationToken,
    /// Open connections, so shutdown can wait for their close frames to go out.
    connections: TaskTracker,
}

impl WebSocketSignaling {
    pub fn new(
        core: Arc<SignalingCore>,
        origins: OriginPolicy,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            core,
            origins: Arc::new(origins),
            shutdown,
            connections: TaskTracker::new(),
        }
    }

    /// Waits until every connection has sent its close frame (call after cancelling).
    pub async fn closed(&self) {
        self.connections.close();
        self.connections.wait().await;
    }

    /// The axum handler of `GET /ws`.
    pub async fn upgrade(
        State(ws): State<Self>,
        Query(query): Query<UpgradeQuery>,
        headers: HeaderMap,
        upgrade: WebSocketUpgrade,
    ) -> Response {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let origin = text(header::ORIGIN);
        if !ws.origins.allows(origin, text(header::HOST)) {
            tracing::info!(?origin, "WebSocket upgrade refused: origin not allowed");
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
        if ws.shutdown.is_cancelled() {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
        }
        let protocols = text(header::SEC_WEBSOCKET_PROTOCOL);
        let bearer = query
            .access_token
            .as_deref()
            .or_else(|| protocols.and_then(protocol_token));
        // A refused browser only sees why in a message, so the socket opens to say it.
        let identity = ws.core.authenticate(bearer);
        let token = ws.connections.token();
        upgrade
            .protocols([PROTOCOL])
            .max_message_size(HARD_MESSAGE_BYTES)
            .max_frame_size(HARD_MESSAGE_BYTES)
            .on_upgrade(move |mut socket| async move {
                match identity {
                    Ok(identity) => run_connection(ws.core, identity, socket, ws.shutdown).await,
                    Err(err) => {
                        tracing::info!(%err, "WebSocket refused");
                        close(&mut socket, err, close_code::POLICY).await;
                    }
                }
                drop(token);
            })
    }
}

/// The subprotocol the server selects when a client offers it (a client that passes its
/// token as a subprotocol must offer this one too: browsers need one selected).
pub const PROTOCOL: &str = "remotemedia.v1";

/// Query parameters of `GET /ws`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct UpgradeQuery {
    /// The client's token when authentication is on.
    access_token: Option<String>,
}

/// The token of a `bearer.<token>` entry of `Sec-WebSocket-Protocol`.
fn protocol_token(protocols: &str) -> Option<&str> {
    protocols
        .split(',')
        .find_map(|protocol| protocol.trim().strip_prefix("bearer."))
}

/// What woke the connection's loop up besides a frame.
enum Wake {
    Notification(SignalingNotification),
    /// The core cut the mailbox off: the client reads too slowly.
    CutOff,
}

/// Reads frames until the client closes, the socket breaks, or the server shuts down.
async fn run_connection(
    core: Arc<SignalingCore>,
    identity: Identity,
    mut socket: WebSocket,
    shutdown: CancellationToken,
) {
    let mut peer: Option<ConnectedPeer> = None;
    // The trace context the client announced with: its requests continue that trace.
    let mut parent = RemoteParent::default();
    // Whether the client closed (it leaves) or the socket broke (it may resume).
    let clean = loop {
        let outgoing = tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => handle_text(&core, &identity, &mut peer, &mut parent, text.as_str()).await,
                Some(Ok(Message::Binary(_))) => Some(rpc::error(
                    Value::Null,
                    &RpcError::InvalidRequest("binary frames are not supported; send text".into()),
                )),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Close(_))) => break true,
                None => break false,
                Some(Err(err)) => {
                    tracing::info!(peer_id = peer.as_ref().map(ConnectedPeer::peer_id), %err, "WebSocket broke");
                    break false;
                }
            },
            wake = next_wake(&mut peer) => match wake {
                Wake::Notification(notification) => rpc::notification(notification),
                Wake::CutOff => {
                    close(&mut socket, SignalingError::SlowConsumer, close_code::POLICY).await;
                    break true;
                }
            },
            () = shutdown.cancelled() => {
                close(&mut socket, SignalingError::ShuttingDown, close_code::AWAY).await;
                break !core.keeps_peers_on_shutdown();
            }
        };
        if let Some(text) = outgoing {
            if socket.send(Message::Text(text.into())).await.is_err() {
                break false;
            }
        }
    };
    let Some(peer) = peer else { return };
    // The connection's end in the client's trace too: it closes the server session.
    let method = if clean { "leave" } else { "detach" };
    let span = request_span(
        Transport::WebSocket,
        method,
        Some(peer.peer_id()),
        "",
        &parent,
    );
    if clean {
        peer.leave().instrument(span).await;
    } else {
        peer.detach().instrument(span).await;
    }
}

/// The answer to one text frame; `None` for a JSON-RPC notification.
pub(crate) async fn handle_text(
    core: &Arc<SignalingCore>,
    identity: &Identity,
    peer: &mut Option<ConnectedPeer>,
    parent: &mut RemoteParent,
    text: &str,
) -> Option<String> {
    if text.len() > MAX_FRAME_BYTES {
        let err = RpcError::InvalidRequest(format!(
            "frame is {} bytes, the limit is {MAX_FRAME_BYTES}",
            text.len()
        ));
        return Some(rpc::error(Value::Null, &err));
    }
    let call = match rpc::parse(text) {
        Ok(call) => call,
        Err(rejected) => return Some(rpc::error(rejected.id, &rejected.error)),
    };
    let method = websocket_method(&call.method);
    // `traceparent` in the params: on `peer.announce` it holds for the whole connection;
    // on any other request, for that request.
    let own = RemoteParent::from_traceparent(
        call.params.get(TRACEPARENT).and_then(Value::as_str),
        call.params.get(TRACESTATE).and_then(Value::as_str),
    );
    if method == "announce" && peer.is_none() {
        *parent = own.clone();
    }
    let request_id = call.id.as_ref().map(Value::to_string).unwrap_or_default();
    let span = request_span(
        Transport::WebSocket,
        method,
        peer.as_ref().map(ConnectedPeer::peer_id),
        &request_id,
        if own.is_some() { &own } else { parent },
    );
    let outcome = methods::dispatch(core, identity, peer, &call.method, call.params)
        .instrument(span.clone())
        .await;
    if let Err(err) = &outcome {
        let peer_id = peer.as_ref().map(ConnectedPeer::peer_id);
        span.in_scope(|| tracing::info!(peer_id, method = call.method, %err, "request failed"));
    }
    let id = call.id?;
    Some(match outcome {
        Ok(result) => rpc::result(id, result),
        Err(err) => rpc::error(id, &err),
    })
}

async fn next_wake(peer: &mut Option<ConnectedPeer>) -> Wake {
    match peer {
        Some(peer) => match peer.next_notification().await {
            Some(notification) => Wake::Notification(notification),
            None => Wake::CutOff,
        },
        None => std::future::pending().await,
    }
}

/// Says why in a last error (id null), then sends the close frame.
async fn close(socket: &mut WebSocket, why: SignalingError, code: u16) {
    let message = why.to_string();
    let error = rpc::error(Value::Null, &RpcError::Signaling(why));
    let _ = socket.send(Message::Text(error.into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: message.into(),
        })))
        .await;
}
