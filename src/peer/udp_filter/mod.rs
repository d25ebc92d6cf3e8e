//! The filter in front of the shared ICE UDP port (`--udp-port`). webrtc-rs's mux parses
//! every datagram from an unknown address as STUN and takes a lock to look its ufrag up;
//! this filter drops what cannot belong to a live session before that, cheaply:
//! - a datagram from an address that already belongs to a session passes at once (one hash
//!   lookup, no allocation);
//! - from any other address only a STUN check whose USERNAME names the local ufrag of a live
//!   session passes, and no more of them per source IP than the token bucket allows (a NAT
//!   may put many clients behind one IP: the defaults are generous);
//! - everything else from an unknown address is dropped and counted by reason.
//!
//! An address comes to belong to a session the way the mux learns it: when the session
//! first sends to it, which an ICE agent does only to answer a check it has authenticated.
//! So a flood of checks with a live ufrag but no password stays rate limited.
//!
//! Sessions register their local ufrag when they answer and unregister it when they close
//! ([`UfragRegistration`]).

mod conn;
mod rate;
mod stun;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

pub(crate) use conn::FilteredSocket;
pub(crate) use rate::RateLimit;
use rate::{SourceLimiter, MAX_SOURCES};
use stun::Datagram;

/// Remote addresses kept per session; a session that roams further forgets its oldest.
const MAX_ADDRESSES_PER_SESSION: usize = 16;
/// Checks passed to the mux and not yet answered, at most (then forgotten all at once: a
/// client whose check was forgotten sends another).
const MAX_PENDING: usize = 4096;

/// Why a datagram was dropped (the `reason` label of `remotemedia_media_udp_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// STUN naming no live session's ufrag (or no USERNAME at all).
    UnknownUfrag,
    /// A check for a live session, beyond its source IP's rate.
    RateLimited,
    /// Not STUN, from an address that belongs to no session.
    NotStun,
    /// STUN whose lengths or USERNAME do not add up.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        Self::UnknownUfrag,
        Self::RateLimited,
        Self::NotStun,
        Self::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownUfrag => "unknown_ufrag",
            Self::RateLimited => "rate_limited",
            Self::NotStun => "not_stun",
            Self::Malformed => "malformed",
        }
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Drop(DropReason),
}

/// Live sessions' ufrags and addresses, and the STUN rate per source (sans-IO: the caller
/// passes the time).
pub(crate) struct UdpFilter {
    state: Mutex<State>,
}

struct State {
    /// Live sessions' local ufrags and the remote addresses they were reached from.
    sessions: HashMap<Arc<str>, Vec<SocketAddr>>,
    /// Remote address → the ufrag of the session it belongs to.
    known: HashMap<SocketAddr, Arc<str>>,
    /// Checks passed to the mux, by address: the session that answers one learns it.
    pending: HashMap<SocketAddr, Arc<str>>,
    limiter: SourceLimiter,
}

impl UdpFilter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self::with_source_capacity(limit, MAX_SOURCES, now)
    }

    fn with_source_capacity(limit: RateLimit, sources: usize, now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                known: HashMap::new(),
                pending: HashMap::new(),
                limiter: SourceLimiter::new(limit, sources, now),
            }),
        }
    }

    /// Decides the fate of `datagram` from `from`.
    pub(crate) fn check(&self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Verdict {
        let mut state = self.state.lock();
        if let Some(owner) = state.known.get(&from) {
            // RTP, RTCP and DTLS fail `classify`'s first byte test: nothing more is read.
            // A check for another live session moves the address to it (a client reusing
            // its port for a new session while the old one closes).
            if let Datagram::Check { local_ufrag } = stun::classify(datagram) {
                if **owner != *local_ufrag {
                    if let Some((ufrag, _)) = state.sessions.get_key_value(local_ufrag) {
                        let ufrag = Arc::clone(ufrag);
                        state.expect_answer(from, ufrag);
                    }
                }
            }
            return Verdict::Pass;
        }
        let ufrag = match stun::classify(datagram) {
            Datagram::NotStun => return Verdict::Drop(DropReason::NotStun),
            Datagram::Malformed => return Verdict::Drop(DropReason::Malformed),
            Datagram::NoUsername => return Verdict::Drop(DropReason::UnknownUfrag),
            Datagram::Check { local_ufrag } => match state.sessions.get_key_value(local_ufrag) {
                Some((ufrag, _)) => Arc::clone(ufrag),
                None => return Verdict::Drop(DropReason::UnknownUfrag),
            },
        };
        if !state.limiter.allow(now, from.ip()) {
            return Verdict::Drop(DropReason::RateLimited);
        }
        state.expect_answer(from, ufrag);
        Verdict::Pass
    }

    /// The mux sends to `to`: if that answers a check, `to` now belongs to its session.
    pub(crate) fn sent_to(&self, to: SocketAddr) {
        let mut state = self.state.lock();
        if state.pending.is_empty() {
            return;
        }
        if let Some(ufrag) = state.pending.remove(&to) {
            state.learn(to, ufrag);
        }
    }

    /// Admits checks for `ufrag` until the registration is dropped.
    pub(crate) fn register(self: &Arc<Self>, ufrag: &str) -> UfragRegistration {
        let ufrag: Arc<str> = Arc::from(ufrag);
        self.state
            .lock()
            .sessions
            .insert(Arc::clone(&ufrag), Vec::new());
        UfragRegistration {
            filter: Arc::clone(self),
            ufrag,
        }
    }

    fn unregister(&self, ufrag: &str) {
        let mut state = self.state.lock();
        if let Some(addresses) = state.sessions.remove(ufrag) {
            for address in addresses {
                if state.known.get(&address).is_some_and(|u| &**u == ufrag) {
                    state.known.remove(&address);
                }
            }
        }
    }

    /// Live sessions and known addresses (for tests and logs).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.sessions.len(), state.known.len())
    }
}

