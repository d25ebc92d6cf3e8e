//! What `/ws` writes, in the dialect the client announced in ([`super::requests::of_announce`]),
//! and before that in the dialect of each request: results, and notifications.

use serde_json::{json, Value};

use super::{capabilities_object, capability_names, Dialect};
use crate::proto::signaling::{
    self as pb, signaling_notification::Notification, PeerInfo, PeerState, SignalingNotification,
};
use crate::signaling::core::OfferOutcome;

/// What a request came to, for the dialect to put into words.
#[derive(Debug)]
pub enum Outcome {
    /// The announce acknowledgement (`peer_id`, `peers_count`, `other_peers`, …).
    Announced(Value),
    Offered {
        to: String,
        outcome: OfferOutcome,
    },
    /// An answer or candidate went to `to`.
    Sent {
        to: String,
    },
    /// `peer_id` as the client named it.
    Disconnected {
        peer_id: String,
    },
    Peers(Vec<PeerInfo>),
    Info(Value),
}

/// A result, and the notification that follows it, if any.
#[derive(Debug)]
pub struct Reply {
    pub result: Value,
    /// `(method, params)`: the Node dialect's `answer` after an offer to the server (its
    /// clients only read answers from notifications).
    pub then: Option<(&'static str, Value)>,
}

impl From<Value> for Reply {
    fn from(result: Value) -> Self {
        Self { result, then: None }
    }
}

impl Dialect {
    /// Whether a disconnect from a peer that is not there is still acknowledged (both
    /// original servers did; this one answers -32000).
    pub fn acks_every_disconnect(self) -> bool {
        self != Self::RemoteMedia
    }

    /// The result of a request of client `me` in this dialect.
    pub fn result(self, outcome: Outcome, me: Option<&str>) -> Reply {
        use Dialect::{Node, Original, RemoteMedia};
        match (self, outcome) {
            (Original, Outcome::Announced(mut ack)) => {
                ack["success"] = json!(true);
                ack.into()
            }
            (_, Outcome::Announced(ack)) | (_, Outcome::Info(ack)) => ack.into(),
            (dialect, Outcome::Offered { to, outcome }) => match (dialect, outcome) {
                (
                    RemoteMedia,
                    OfferOutcome::Answered {
                        offer_id,
                        answer_sdp,
                    },
                ) => json!({"offer_id": offer_id, "type": "answer", "sdp": answer_sdp}).into(),
                (
                    Original,
                    OfferOutcome::Answered {
                        offer_id,
                        answer_sdp,
                    },
                ) => json!({"offer_id": offer_id, "type": "answer", "sdp": answer_sdp,
                            "from": to, "to": me})
                .into(),
                (
                    Node,
                    OfferOutcome::Answered {
                        offer_id,
                        answer_sdp,
                    },
                ) => Reply {
                    result: json!({"offer_id": offer_id, "to_peer_id": to}),
                    then: Some((
                        "answer",
                        json!({"from_peer_id": to, "sdp": answer_sdp, "type": "answer"}),
                    )),
                },
                (RemoteMedia, OfferOutcome::Forwarded { offer_id }) => {
                    json!({"offer_id": offer_id}).into()
                }
                (Original, OfferOutcome::Forwarded { offer_id }) => {
                    json!({"success": true, "offer_id": offer_id, "to_peer_id": to}).into()
                }
                (Node, OfferOutcome::Forwarded { offer_id }) => {
                    json!({"offer_id": offer_id, "to_peer_id": to}).into()
                }
            },
            (RemoteMedia, Outcome::Sent { .. } | Outcome::Disconnected { .. }) => json!({}).into(),
            (Original, Outcome::Sent { to }) => json!({"success": true, "to_peer_id": to}).into(),
            (Node, Outcome::Sent { to }) => json!({"to_peer_id": to}).into(),
            (Original, Outcome::Disconnected { peer_id }) => {
                json!({"success": true, "peer_id": peer_id}).into()
            }
            (Node, Outcome::Disconnected { peer_id }) => json!({"peer_id": peer_id}).into(),
            (dialect, Outcome::Peers(peers)) => {
                let peers: Vec<Value> = peers.iter().map(|p| dialect.peer(p)).collect();
                json!({"count": peers.len(), "peers": peers}).into()
            }
        }
    }

    /// One entry of a peer list. The Node server listed `{peer_id, capabilities, state}`,
    /// a subset of this server's; the in-process one named capabilities.
    fn peer(self, peer: &PeerInfo) -> Value {
        let state = match PeerState::try_from(peer.state).unwrap_or(PeerState::Unspecified) {
            PeerState::Available => "available",
            PeerState::Busy => "busy",
            PeerState::Away => "away",
            PeerState::Offline => "offline",
            PeerState::Unspecified => "unspecified",
        };
        json!({
            "peer_id": peer.peer_id,
            "capabilities": self.capabilities(peer.capabilities.as_ref()),
            "state": state,
            "metadata": peer.metadata,
            "connected_at": peer.connected_at,
        })
    }

