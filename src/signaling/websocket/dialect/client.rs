//! What `--mode websocket` says to a signaling server of each dialect, and how it reads
//! what the server sends. Reading is lenient (every dialect's names and fields are
//! understood whatever was announced): only what this peer sends has to fit the server.

use serde_json::{json, Value};

use super::{Dialect, DialectChoice};
use crate::signaling::error::jsonrpc;
use crate::signaling::session_host::IceCandidate;

/// A request to send: its method and params.
pub type Call = (&'static str, Value);

impl Dialect {
    /// The announce of server peer `me`: audio, video and data, metadata `type: server`.
    pub fn announce(self, me: &str) -> Call {
        let flags = json!({"audio": true, "video": true, "data": true});
        match self {
            Self::RemoteMedia => (
                "peer.announce",
                json!({"peer_id": me, "capabilities": flags, "metadata": {"type": "server"}}),
            ),
            Self::Original => (
                "peer.announce",
                json!({"peer_id": me, "capabilities": ["audio", "video", "data"], "user_data": {"type": "server"}}),
            ),
            Self::Node => ("announce", json!({"peer_id": me, "capabilities": flags})),
        }
    }

    /// `me`'s SDP answer to `to`'s offer.
    pub fn answer(self, me: &str, to: &str, sdp: &str) -> Call {
        match self {
            Self::RemoteMedia => ("peer.answer", json!({"to": to, "sdp": sdp})),
            Self::Original => ("peer.answer", json!({"from": me, "to": to, "sdp": sdp})),
            Self::Node => (
                "answer",
                json!({"to_peer_id": to, "sdp": sdp, "type": "answer"}),
            ),
        }
    }

    /// One of `me`'s ICE candidates for `to`.
    pub fn candidate(self, me: &str, to: &str, candidate: &IceCandidate) -> Call {
        let sdp_mid = (!candidate.sdp_mid.is_empty()).then_some(candidate.sdp_mid.as_str());
        let (line, text) = (candidate.sdp_mline_index, candidate.candidate.as_str());
        match self {
            Self::RemoteMedia => (
                "peer.ice_candidate",
                json!({"to": to, "candidate": text, "sdp_mid": sdp_mid, "sdp_mline_index": line}),
            ),
            Self::Original => (
                "peer.ice_candidate",
                json!({"from": me, "to": to, "candidate": text, "sdp_mid": sdp_mid, "sdp_m_line_index": line}),
            ),
            Self::Node => (
                "ice_candidate",
                json!({"to_peer_id": to, "candidate": text, "sdp_mid": sdp_mid, "sdp_mline_index": line}),
            ),
        }
    }

    /// Tells `to` that its session with this peer ended (`reason` where the dialect has one).
    pub fn disconnect(self, to: &str, reason: &str) -> Call {
        match self {
            Self::RemoteMedia => ("peer.disconnect", json!({"to": to})),
            // The in-process server notifies the peer named by `peer_id`.
            Self::Original => ("peer.disconnect", json!({"peer_id": to, "reason": reason})),
            Self::Node => ("disconnect", json!({"peer_id": to})),
        }
    }
}

/// A notification `--mode websocket` acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An offer to this peer. The original's servers give no `offer_id` (then empty).
    Offer {
        from: String,
        offer_id: String,
        sdp: String,
    },
    Candidate {
        from: String,
        candidate: IceCandidate,
    },
    /// `peer_id` ended its session with this peer.
    Disconnected { peer_id: String },
}

impl Incoming {
    /// Reads a notification of any dialect for peer `me`; `None` for the ones this peer does
    /// not act on (joins, leaves, state changes), and for messages addressed to another peer.
    pub fn read(method: &str, params: &Value, me: &str) -> Option<Self> {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|key| params.get(*key).and_then(Value::as_str))
                .map(str::to_owned)
        };
        // The original's `to`: its browser clients drop messages for someone else, and so
        // does this peer.
        if text(&["to"]).is_some_and(|to| to != me) {
            return None;
        }
        let from = || text(&["from", "from_peer_id"]);
        match method {
            "peer.offer" | "offer" => Some(Self::Offer {
                from: from()?,
                offer_id: text(&["offer_id"]).unwrap_or_default(),
                sdp: text(&["sdp"])?,
            }),
            "peer.ice_candidate" | "ice_candidate" => {
                let line = ["sdp_mline_index", "sdp_m_line_index"]
                    .iter()
                    .find_map(|key| params.get(*key).and_then(Value::as_u64))
                    .and_then(|line| u32::try_from(line).ok())
                    .unwrap_or(0);
                Some(Self::Candidate {
                    from: from()?,
                    candidate: IceCandidate {
                        candidate: text(&["candidate"])?,
                        sdp_mid: text(&["sdp_mid"]).unwrap_or_default(),
                        sdp_mline_index: line,
                    },
                })
            }
            // The in-process server names the receiver itself in `peer_id`: that says
            // nothing about whose session ended, so it is not acted on.
            "peer.disconnected" | "peer.disconnect" | "peer_disconnected" => {
                let peer_id = text(&["peer_id"])?;
                (peer_id != me).then_some(Self::Disconnected { peer_id })
            }
            _ => None,
        }
    }
}

