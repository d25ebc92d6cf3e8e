//! The spans of signaling requests, the same for both transports: one per request, named
//! after its method, a child of the client's trace context when it sent one. Fields carry
//! ids only, never SDP bodies, candidates or tokens.

use tracing::{info_span, Span};

use crate::telemetry::RemoteParent;

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Grpc,
    WebSocket,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::WebSocket => "jsonrpc",
        }
    }
}

/// The span of one request of `method` (a fixed name: `announce`, `offer`, ...).
pub(crate) fn request_span(
    transport: Transport,
    method: &'static str,
    peer_id: Option<&str>,
    request_id: &str,
    parent: &RemoteParent,
) -> Span {
    let span = info_span!(
        "signaling.request",
        otel.name = format!("signaling.{method}"),
        otel.kind = "server",
        rpc.system = transport.name(),
        rpc.method = method,
        peer_id,
        request_id,
    );
    parent.adopt(&span);
    span
}

/// A WebSocket method as a fixed span name (`unknown` for anything else: span names stay
/// bounded whatever clients send).
pub(crate) fn websocket_method(method: &str) -> &'static str {
    match method {
        // The original's Node signaling server's names too (the dialects of `/ws`).
        "peer.announce" | "announce" => "announce",
        "peer.offer" | "offer" => "offer",
        "peer.answer" | "answer" => "answer",
        "peer.ice_candidate" | "ice_candidate" => "ice_candidate",
        "peer.disconnect" | "disconnect" => "disconnect",
        "peer.list" | "list_peers" => "list_peers",
        "server.info" => "server_info",
        _ => "unknown",
    }
}
