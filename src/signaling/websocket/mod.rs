//! The WebSocket transport of signaling for browsers: JSON-RPC 2.0 text frames at `/ws`, one
//! task per connection driving a [`ConnectedPeer`] as the gRPC stream does. The socket itself
//! is the only outbound queue (each send waits for the client), and the peer's mailbox is
//! bounded by the core, so a slow browser never grows memory. A send that waits gives up
//! when the core cuts the peer off, so a client that stopped reading holds up only itself.

pub mod dialect;
mod methods;
mod origin;
mod rpc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use origin::OriginPolicy;

use super::auth::Identity;
use super::core::{sleep_or_never, ConnectedPeer, SignalingCore};
use super::error::{RpcError, SignalingError};
use super::rate_limit::RequestGate;
use super::spans::{request_span, websocket_method, Transport};
use crate::admission::ClientAddr;
use crate::proto::signaling::SignalingNotification;
use crate::telemetry::{RemoteParent, TRACEPARENT, TRACESTATE};
use dialect::Dialect;

/// How often a send that waits for the client checks whether the core cut the peer off.
const STALL_CHECK: Duration = Duration::from_millis(250);
/// The last error and close frame are given this long to go out to a client that may not
/// be reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The `/ws` endpoint's shared state.
#[derive(Clone)]
pub struct WebSocketSignaling {
    core: Arc<SignalingCore>,
    origins: Arc<OriginPolicy>,
    shutdown: CancellationToken,
    /// Open connections, so shutdown can wait for their close frames to go out.
    connections: TaskTracker,
    /// The per-address cap, for clients behind a trusted proxy's `X-Forwarded-For`.
    admission: Option<Arc<crate::admission::Admission>>,
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
            admission: None,
        }
    }

    /// Caps `/ws` connections per client address behind trusted proxies (others are capped
    /// when their connection is accepted).
    pub fn with_admission(mut self, admission: Arc<crate::admission::Admission>) -> Self {
        self.admission = Some(admission);
        self
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
        client: Option<Extension<ConnectInfo<ClientAddr>>>,
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
        // Held for the life of the socket.
        let slot = match (&ws.admission, client) {
            (Some(admission), Some(Extension(ConnectInfo(ClientAddr(source))))) => {
                let forwarded = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|value| value.to_str().ok());
                match admission.admit_forwarded(source.ip(), forwarded) {
                    Ok(slot) => slot,
                    Err(_) => {
                        return (
                            StatusCode::TOO_MANY_REQUESTS,
                            "too many connections from your address\n",
                        )
                            .into_response()
                    }
                }
            }
            _ => None,
        };
        let protocols = text(header::SEC_WEBSOCKET_PROTOCOL);
        let bearer = query
            .access_token
            .as_deref()
            .or_else(|| protocols.and_then(protocol_token));
        // A refused browser only sees why in a message, so the socket opens to say it.
        let identity = ws.core.authenticate(bearer);
        let token = ws.connections.token();
        // Frames above `--max-message-bytes` are answered with -32600; above the hard limit
        // they are not even buffered: the connection is closed (1009).
        let hard = ws.core.hard_message_bytes();
        upgrade
            .protocols([PROTOCOL])
            .max_message_size(hard)
            .max_frame_size(hard)
            .on_upgrade(move |mut socket| async move {
                match identity {
                    Ok(identity) => run_connection(ws.core, identity, socket, ws.shutdown).await,
                    Err(err) => {
                        tracing::info!(%err, "WebSocket refused");
                        close(&mut socket, err, close_code::POLICY).await;
                    }
                }
                drop(token);
                drop(slot);
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
    let mut connection = Connection::default();
    let gate = core.request_gate();
    // Until the first frame arrives (`None` after it, or when there is no deadline).
    let first_deadline = core.first_message_timeout();
    let first_message = sleep_or_never(first_deadline);
    tokio::pin!(first_message);
    let mut silent = first_deadline.is_some();
    // Whether the client closed (it leaves) or the socket broke (it may resume).
    let clean = 'serve: loop {
        let outgoing = tokio::select! {
            () = &mut first_message, if silent => {
                let err = SignalingError::FirstMessageTimeout(first_deadline.unwrap_or_default());
                crate::metrics::limit_hit(crate::metrics::Limit::FirstMessage, 1);
                tracing::info!(%err, "WebSocket closed");
                close(&mut socket, err, close_code::POLICY).await;
                break true;
            }
            frame = socket.recv() => match heard(&mut silent, frame) {
                Some(Ok(Message::Text(text))) => match admit(&gate, text.as_str()) {
                    Admission::Handle => handle_text(&core, &identity, &mut connection, text.as_str()).await,
                    Admission::Refuse(answer) => answer.into(),
                    Admission::CutOff(err) => {
                        tracing::info!(peer_id = connection.peer_id(), %err, "WebSocket cut off");
                        close(&mut socket, err, close_code::POLICY).await;
                        break true;
                    }
                },
                Some(Ok(Message::Binary(data))) => match gate.admit(data.len()) {
                    Err(err) if err.ends_stream() => {
                        close(&mut socket, err, close_code::POLICY).await;
                        break true;
                    }
                    Err(err) => Some(rpc::error(Value::Null, &RpcError::Signaling(err))).into(),
                    Ok(()) => Some(rpc::error(
                        Value::Null,
                        &RpcError::InvalidRequest("binary frames are not supported; send text".into()),
                    )).into(),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Frames::default(),
                Some(Ok(Message::Close(_))) => break true,
                None => break false,
                Some(Err(err)) if is_oversized(&err) => {
                    crate::metrics::limit_hit(crate::metrics::Limit::SignalingMessageBytes, 1);
                    let err = SignalingError::MessageTooLargeToRead(core.hard_message_bytes());
                    tracing::info!(peer_id = connection.peer_id(), %err, "WebSocket cut off");
                    close(&mut socket, err, close_code::SIZE).await;
                    break true;
                }
                Some(Err(err)) => {
                    tracing::info!(peer_id = connection.peer_id(), %err, "WebSocket broke");
                    break false;
                }
            },
            wake = next_wake(&mut connection.peer) => match wake {
                Wake::Notification(notification) => connection.notification(notification).into(),
                Wake::CutOff => {
                    // Kept for a resume, as a broken connection is: the client missed
                    // notifications, not its call.
                    count_slow_consumer(connection.peer.as_ref());
                    close(&mut socket, SignalingError::SlowConsumer, close_code::POLICY).await;
                    break false;
                }
            },
            () = shutdown.cancelled() => {
                close(&mut socket, SignalingError::ShuttingDown, close_code::AWAY).await;
                break !core.keeps_peers_on_shutdown();
            }
        };
        for text in outgoing {
            match send_text(&mut socket, text, connection.peer.as_ref()).await {
                Sent::Delivered => {}
                Sent::Gone => break 'serve false,
                Sent::CutOff => {
                    // The client is not reading: no close handshake to wait for.
                    count_slow_consumer(connection.peer.as_ref());
                    break 'serve false;
                }
            }
        }
    };
    let Connection { peer, parent, .. } = connection;
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

/// Any frame is the connection's first message: the first-message deadline no longer runs.
fn heard<T>(silent: &mut bool, frame: T) -> T {
    *silent = false;
    frame
}

/// What a connection keeps between text frames.
#[derive(Default)]
pub(crate) struct Connection {
    /// `None` until an announce succeeds.
    pub peer: Option<ConnectedPeer>,
    /// The trace context the client announced with: its requests continue that trace.
    pub parent: RemoteParent,
    /// The dialect the client announced in; until then, each request's own.
    pub dialect: Option<Dialect>,
}

impl Connection {
    fn peer_id(&self) -> Option<&str> {
        self.peer.as_ref().map(ConnectedPeer::peer_id)
    }

    /// A notification for this client, in its dialect.
    fn notification(&self, notification: SignalingNotification) -> Option<String> {
        let me = self.peer_id().unwrap_or_default();
        let (method, params) = self
            .dialect
            .unwrap_or_default()
            .notification(notification, me)?;
        Some(rpc::notification(method, params))
    }
}

/// What one text frame makes the connection send, in order.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The answer; `None` for a JSON-RPC notification (no `id`).
    pub reply: Option<String>,
    /// A notification that follows it (the Node dialect's `answer` after an offer to the
    /// server: it comes whether or not the request had an id).
    pub then: Option<String>,
}

impl From<Option<String>> for Frames {
    fn from(reply: Option<String>) -> Self {
        Self { reply, then: None }
    }
}

impl IntoIterator for Frames {
    type Item = String;
    type IntoIter = std::iter::Chain<std::option::IntoIter<String>, std::option::IntoIter<String>>;

    fn into_iter(self) -> Self::IntoIter {
        self.reply.into_iter().chain(self.then)
    }
}

/// The frames one text frame is answered with.
pub(crate) async fn handle_text(
    core: &Arc<SignalingCore>,
    identity: &Identity,
    connection: &mut Connection,
    text: &str,
) -> Frames {
    let call = match rpc::parse(text) {
        Ok(call) => call,
        Err(rejected) => return Some(rpc::error(rejected.id, &rejected.error)).into(),
    };
    let method = websocket_method(&call.method);
    // `traceparent` in the params: on an announce it holds for the whole connection; on
    // any other request, for that request.
    let own = RemoteParent::from_traceparent(
        call.params.get(TRACEPARENT).and_then(Value::as_str),
        call.params.get(TRACESTATE).and_then(Value::as_str),
    );
    if method == "announce" && connection.peer.is_none() {
        connection.parent = own.clone();
    }
    let request_id = call.id.as_ref().map(Value::to_string).unwrap_or_default();
    let span = request_span(
        Transport::WebSocket,
        method,
        connection.peer_id(),
        &request_id,
        if own.is_some() {
            &own
        } else {
            &connection.parent
        },
    );
    let outcome = methods::dispatch(core, identity, connection, &call.method, call.params)
        .instrument(span.clone())
        .await;
    if let Err(err) = &outcome {
        let peer_id = connection.peer_id();
        span.in_scope(|| tracing::info!(peer_id, method = call.method, %err, "request failed"));
    }
    match (call.id, outcome) {
        (id, Ok(reply)) => Frames {
            reply: id.map(|id| rpc::result(id, reply.result)),
            then: reply
                .then
                .map(|(method, params)| rpc::notification(method, params)),
        },
        (Some(id), Err(err)) => Some(rpc::error(id, &err)).into(),
        (None, Err(_)) => Frames::default(),
    }
}

/// What to do with a text frame, by the connection's [`RequestGate`].
enum Admission {
    Handle,
    /// Refused; the answer, if the request wants one (it has an id).
    Refuse(Option<String>),
    /// The client is flooding: close the socket.
    CutOff(SignalingError),
}

fn admit(gate: &RequestGate, text: &str) -> Admission {
    match gate.admit(text.len()) {
        Ok(()) => Admission::Handle,
        Err(err) if err.ends_stream() => Admission::CutOff(err),
        // Too large: not even parsed, so the answer has no id.
        Err(err @ SignalingError::MessageTooLarge { .. }) => {
            Admission::Refuse(Some(rpc::error(Value::Null, &RpcError::Signaling(err))))
        }
        // Too fast: answered under the request's id, so the client's call fails, not hangs.
        Err(err) => {
            let id = match rpc::parse(text) {
                Ok(call) => call.id,
                Err(rejected) => Some(rejected.id),
            };
            Admission::Refuse(id.map(|id| rpc::error(id, &RpcError::Signaling(err))))
        }
    }
}

/// Whether the socket failed on a frame above the hard message limit.
fn is_oversized(err: &axum::Error) -> bool {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    err.source()
        .and_then(|source| source.downcast_ref::<WsError>())
        .is_some_and(|err| matches!(err, WsError::Capacity(_)))
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

/// What became of a frame.
enum Sent {
    Delivered,
    /// The socket broke.
    Gone,
    /// The client stopped reading until the core cut its peer off.
    CutOff,
}

/// Sends one text frame; while the client does not take it, gives up once the core has cut
/// the peer off (its mailbox overflowed meanwhile).
async fn send_text(socket: &mut WebSocket, text: String, peer: Option<&ConnectedPeer>) -> Sent {
    let send = socket.send(Message::Text(text.into()));
    tokio::pin!(send);
    let mut check = tokio::time::interval(STALL_CHECK);
    loop {
        tokio::select! {
            sent = &mut send => return if sent.is_ok() { Sent::Delivered } else { Sent::Gone },
            _ = check.tick() => {
                if peer.is_some_and(ConnectedPeer::is_cut_off) {
                    return Sent::CutOff;
                }
            }
        }
    }
}

fn count_slow_consumer(peer: Option<&ConnectedPeer>) {
    tracing::warn!(
        peer_id = peer.map(ConnectedPeer::peer_id),
        "client reads too slowly: connection ended, peer kept for a resume"
    );
    crate::signaling::metrics::metrics()
        .slow_consumers
        .with_label_values(&["websocket"])
        .inc();
}

/// Says why in a last error (id null), then sends the close frame; gives up after
/// [`CLOSE_TIMEOUT`] (a client that does not read would hold the connection's task).
async fn close(socket: &mut WebSocket, why: SignalingError, code: u16) {
    let message = why.to_string();
    let error = rpc::error(Value::Null, &RpcError::Signaling(why));
    let frames = async {
        socket.send(Message::Text(error.into())).await?;
        socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: message.into(),
            })))
            .await
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, frames).await;
}
