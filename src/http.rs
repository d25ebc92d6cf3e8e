//! The HTTP listener: liveness and readiness probes, Prometheus metrics, and in `grpc` mode
//! the WebSocket signaling endpoint `/ws` and the demo page `/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;

use crate::signaling::WebSocketSignaling;

/// Whether this process takes new work; false while it shuts down.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves `router` on `listener` until `stop` fires (then finishes the requests in flight).
pub fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<(), crate::Error>> {
    // Signaling messages are small and latency-bound: Nagle would hold each answer and
    // candidate back until the previous segment is acknowledged.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on an HTTP connection: {e}");
        }
    });
    let server =
        axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::spawn(async move { server.await.map_err(crate::Error::Http) })
}

/// [`serve`] on admitted connections (the client-facing listener: the per-address cap, PROXY
/// headers, TLS when configured; TCP_NODELAY is set by the accept loop). Handlers see the
/// client's address as `ConnectInfo<ClientAddr>`.
pub fn serve_admitted(
    incoming: crate::admission::Incoming,
    router: Router,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<(), crate::Error>> {
    let app = router.into_make_service_with_connect_info::<crate::admission::ClientAddr>();
    let server =
        axum::serve(incoming, app).with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::spawn(async move { server.await.map_err(crate::Error::Http) })
}

/// The accepted connections of a gRPC listener, with TCP_NODELAY set on each (signaling and
/// worker RPCs are small messages waiting on each other; Nagle adds tens of milliseconds).
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// `/healthz` answers while the process runs; `/readyz` only while it takes new sessions;
/// `/metrics` is the Prometheus exposition. With `signaling`, also `/ws` and the demo page.
pub fn router(readiness: Readiness, signaling: Option<WebSocketSignaling>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|| async { crate::metrics::metrics().render() }),
        )
        .with_state(readiness);
    let Some(signaling) = signaling else {
        return probes;
    };
    probes
        .route(
            "/",
            get(|| async { page(DEMO_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(DEMO_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/room.js",
            get(|| async { page(DEMO_ROOM_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(DEMO_CSS, "text/css; charset=utf-8") }),
        )
        .merge(
            Router::new()
                .route("/ws", get(WebSocketSignaling::upgrade))
                .with_state(signaling),
        )
}

// The demo page is compiled in, so the binary needs no files and no Node build step.
const DEMO_HTML: &str = include_str!("../web/index.html");
const DEMO_JS: &str = include_str!("../web/app.js");
/// The page in a room (tiles, server offers, the room channel); uses app.js's helpers.
const DEMO_ROOM_JS: &str = include_str!("../web/room.js");
const DEMO_CSS: &str = include_str!("../web/style.css");

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
