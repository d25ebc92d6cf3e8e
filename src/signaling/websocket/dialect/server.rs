//! What `/ws` reads and writes in each dialect. Requests of every dialect are accepted on
//! every connection (a method name or param of one dialect never means something else in
//! another); the answers and notifications take the shape of the dialect the client
//! announced in ([`Dialect::of_announce`]), and before that of the request's own.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    capabilities_from_names, capabilities_object, capability_names, metadata_from_user_data,
    Dialect,
};
use crate::proto::signaling::{
    self as pb, signaling_notification::Notification, PeerInfo, PeerState, SignalingNotification,
};
use crate::signaling::core::{OfferOutcome, RESUME_TOKEN_METADATA_KEY};
use crate::signaling::error::RpcError;
use crate::signaling::session_host::IceCandidate;

/// The step of signaling a method performs, whatever its dialect calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Announce,
    Offer,
    Answer,
    Candidate,
    Disconnect,
    List,
    Info,
}

/// A method name: its step and the dialect that spells it so.
pub fn method(name: &str) -> Option<(Step, Dialect)> {
    use Dialect::{Node, RemoteMedia};
    Some(match name {
        "peer.announce" => (Step::Announce, RemoteMedia),
        "peer.offer" => (Step::Offer, RemoteMedia),
        "peer.answer" => (Step::Answer, RemoteMedia),
        "peer.ice_candidate" => (Step::Candidate, RemoteMedia),
        "peer.disconnect" => (Step::Disconnect, RemoteMedia),
        "peer.list" => (Step::List, RemoteMedia),
        "server.info" => (Step::Info, RemoteMedia),
        // The Node server's names; `list_peers` is also the in-process server's.
        "announce" => (Step::Announce, Node),
        "offer" => (Step::Offer, Node),
        "answer" => (Step::Answer, Node),
        "ice_candidate" => (Step::Candidate, Node),
        "disconnect" => (Step::Disconnect, Node),
        "list_peers" => (Step::List, Node),
        _ => return None,
    })
}

/// One request, as the core takes it.
#[derive(Debug)]
pub enum Request {
    Announce(pb::AnnounceRequest),
    Offer {
        to: String,
        sdp: String,
        /// The sender the original's clients name; it must be the announced id.
        from: Option<String>,
    },
    Answer {
        to: String,
        sdp: String,
        from: Option<String>,
    },
    Candidate {
        to: String,
        candidate: IceCandidate,
        from: Option<String>,
    },
    Disconnect {
        /// `to` in this dialect, `peer_id` in the original's.
        peer_id: String,
    },
    List,
    Info,
}

#[derive(Deserialize)]
struct AnnounceParams {
    peer_id: String,
    #[serde(default)]
    capabilities: Option<Capabilities>,
    #[serde(default)]
    metadata: HashMap<String, String>,
    /// The original's metadata: any JSON values.
    #[serde(default)]
    user_data: Option<HashMap<String, Value>>,
    /// Takes the peer back after its socket broke (the same as metadata `resume_token`).
    #[serde(default)]
    resume_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Capabilities {
    /// The original's `["audio", "video", "data"]`.
    Names(Vec<String>),
    /// This server's (and the Node server's) `{audio, video, data, extensions}`.
    Flags(Flags),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Flags {
    audio: bool,
    video: bool,
    data: bool,
    extensions: String,
}

#[derive(Deserialize)]
struct SdpParams {
    #[serde(alias = "to_peer_id")]
    to: String,
    sdp: String,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
struct CandidateParams {
    #[serde(alias = "to_peer_id")]
    to: String,
    candidate: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(default, alias = "sdp_m_line_index")]
    sdp_mline_index: Option<u32>,
}

#[derive(Deserialize)]
struct DisconnectParams {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    peer_id: Option<String>,
}

fn params<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|err| RpcError::InvalidParams(err.to_string()))
}

/// The dialect an announce's params are in: the original's when it lists capabilities by
/// name or carries `user_data`; otherwise the one its method name belongs to.
pub fn of_announce(named: Dialect, params: &Value) -> Dialect {
    let original = params.get("capabilities").is_some_and(Value::is_array)
        || params.get("user_data").is_some_and(|v| !v.is_null());
    if named == Dialect::RemoteMedia && original {
        Dialect::Original
    } else {
        named
    }
}

