//! Which connections the client-facing listeners take, and whose they are: the cap on
//! connections per client address (`--max-connections-per-address`), the client address a
//! trusted proxy names (`--trusted-proxies`: a PROXY protocol header with
//! `--proxy-protocol`, or `X-Forwarded-For` for `/ws`), and the accept loop that applies
//! them to the gRPC signaling and HTTP listeners, with or without TLS.

mod cap;
mod incoming;
mod proxies;
mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::TcpStream;

pub use cap::{key, ConnectionCap, Full, Slot};
pub use incoming::{ClientAddr, Connection, Incoming};
pub use proxies::TrustedProxies;
pub use proxy_protocol::{read_header, ProxyHeaderError};

use crate::config::LimitOptions;
use crate::metrics::{limit_hit, Limit};

/// How long a connection from a trusted proxy may take to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections are logged at debug level each, and at warn level at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The admission rules of one process' client-facing listeners.
#[derive(Debug)]
pub struct Admission {
    cap: Arc<ConnectionCap>,
    trusted: TrustedProxies,
    proxy_protocol: bool,
    refusals: RefusalLog,
}

impl Admission {
    /// The rules `--max-connections-per-address`, `--trusted-proxies` and
    /// `--proxy-protocol` set.
    pub fn from_limits(limits: &LimitOptions) -> Arc<Self> {
        Arc::new(Self {
            cap: ConnectionCap::new(limits.max_connections_per_address),
            trusted: limits.trusted_proxies.clone().unwrap_or_default(),
            proxy_protocol: limits.proxy_protocol,
            refusals: RefusalLog::default(),
        })
    }

    /// Every connection taken, its address as the socket has it (internal listeners).
    pub fn open() -> Arc<Self> {
        Arc::new(Self {
            cap: ConnectionCap::new(0),
            trusted: TrustedProxies::default(),
            proxy_protocol: false,
            refusals: RefusalLog::default(),
        })
    }

    /// Whether a connection from `peer` must start with a PROXY header: with
    /// `--proxy-protocol`, one from a trusted proxy. Anyone else is a client of its own
    /// (kubelet's probes, a pod calling the Service), counted under its address; a header it
    /// sends is not read, so it cannot choose its key.
    pub fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        self.proxy_protocol && self.trusted.contains(peer)
    }

    /// A slot for a connection from `source` (the client's address); none for a trusted proxy
    /// (its connections carry many clients) or with the cap off.
    ///
    /// # Errors
    /// [`Full`], counted and logged.
    pub fn admit(&self, source: IpAddr) -> Result<Option<Slot>, Full> {
        if self.trusted.contains(source) {
            return Ok(None);
        }
        self.cap.acquire(source).inspect_err(|_| {
            limit_hit(Limit::ConnectionsPerAddress, 1);
            self.refusals
                .refused(source, "over --max-connections-per-address");
        })
    }

    /// `--max-connections-per-address`.
    pub fn max_per_address(&self) -> usize {
        self.cap.max()
    }

    /// For a `/ws` request or a `Signal` stream on a connection from `source`: a slot for
    /// the client that `forwarded` (the `X-Forwarded-For` values, in order) names when
    /// `source` is a trusted proxy (any other connection was counted when it was accepted).
    ///
    /// # Errors
    /// [`Full`], counted and logged.
    pub fn admit_forwarded<'a>(
        &self,
        source: IpAddr,
        forwarded: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Slot>, Full> {
        if !self.cap.is_on() || !self.trusted.contains(source) {
            return Ok(None);
        }
        match self.trusted.forwarded_client(forwarded) {
            Some(client) => self.admit(client),
            None => Ok(None),
        }
    }

    /// For a connection that [`Admission::expects_proxy_header`]: the client address its
    /// PROXY header names (or `peer` itself, for a LOCAL or UNKNOWN header), with its slot.
    /// `None`: refused (no valid header in time, or over the cap) and logged.
    pub async fn read_proxy_header(
        &self,
        tcp: &mut TcpStream,
        peer: SocketAddr,
    ) -> Option<(SocketAddr, Option<Slot>)> {
        let source = match tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_header(tcp)).await {
            Ok(Ok(source)) => source.unwrap_or(peer),
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "connection refused");
                self.refusals.refused(peer.ip(), "no valid PROXY header");
                return None;
            }
            Err(_) => {
                self.refusals.refused(peer.ip(), "no PROXY header in time");
                return None;
            }
        };
        let slot = self.admit(source.ip()).ok()?;
        Some((source, slot))
    }
}

/// Logs refused connections without letting a flood flood the log: each at debug level, and
/// at most one warning per [`WARN_EVERY`] with how many there were.
#[derive(Debug, Default)]
struct RefusalLog {
    /// When the last warning went out, and the refusals since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn refused(&self, address: IpAddr, reason: &'static str) {
        tracing::debug!(%address, reason, "connection refused");
        let mut state = self.state.lock();
        state.1 += 1;
        let now = Instant::now();
        if state
            .0
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            tracing::warn!(
                refused = state.1,
                %address,
                reason,
                "connections refused (one warning per {}s; each at debug level)",
                WARN_EVERY.as_secs()
            );
            *state = (Some(now), 0);
        }
    }
}
