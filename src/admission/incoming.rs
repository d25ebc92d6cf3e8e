//! The accepted connections of a listener: TCP_NODELAY, the PROXY header when configured,
//! the per-address cap, then the TLS handshake when configured. The accept loop only accepts
//! and counts; a PROXY header and a handshake are read in a task of their own with a
//! deadline, so a client that never speaks (a port scanner, a plaintext client on a TLS
//! port) costs one task for a while and blocks no one. A refused connection is closed at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{Admission, Slot};
use crate::tls::metrics::metrics;

/// A client that has not completed its handshake this long after connecting is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// PROXY headers and handshakes under way at once per listener; past that, accepting waits.
const MAX_HANDSHAKES: usize = 512;
/// Admitted connections waiting for the server to take them.
const READY_QUEUE: usize = 64;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Where an admitted connection is from: the client's address (what a trusted proxy's PROXY
/// header named, else the socket's peer). axum's `ConnectInfo` of the HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// One admitted connection; it holds its address' slot until dropped.
pub struct Connection {
    io: Io,
    local: SocketAddr,
    client: SocketAddr,
    _slot: Option<Slot>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The admitted connections of one listener. Serves as an axum `Listener` or, through
/// [`Incoming::into_stream`], as tonic's incoming stream.
pub struct Incoming {
    ready: mpsc::Receiver<Connection>,
    local: SocketAddr,
}

impl Incoming {
    /// Accepts on `listener` until `stop`, admitting by `admission`, with TLS when `tls` is
    /// set. `listener_name` labels `remotemedia_tls_handshakes_total`.
    pub fn spawn(
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        admission: Arc<Admission>,
        listener_name: &'static str,
        stop: CancellationToken,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let admitter = Arc::new(Admitter {
            local,
            tls: tls.map(TlsAcceptor::from),
            admission,
            listener_name,
            ready: tx,
        });
        tokio::spawn(admitter.accept_loop(listener, stop));
        Self { ready, local }
    }

    /// The connections as a stream of results, as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(self) -> impl Stream<Item = Result<Connection, io::Error>> + Send + 'static {
        use futures::StreamExt;
        ReceiverStream::new(self.ready).map(Ok)
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Connection;
    type Addr = ClientAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => {
                let client = ClientAddr(connection.client);
                (connection, client)
            }
            // The accept loop stopped (shutdown): no more connections, the server's own
            // graceful shutdown ends it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ClientAddr(self.local))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        *stream.remote_addr()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    /// `Request::remote_addr` is the client's address.
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.client),
        }
    }
}

/// What the accept loop and its handshake tasks share (not the listener: it closes when the
/// loop ends).
struct Admitter {
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
    admission: Arc<Admission>,
    listener_name: &'static str,
    ready: mpsc::Sender<Connection>,
}

impl Admitter {
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let this = self;
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (mut tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                () = this.ready.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!(listener = this.listener_name, %err, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Signaling messages are small and wait on each other: no Nagle.
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(listener = this.listener_name, %err, "TCP_NODELAY");
            }
            if this.admission.expects_proxy_header(peer.ip()) {
                let this = Arc::clone(&this);
                tokio::spawn(async move {
                    let Some((client, slot)) =
                        this.admission.read_proxy_header(&mut tcp, peer).await
                    else {
                        return;
                    };
                    this.finish(tcp, client, slot, permit).await;
                });
                continue;
            }
            // Counted here, before any task exists for it: a flood of refused connections
            // costs an accept and a close each.
            let Ok(slot) = this.admission.admit(peer.ip()) else {
                continue;
            };
            if this.tls.is_some() {
                let this = Arc::clone(&this);
                tokio::spawn(async move { this.finish(tcp, peer, slot, permit).await });
            } else {
                drop(permit);
                let connection = this.connection(Io::Plain(tcp), peer, slot);
                tokio::select! {
                    () = stop.cancelled() => return,
                    sent = this.ready.send(connection) => if sent.is_err() { return },
                }
            }
        }
    }

    /// Handshakes (with TLS) and hands the connection to the server.
    async fn finish(
        &self,
        tcp: TcpStream,
        client: SocketAddr,
        slot: Option<Slot>,
        _permit: OwnedSemaphorePermit,
    ) {
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some(acceptor) => {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let (io, result) = match handshake.await {
                    Ok(Ok(stream)) => (Some(Io::Tls(Box::new(stream))), "ok"),
                    Ok(Err(err)) => {
                        tracing::debug!(listener = self.listener_name, %client, %err, "TLS handshake failed");
                        (None, "failed")
                    }
                    Err(_) => {
                        tracing::debug!(listener = self.listener_name, %client, "TLS handshake timed out");
                        (None, "timeout")
                    }
                };
                metrics()
                    .tls_handshakes
                    .with_label_values(&[self.listener_name, result])
                    .inc();
                match io {
                    Some(io) => io,
                    None => return,
                }
            }
        };
        let _ = self.ready.send(self.connection(io, client, slot)).await;
    }

    fn connection(&self, io: Io, client: SocketAddr, slot: Option<Slot>) -> Connection {
        Connection {
            io,
            local: self.local,
            client,
            _slot: slot,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