/// Reads `raw` as the params of `step`, in any dialect's spelling.
///
/// # Errors
/// `InvalidParams` when they do not fit.
pub fn decode(step: Step, raw: Value) -> Result<Request, RpcError> {
    Ok(match step {
        Step::Announce => {
            let p: AnnounceParams = params(raw)?;
            let mut metadata = p.metadata;
            if let Some(user_data) = p.user_data {
                metadata.extend(metadata_from_user_data(user_data));
            }
            if let Some(token) = p.resume_token {
                metadata.insert(RESUME_TOKEN_METADATA_KEY.to_owned(), token);
            }
            let capabilities = match p.capabilities {
                Some(Capabilities::Names(names)) => capabilities_from_names(&names),
                Some(Capabilities::Flags(f)) => pb::PeerCapabilities {
                    audio: f.audio,
                    video: f.video,
                    data: f.data,
                    extensions: f.extensions,
                },
                None => pb::PeerCapabilities::default(),
            };
            Request::Announce(pb::AnnounceRequest {
                peer_id: p.peer_id,
                capabilities: Some(capabilities),
                metadata,
            })
        }
        Step::Offer => {
            let p: SdpParams = params(raw)?;
            Request::Offer {
                to: p.to,
                sdp: p.sdp,
                from: p.from,
            }
        }
        Step::Answer => {
            let p: SdpParams = params(raw)?;
            Request::Answer {
                to: p.to,
                sdp: p.sdp,
                from: p.from,
            }
        }
        Step::Candidate => {
            let p: CandidateParams = params(raw)?;
            Request::Candidate {
                to: p.to,
                candidate: IceCandidate {
                    candidate: p.candidate,
                    sdp_mid: p.sdp_mid.unwrap_or_default(),
                    sdp_mline_index: p.sdp_mline_index.unwrap_or(0),
                },
                from: p.from,
            }
        }
        Step::Disconnect => {
            let p: DisconnectParams = params(raw)?;
            let peer_id = p.to.or(p.peer_id).ok_or_else(|| {
                RpcError::InvalidParams("missing field `to` (or the original's `peer_id`)".into())
            })?;
            Request::Disconnect { peer_id }
        }
        Step::List => Request::List,
        Step::Info => Request::Info,
    })
}

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

    fn decoded(name: &str, params: Value) -> Request {
        let (step, _) = method(name).unwrap();
        decode(step, params).unwrap()
    }

    #[test]
    fn every_dialect_s_candidate_reads_the_same() {
        let ours =
            json!({"to": "b", "candidate": "candidate:1", "sdp_mid": "0", "sdp_mline_index": 1});
        let original = json!({"from": "a", "to": "b", "candidate": "candidate:1", "sdp_mid": "0", "sdp_m_line_index": 1});
        let node = json!({"to_peer_id": "b", "candidate": "candidate:1", "sdp_mid": "0", "sdp_mline_index": 1});
        for (name, params) in [
            ("peer.ice_candidate", ours),
            ("peer.ice_candidate", original),
            ("ice_candidate", node),
        ] {
            let Request::Candidate { to, candidate, .. } = decoded(name, params) else {
                panic!("not a candidate");
            };
            assert_eq!(to, "b");
            assert_eq!(candidate.sdp_mline_index, 1);
            assert_eq!(candidate.sdp_mid, "0");
        }
    }

    #[test]
    fn an_announce_in_the_original_shape_is_recognised() {
        let original = json!({"peer_id": "a", "capabilities": ["audio"], "user_data": {"n": 1}});
        assert_eq!(
            of_announce(Dialect::RemoteMedia, &original),
            Dialect::Original
        );
        let ours = json!({"peer_id": "a", "capabilities": {"audio": true}});
        assert_eq!(
            of_announce(Dialect::RemoteMedia, &ours),
            Dialect::RemoteMedia
        );
        assert_eq!(of_announce(Dialect::Node, &ours), Dialect::Node);
        let Request::Announce(announce) = decoded("peer.announce", original) else {
            panic!("not an announce");
        };
        assert!(announce.capabilities.unwrap().audio);
        assert_eq!(announce.metadata["n"], "1");
    }

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
