//! A TCP proxy on loopback whose connections the test can cut, to break a client's signaling
//! stream the way a network failure does: the TCP connection ends under the HTTP/2 stream,
//! with no END_STREAM and no GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub address: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Proxies 127.0.0.1:<ephemeral> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                tracked.lock().push(task);
            }
        });
        Self {
            address,
            connections,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Breaks every proxied connection at once (both sides see a reset).
    pub fn cut(&self) {
        for task in self.connections.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A TCP proxy on loopback that can hold back what clients send by a set delay (what comes
/// back is not delayed), to make a server look slow to its callers: a call sent while the
/// delay is on reaches the server that much later. Its upstream is set after binding, so the
/// server can be told the proxy's address when it starts.
pub struct DelayProxy {
    pub address: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    delay: Arc<Mutex<std::time::Duration>>,
    accept: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let delay: Arc<Mutex<std::time::Duration>> = Arc::default();
        let (target, held) = (Arc::clone(&upstream), Arc::clone(&delay));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Some(upstream) = *target.lock() else {
                    continue;
                };
                tokio::spawn(proxy_delayed(client, upstream, Arc::clone(&held)));
            }
        });
        Self {
            address,
            upstream,
            delay,
            accept,
        }
    }

    pub fn point_to(&self, upstream: SocketAddr) {
        *self.upstream.lock() = Some(upstream);
    }

    /// What clients send from now on reaches the server `delay` later.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.delay.lock() = delay;
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_delayed(
    client: TcpStream,
    upstream: SocketAddr,
    delay: Arc<Mutex<std::time::Duration>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    // Each chunk carries the time it may go on; the writer keeps their order.
    let (chunks, mut due) = tokio::sync::mpsc::channel(1024);
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            let bytes: Vec<u8> = bytes;
            if server_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match client_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = tokio::time::Instant::now() + *delay.lock();
                if chunks.send((at, buffer[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(chunks);
    let _ = writer.await;
    back.abort();
}
