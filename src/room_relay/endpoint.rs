//! The relay socket of a worker: links from other workers are accepted on it and packets to
//! them are sent from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::srtp::context::Context;

use prometheus::IntGauge;

use super::metrics::metrics;
use super::{RelayError, RelayKey};

/// Packets a link's receiver may fall behind before the relay drops (and counts) them: about a
/// second of a few relayed tracks.
pub const LINK_QUEUE: usize = 256;
/// Bytes of a link id before each SRTP/SRTCP packet.
const LINK_ID_LEN: usize = 4;
/// The largest datagram read (a longer one is cut and fails its tag).
const MAX_DATAGRAM: usize = 2048;
/// An RTP header without CSRCs.
const RTP_HEADER_LEN: usize = 12;

/// A packet that came over a link, authenticated and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayPacket {
    Rtp(Bytes),
    Rtcp(Bytes),
}

/// An open inbound link: who may send on it, and its key's verifying context.
struct Inbound {
    from: SocketAddr,
    srtp: Context,
    to_room: mpsc::Sender<RelayPacket>,
    /// What counts it: the links or the back channels gauge.
    gauge: &'static IntGauge,
}

type Links = Arc<Mutex<HashMap<u32, Inbound>>>;

/// A worker's relay socket and its inbound links. Dropping it stops its receive task.
pub struct RelayEndpoint {
    socket: Arc<UdpSocket>,
    links: Links,
    stop: CancellationToken,
}

impl RelayEndpoint {
    /// Binds the relay socket on `address` and starts receiving.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn bind(address: SocketAddr) -> Result<Self, RelayError> {
        let socket = Arc::new(UdpSocket::bind(address).await?);
        let links: Links = Arc::default();
        let stop = CancellationToken::new();
        tokio::spawn(receive_loop(
            Arc::clone(&socket),
            Arc::clone(&links),
            stop.clone(),
        ));
        Ok(Self {
            socket,
            links,
            stop,
        })
    }

    /// The socket's address (what the heartbeat advertises).
    ///
    /// # Errors
    /// When the socket has none.
    pub fn local_addr(&self) -> Result<SocketAddr, RelayError> {
        Ok(self.socket.local_addr()?)
    }

    /// Opens an inbound link from the worker at `from`, verified with `key`: its id (for the
    /// sending worker) and its packets, in a queue of [`LINK_QUEUE`].
    ///
    /// # Errors
    /// When the key makes no SRTP context.
    pub fn accept(
        &self,
        from: SocketAddr,
        key: &RelayKey,
    ) -> Result<(u32, mpsc::Receiver<RelayPacket>), RelayError> {
        self.accept_counted(from, key, &metrics().links_active)
    }

    /// [`accept`](Self::accept) for the back channel of a link this worker sends on
    /// (counted in `remotemedia_relay_back_channels_active`, not as a link).
    ///
    /// # Errors
    /// When the key makes no SRTP context.
    pub fn accept_back(
        &self,
        from: SocketAddr,
        key: &RelayKey,
    ) -> Result<(u32, mpsc::Receiver<RelayPacket>), RelayError> {
        self.accept_counted(from, key, &metrics().back_channels_active)
    }

    fn accept_counted(
        &self,
        from: SocketAddr,
        key: &RelayKey,
        gauge: &'static IntGauge,
    ) -> Result<(u32, mpsc::Receiver<RelayPacket>), RelayError> {
        let srtp = key.context()?;
        let (to_room, packets) = mpsc::channel(LINK_QUEUE);
        let mut links = self.links.lock();
        let mut rng = rand::rng();
        let link = loop {
            let id: u32 = rng.random();
            if id != 0 && !links.contains_key(&id) {
                break id;
            }
        };
        links.insert(
            link,
            Inbound {
                from,
                srtp,
                to_room,
                gauge,
            },
        );
        gauge.inc();
        Ok((link, packets))
    }

    /// Closes an inbound link; its packets are dropped as `unknown_link` from now on.
    pub fn close(&self, link: u32) -> bool {
        let closed = self.links.lock().remove(&link);
        if let Some(inbound) = &closed {
            inbound.gauge.dec();
        }
        closed.is_some()
    }

    /// Closes the inbound link `link` when the guard drops: for a link whose owner may end
    /// in many ways (the back channel of a link this worker sends on).
    pub fn close_on_drop(self: &Arc<Self>, link: u32) -> LinkGuard {
        LinkGuard {
            endpoint: Arc::downgrade(self),
            link,
        }
    }

    /// A sender on the link `link` that the worker at `to` accepted with `key`.
    ///
    /// # Errors
    /// When the key makes no SRTP context.
    pub fn sender(
        &self,
        link: u32,
        to: SocketAddr,
        key: &RelayKey,
    ) -> Result<RelaySender, RelayError> {
        Ok(RelaySender {
            socket: Arc::clone(&self.socket),
            to,
            link,
            srtp: key.context()?,
        })
    }
}

