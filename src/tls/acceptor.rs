//! The accepted, handshaken connections of a TLS listener. The accept loop only accepts;
//! each handshake runs in its own task with a deadline, so a client that never speaks TLS
//! (a plaintext gRPC client, a port scanner) costs one task for a while and blocks no one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::metrics::metrics;

/// A client that has not completed its handshake this long after connecting is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once per listener; past that, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 512;
/// Handshaken connections waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections of one TLS listener, handshake done. Serves as an axum `Listener` (HTTPS)
/// or, through [`TlsIncoming::into_stream`], as tonic's incoming stream.
pub struct TlsIncoming {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// Accepts on `listener` (TCP_NODELAY on each connection) until `stop`, with `config`.
    /// `listener_name` labels `remotemedia_tls_handshakes_total`.
    pub fn spawn(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        listener_name: &'static str,
        stop: CancellationToken,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            listener_name,
            tx,
            stop,
        ));
        Self { ready, local }
    }

    /// The connections as a stream of results, as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(
        self,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        use futures::StreamExt;
        ReceiverStream::new(self.ready).map(|(stream, _)| Ok(stream))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): no more connections, the server's own
            // graceful shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    listener_name: &'static str,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (tcp, remote) = tokio::select! {
            () = stop.cancelled() => return,
            () = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(listener = listener_name, %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Signaling messages are small and wait on each other: no Nagle.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(listener = listener_name, %err, "TCP_NODELAY");
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, remote)).await;
                    "ok"
                }
                Ok(Err(err)) => {
                    tracing::debug!(listener = listener_name, %remote, %err, "TLS handshake failed");
                    "failed"
                }
                Err(_) => {
                    tracing::debug!(listener = listener_name, %remote, "TLS handshake timed out");
                    "timeout"
                }
            };
            metrics()
                .tls_handshakes
                .with_label_values(&[listener_name, result])
                .inc();
        });
    }
}
