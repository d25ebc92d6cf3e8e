//! The shared UDP socket as webrtc-rs's mux sees it: a `Conn` whose receive path drops what
//! the [`UdpFilter`] refuses before the mux parses anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::IntCounter;
use tokio::net::UdpSocket;
use webrtc::util::Conn;

use super::{DropReason, UdpFilter, Verdict};
use crate::peer::metrics::metrics;

/// A UDP socket behind a [`UdpFilter`].
pub(crate) struct FilteredSocket {
    socket: UdpSocket,
    filter: Arc<UdpFilter>,
    /// `remotemedia_media_udp_dropped_total` by [`DropReason`], looked up once.
    dropped: [IntCounter; 4],
}

impl FilteredSocket {
    pub(crate) fn new(socket: UdpSocket, filter: Arc<UdpFilter>) -> Self {
        let dropped = DropReason::ALL
            .map(|reason| metrics().udp_dropped.with_label_values(&[reason.label()]));
        Self {
            socket,
            filter,
            dropped,
        }
    }

    fn count(&self, reason: DropReason) {
        let index = match reason {
            DropReason::UnknownUfrag => 0,
            DropReason::RateLimited => 1,
            DropReason::NotStun => 2,
            DropReason::Malformed => 3,
        };
        self.dropped[index].inc();
    }
}

#[async_trait]
impl Conn for FilteredSocket {
    async fn connect(&self, addr: SocketAddr) -> webrtc::util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    /// The mux reads with `recv_from` only; a connected socket has one peer, nothing to filter.
    async fn recv(&self, buf: &mut [u8]) -> webrtc::util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc::util::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.socket.recv_from(buf).await?;
            let datagram = buf.get(..len).unwrap_or_default();
            match self.filter.check(Instant::now(), from, datagram) {
                Verdict::Pass => return Ok((len, from)),
                Verdict::Drop(reason) => {
                    self.count(reason);
                    tracing::trace!(%from, reason = reason.label(), "UDP datagram dropped");
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc::util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc::util::Result<usize> {
        self.filter.sent_to(target);
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc::util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc::util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