impl State {
    fn expect_answer(&mut self, from: SocketAddr, ufrag: Arc<str>) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.pending.insert(from, ufrag);
    }

    /// `from` now belongs to `ufrag`'s session (and to no other), if that session lives.
    fn learn(&mut self, from: SocketAddr, ufrag: Arc<str>) {
        if !self.sessions.contains_key(&ufrag) {
            return;
        }
        if let Some(previous) = self.known.insert(from, Arc::clone(&ufrag)) {
            if let Some(addresses) = self.sessions.get_mut(&previous) {
                addresses.retain(|a| *a != from);
            }
        }
        if let Some(addresses) = self.sessions.get_mut(&ufrag) {
            if addresses.len() == MAX_ADDRESSES_PER_SESSION {
                let oldest = addresses.remove(0);
                self.known.remove(&oldest);
            }
            addresses.push(from);
        }
    }
}

/// A live session's ufrag; dropping it (the session closed, or failed to start) stops
/// admitting its checks and forgets its addresses.
pub(crate) struct UfragRegistration {
    filter: Arc<UdpFilter>,
    ufrag: Arc<str>,
}

impl Drop for UfragRegistration {
    fn drop(&mut self) {
        self.filter.unregister(&self.ufrag);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::stun::tests::binding_request;
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        rate: 1.0,
        burst: 3.0,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn checks_for_a_live_ufrag_pass_and_their_address_then_passes_anything() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let _session = filter.register("srv1");
        let client = addr("192.0.2.1:5000");
        assert_eq!(
            filter.check(now, client, b"\x16\xfe\xfd dtls"),
            Verdict::Drop(DropReason::NotStun),
            "DTLS before any check: the address belongs to no session yet"
        );
        assert_eq!(
            filter.check(now, client, &binding_request("srv1:cli1")),
            Verdict::Pass
        );
        assert_eq!(
            filter.check(now, client, b"\x16\xfe\xfd dtls"),
            Verdict::Drop(DropReason::NotStun),
            "a check the session has not answered teaches nothing"
        );
        filter.sent_to(addr("192.0.2.99:1"));
        filter.sent_to(client);
        assert_eq!(
            filter.check(now, client, b"\x16\xfe\xfd dtls"),
            Verdict::Pass
        );
        // Known addresses are not rate limited.
        for _ in 0..100 {
            assert_eq!(
                filter.check(now, client, &binding_request("srv1:cli1")),
                Verdict::Pass
            );
        }
    }

    #[test]
    fn junk_from_unknown_addresses_is_dropped_by_reason() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let _session = filter.register("srv1");
        let from = addr("198.51.100.7:4000");
        let cases: [(&[u8], DropReason); 4] = [
            (&binding_request("nope:cli"), DropReason::UnknownUfrag),
            (b"\x80\x6f random rtp-looking bytes", DropReason::NotStun),
            (&binding_request("srv1:cli")[..24], DropReason::Malformed),
            (
                &[
                    0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
                DropReason::UnknownUfrag,
            ),
        ];
        for (datagram, reason) in cases {
            assert_eq!(filter.check(now, from, datagram), Verdict::Drop(reason));
        }
        // None of it taught the filter an address or spent a token.
        assert_eq!(filter.sizes(), (1, 0));
        for _ in 0..3 {
            assert_eq!(
                filter.check(now, addr("198.51.100.7:4001"), &binding_request("srv1:c")),
                Verdict::Pass
            );
        }
    }