/// The dialects `--mode websocket` tries, one announce after another, on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Negotiation {
    choice: DialectChoice,
    current: Dialect,
}

impl Negotiation {
    pub fn new(choice: DialectChoice) -> Self {
        let current = match choice {
            DialectChoice::Remotemedia => Dialect::RemoteMedia,
            DialectChoice::Node => Dialect::Node,
            // Every server of a `peer.*` dialect takes the original's shape (this one's
            // `/ws` too); the in-process original refuses ours without an error id.
            DialectChoice::Original | DialectChoice::Auto => Dialect::Original,
        };
        Self { choice, current }
    }

    /// The dialect to announce in (and, once announced, to speak).
    pub fn dialect(&self) -> Dialect {
        self.current
    }

    /// The announce was refused with JSON-RPC error `code`: the dialect to announce in
    /// next, if `auto` has one left.
    pub fn refused(&mut self, code: i64) -> Option<Dialect> {
        if self.choice != DialectChoice::Auto || self.current != Dialect::Original {
            return None;
        }
        let next = match i32::try_from(code).ok()? {
            jsonrpc::METHOD_NOT_FOUND => Dialect::Node,
            // A server of this dialect from before it took the original's shape.
            jsonrpc::INVALID_PARAMS => Dialect::RemoteMedia,
            _ => return None,
        };
        self.current = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_node_on_an_unknown_method() {
        let mut auto = Negotiation::new(DialectChoice::Auto);
        assert_eq!(auto.dialect().announce("b").0, "peer.announce");
        assert_eq!(auto.refused(-32601), Some(Dialect::Node));
        assert_eq!(auto.dialect().announce("b").0, "announce");
        assert_eq!(auto.refused(-32601), None, "nothing after node");

        let mut auto = Negotiation::new(DialectChoice::Auto);
        assert_eq!(auto.refused(-32602), Some(Dialect::RemoteMedia));
        assert_eq!(
            Negotiation::new(DialectChoice::Auto).refused(-32001),
            None,
            "an id in use is not a dialect problem"
        );
        assert_eq!(
            Negotiation::new(DialectChoice::Original).refused(-32601),
            None
        );
    }

    #[test]
    fn every_dialect_s_offer_and_candidate_read_the_same() {
        let offers = [
            (
                "peer.offer",
                json!({"from": "a", "offer_id": "o", "sdp": "v=0"}),
            ),
            ("peer.offer", json!({"from": "a", "to": "b", "sdp": "v=0"})),
            (
                "offer",
                json!({"from_peer_id": "a", "offer_id": "o", "sdp": "v=0", "type": "offer"}),
            ),
        ];
        for (method, params) in offers {
            let Some(Incoming::Offer { from, sdp, .. }) = Incoming::read(method, &params, "b")
            else {
                panic!("{method} {params} not read");
            };
            assert_eq!((from.as_str(), sdp.as_str()), ("a", "v=0"));
        }
        let candidate = json!({"from": "a", "to": "b", "candidate": "candidate:1", "sdp_mid": "0", "sdp_m_line_index": 2});
        let Some(Incoming::Candidate { candidate, .. }) =
            Incoming::read("peer.ice_candidate", &candidate, "b")
        else {
            panic!("candidate not read");
        };
        assert_eq!(candidate.sdp_mline_index, 2);
        let elsewhere = json!({"from": "a", "to": "c", "sdp": "v=0"});
        assert_eq!(Incoming::read("peer.offer", &elsewhere, "b"), None);
        let myself = json!({"peer_id": "b", "reason": null});
        assert_eq!(Incoming::read("peer.disconnected", &myself, "b"), None);
    }
}
