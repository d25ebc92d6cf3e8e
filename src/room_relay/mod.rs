//! The relay between media workers that host one room (#16, DESIGN.md §3b): one relayed copy
//! of a track per remote worker, fan-out on the receiving worker.
//!
//! Each worker has one UDP socket for it ([`RelayEndpoint`], `--relay-port`: its own socket,
//! because the ICE port's filter drops anything that is not a known session). A *link* carries
//! one direction of one room between two workers: a link id, the sending worker's address and
//! an SRTP key of its own, agreed over the (TLS) worker API. A datagram is the 4-byte link id
//! followed by an SRTP or SRTCP packet (RFC 5761 demultiplexing), so a packet on the pod
//! network is neither readable nor injectable: one from an address that is not the link's
//! worker, or whose authentication tag does not verify, is dropped and counted
//! (`remotemedia_relay_packets_dropped_total{reason}`).
//!
//! Not yet: the worker API call that opens links, and the room wiring (a remote producer's
//! source fed by a link).

mod endpoint;
mod key;
pub mod metrics;

pub use endpoint::{RelayEndpoint, RelayPacket, RelaySender, LINK_QUEUE};
pub use key::RelayKey;

/// Why a relay link could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A key that is not a master key and salt of the relay's SRTP profile.
    #[error("relay key: {0}")]
    Key(String),
    /// The SRTP context refused the packet (too short, not RTP/RTCP).
    #[error("relay srtp: {0}")]
    Srtp(String),
    /// The relay socket failed.
    #[error("relay socket: {0}")]
    Io(#[from] std::io::Error),
    /// No link with this id is open here.
    #[error("relay link {0} is not open")]
    UnknownLink(u32),
}

#[cfg(test)]
mod endpoint_tests;