    #[test]
    fn checks_beyond_a_sources_rate_are_dropped() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let _session = filter.register("srv1");
        // Each from a new port of one IP: the addresses are new, the source is the same.
        let verdicts: Vec<Verdict> = (0..10)
            .map(|port| {
                let from = SocketAddr::new([203, 0, 113, 9].into(), 6000 + port);
                filter.check(now, from, &binding_request("srv1:c"))
            })
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Pass).count(), 3);
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Drop(DropReason::RateLimited))
                .count(),
            7
        );
        // Another IP has its own bucket; the first gets a token back after a second.
        let other = addr("203.0.113.10:6000");
        assert_eq!(
            filter.check(now, other, &binding_request("srv1:c")),
            Verdict::Pass
        );
        let later = now + Duration::from_secs(1);
        let again = addr("203.0.113.9:7000");
        assert_eq!(
            filter.check(later, again, &binding_request("srv1:c")),
            Verdict::Pass
        );
    }

    #[test]
    fn unanswered_checks_from_one_address_stay_rate_limited() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let _session = filter.register("srv1");
        // A flood naming a live ufrag without its password: the agent never answers.
        let from = addr("203.0.113.9:6000");
        let passed = (0..1000)
            .filter(|_| filter.check(now, from, &binding_request("srv1:x")) == Verdict::Pass)
            .count();
        assert_eq!(passed, 3);
        assert_eq!(filter.sizes(), (1, 0));
    }

    #[test]
    fn closing_a_session_forgets_its_ufrag_and_addresses() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let session = filter.register("srv1");
        let other = filter.register("srv2");
        let client = addr("192.0.2.1:5000");
        assert_eq!(
            filter.check(now, client, &binding_request("srv1:c")),
            Verdict::Pass
        );
        filter.sent_to(client);
        assert_eq!(filter.sizes(), (2, 1));
        drop(session);
        assert_eq!(filter.sizes(), (1, 0));
        assert_eq!(
            filter.check(now, client, b"\x80 rtp"),
            Verdict::Drop(DropReason::NotStun)
        );
        assert_eq!(
            filter.check(now, client, &binding_request("srv1:c")),
            Verdict::Drop(DropReason::UnknownUfrag)
        );
        drop(other);
        assert_eq!(filter.sizes(), (0, 0));
    }

    #[test]
    fn an_address_moves_to_the_session_that_last_claimed_it() {
        let now = Instant::now();
        let filter = Arc::new(UdpFilter::new(LIMIT, now));
        let first = filter.register("srv1");
        let _second = filter.register("srv2");
        let client = addr("192.0.2.1:5000");
        assert_eq!(
            filter.check(now, client, &binding_request("srv1:c")),
            Verdict::Pass
        );
        filter.sent_to(client);
        assert_eq!(
            filter.check(now, client, &binding_request("srv2:c")),
            Verdict::Pass
        );
        filter.sent_to(client);
        drop(first);
        assert_eq!(filter.check(now, client, b"\x80 rtp"), Verdict::Pass);
    }

    #[test]
    fn a_roaming_session_keeps_its_latest_addresses_only() {
        let now = Instant::now();
        let limit = RateLimit {
            rate: 1.0,
            burst: 100.0,
        };
        let filter = Arc::new(UdpFilter::new(limit, now));
        let _session = filter.register("srv1");
        for port in 0..40 {
            let from = SocketAddr::new([192, 0, 2, 1].into(), 5000 + port);
            assert_eq!(
                filter.check(now, from, &binding_request("srv1:c")),
                Verdict::Pass
            );
            filter.sent_to(from);
        }
        assert_eq!(filter.sizes(), (1, MAX_ADDRESSES_PER_SESSION));
        assert_eq!(
            filter.check(now, addr("192.0.2.1:5039"), b"\x80 rtp"),
            Verdict::Pass
        );
        assert_eq!(
            filter.check(now, addr("192.0.2.1:5000"), b"\x80 rtp"),
            Verdict::Drop(DropReason::NotStun)
        );
    }
}