impl Drop for RelayEndpoint {
    fn drop(&mut self) {
        self.stop.cancel();
        for inbound in std::mem::take(&mut *self.links.lock()).into_values() {
            inbound.gauge.dec();
        }
    }
}

/// Closes an inbound link when dropped ([`RelayEndpoint::close_on_drop`]).
pub struct LinkGuard {
    endpoint: Weak<RelayEndpoint>,
    link: u32,
}

impl LinkGuard {
    /// The link's id.
    pub fn link(&self) -> u32 {
        self.link
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.close(self.link);
        }
    }
}

/// The sending end of one link: protects each packet with the link's key.
pub struct RelaySender {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    link: u32,
    srtp: Context,
}

impl RelaySender {
    /// Sends one RTP packet (marshalled) over the link.
    ///
    /// # Errors
    /// When it is no RTP packet or the socket fails.
    pub async fn send_rtp(&mut self, rtp: &[u8]) -> Result<(), RelayError> {
        let protected = self
            .srtp
            .encrypt_rtp(rtp)
            .map_err(|err| RelayError::Srtp(err.to_string()))?;
        send(&self.socket, self.to, self.link, &protected).await
    }

    /// Sends one RTCP packet (marshalled, compound or not) over the link.
    ///
    /// # Errors
    /// When it is no RTCP packet or the socket fails.
    pub async fn send_rtcp(&mut self, rtcp: &[u8]) -> Result<(), RelayError> {
        let protected = self
            .srtp
            .encrypt_rtcp(rtcp)
            .map_err(|err| RelayError::Srtp(err.to_string()))?;
        send(&self.socket, self.to, self.link, &protected).await
    }
}

/// Sends one protected packet on `link` (a free function: the SRTP context is not `Sync`, so
/// the future holds only the socket across its await and stays `Send`).
async fn send(
    socket: &UdpSocket,
    to: SocketAddr,
    link: u32,
    protected: &[u8],
) -> Result<(), RelayError> {
    let mut datagram = Vec::with_capacity(LINK_ID_LEN + protected.len());
    datagram.extend_from_slice(&link.to_be_bytes());
    datagram.extend_from_slice(protected);
    socket.send_to(&datagram, to).await?;
    metrics().packets.with_label_values(&["out"]).inc();
    metrics()
        .bytes
        .with_label_values(&["out"])
        .inc_by(datagram.len() as u64);
    Ok(())
}

async fn receive_loop(socket: Arc<UdpSocket>, links: Links, stop: CancellationToken) {
    let mut buffer = vec![0; MAX_DATAGRAM];
    loop {
        let (len, from) = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(err) => {
                    // ICMP port unreachable from a worker that went away, and the like.
                    tracing::debug!(%err, "relay socket receive failed");
                    continue;
                }
            },
        };
        let datagram = &buffer[..len];
        match receive(&links, datagram, from) {
            Ok(()) => {
                metrics().packets.with_label_values(&["in"]).inc();
                metrics()
                    .bytes
                    .with_label_values(&["in"])
                    .inc_by(len as u64);
            }
            Err(reason) => metrics().dropped.with_label_values(&[reason]).inc(),
        }
    }
}

/// Checks and decrypts one datagram and queues it on its link; else the drop reason.
fn receive(
    links: &Mutex<HashMap<u32, Inbound>>,
    datagram: &[u8],
    from: SocketAddr,
) -> Result<(), &'static str> {
    if datagram.len() < LINK_ID_LEN + RTP_HEADER_LEN {
        return Err("malformed");
    }
    let (id, packet) = datagram.split_at(LINK_ID_LEN);
    let link = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let mut links = links.lock();
    let Some(inbound) = links.get_mut(&link) else {
        return Err("unknown_link");
    };
    if inbound.from != from {
        return Err("unknown_source");
    }
    // RFC 5761: RTCP packet types 192..=223 sit where RTP has its marker and payload type.
    let relayed = if (192..=223).contains(&packet[1]) {
        inbound.srtp.decrypt_rtcp(packet).map(RelayPacket::Rtcp)
    } else {
        inbound.srtp.decrypt_rtp(packet).map(RelayPacket::Rtp)
    }
    .map_err(|_| "auth")?;
    inbound.to_room.try_send(relayed).map_err(|err| match err {
        mpsc::error::TrySendError::Full(_) => "queue_full",
        // The room let go of the link: as good as closed.
        mpsc::error::TrySendError::Closed(_) => "unknown_link",
    })
}