    fn capabilities(self, c: Option<&pb::PeerCapabilities>) -> Value {
        let c = c.cloned().unwrap_or_default();
        match self {
            Self::Original => json!(capability_names(&c)),
            Self::RemoteMedia | Self::Node => capabilities_object(&c),
        }
    }

    /// A notification for client `me` in this dialect: `(method, params)`.
    pub fn notification(
        self,
        notification: SignalingNotification,
        me: &str,
    ) -> Option<(&'static str, Value)> {
        use Dialect::{Node, Original, RemoteMedia};
        Some(match (self, notification.notification?) {
            (_, Notification::PeerJoined(n)) => {
                let capabilities = self.capabilities(n.capabilities.as_ref());
                let params = json!({"peer_id": n.peer_id, "capabilities": capabilities, "metadata": n.metadata});
                (
                    if self == Node {
                        "peer_joined"
                    } else {
                        "peer.joined"
                    },
                    params,
                )
            }
            (Node, Notification::PeerLeft(n)) => ("peer_left", json!({"peer_id": n.peer_id})),
            (_, Notification::PeerLeft(n)) => ("peer.left", json!({"peer_id": n.peer_id})),
            (RemoteMedia, Notification::Offer(n)) => (
                "peer.offer",
                json!({"from": n.from_peer_id, "offer_id": n.offer_id, "sdp": n.sdp}),
            ),
            (Original, Notification::Offer(n)) => (
                "peer.offer",
                json!({"from": n.from_peer_id, "to": me, "offer_id": n.offer_id, "sdp": n.sdp}),
            ),
            (Node, Notification::Offer(n)) => (
                "offer",
                json!({"from_peer_id": n.from_peer_id, "offer_id": n.offer_id, "sdp": n.sdp, "type": "offer"}),
            ),
            (RemoteMedia, Notification::Answer(n)) => {
                ("peer.answer", json!({"from": n.from_peer_id, "sdp": n.sdp}))
            }
            (Original, Notification::Answer(n)) => (
                "peer.answer",
                json!({"from": n.from_peer_id, "to": me, "sdp": n.sdp}),
            ),
            (Node, Notification::Answer(n)) => (
                "answer",
                json!({"from_peer_id": n.from_peer_id, "sdp": n.sdp, "type": "answer"}),
            ),
            (dialect, Notification::IceCandidate(n)) => {
                // Browsers take `sdpMid: null` for "unset"; the core spells it "".
                let sdp_mid = (!n.sdp_mid.is_empty()).then_some(n.sdp_mid);
                match dialect {
                    RemoteMedia => (
                        "peer.ice_candidate",
                        json!({"from": n.from_peer_id, "candidate": n.candidate, "sdp_mid": sdp_mid, "sdp_mline_index": n.sdp_mline_index}),
                    ),
                    Original => (
                        "peer.ice_candidate",
                        json!({"from": n.from_peer_id, "to": me, "candidate": n.candidate, "sdp_mid": sdp_mid, "sdp_m_line_index": n.sdp_mline_index}),
                    ),
                    Node => (
                        "ice_candidate",
                        json!({"from_peer_id": n.from_peer_id, "candidate": n.candidate, "sdp_mid": sdp_mid, "sdp_mline_index": n.sdp_mline_index}),
                    ),
                }
            }
            (RemoteMedia, Notification::PeerDisconnected(n)) => {
                ("peer.disconnected", json!({"peer_id": n.peer_id}))
            }
            (Original, Notification::PeerDisconnected(n)) => (
                "peer.disconnected",
                json!({"peer_id": n.peer_id, "reason": null}),
            ),
            (Node, Notification::PeerDisconnected(n)) => {
                ("peer_disconnected", json!({"peer_id": n.peer_id}))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_clients_get_the_server_s_answer_as_a_notification() {
        let outcome = Outcome::Offered {
            to: "remotemedia-server".into(),
            outcome: OfferOutcome::Answered {
                offer_id: "o1".into(),
                answer_sdp: "v=0".into(),
            },
        };
        let reply = Dialect::Node.result(outcome, Some("a"));
        assert_eq!(
            reply.result,
            json!({"offer_id": "o1", "to_peer_id": "remotemedia-server"})
        );
        let (method, params) = reply.then.unwrap();
        assert_eq!(method, "answer");
        assert_eq!(params["from_peer_id"], "remotemedia-server");
        assert_eq!(params["sdp"], "v=0");
    }
}
