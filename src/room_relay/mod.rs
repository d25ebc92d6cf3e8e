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
//! A room's hosting workers list their published tracks in the room's record
//! (`tracks:<worker>`, [`RelayedTrack`]); a worker whose participants subscribe to another
//! worker's tracks accepts a link and asks that worker to send them over it (worker API
//! `OpenRelay`/`UpdateRelay`/`CloseRelay`); the room wiring is `peer/room_relay_link.rs`,
//! the cluster side `cluster/room_span.rs`.
//!
//! Each link has a back channel, B to A, with its own link id and key (drawn by A,
//! returned by `OpenRelay`): RTCP flows both ways. A sends sender reports on every link
//! twice a second, B answers with receiver reports, and either end gives up on a silent
//! link ([`liveness`]).
//!
//! Not yet: PLI/FIR and NACK over the back channel, simulcast layers on demand, active
//! speakers and room pipelines across workers.

mod endpoint;
mod key;
pub mod liveness;
pub mod metrics;
mod track;

pub use endpoint::{LinkGuard, RelayEndpoint, RelayPacket, RelaySender, LINK_QUEUE};
pub use key::RelayKey;
pub use track::{parse_tracks, relay_ssrc, RelayedCodec, RelayedTrack};

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
    /// This worker has no relay socket (`--relay-port`).
    #[error("this worker has no relay socket")]
    NoRelay,
    /// The other worker refused the link or could not be reached.
    #[error("relay call to {worker}: {message}")]
    Call { worker: String, message: String },
}

#[cfg(test)]
mod endpoint_tests;
