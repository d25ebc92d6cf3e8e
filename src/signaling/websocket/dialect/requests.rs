//! What `/ws` reads, in every dialect. Requests of every dialect are accepted on every
//! connection (a method name or param of one dialect never means something else in
//! another); [`super::answers`] puts the answers in the dialect the client announced in.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{capabilities_from_names, metadata_from_user_data, Dialect};
use crate::proto::signaling as pb;
use crate::signaling::core::RESUME_TOKEN_METADATA_KEY;
use crate::signaling::error::RpcError;
use crate::signaling::registry::ROOM_METADATA_KEY;
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
        /// The server offer this answers, when the client names it.
        offer_id: Option<String>,
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
    /// The room to join (the same as metadata `room`).
    #[serde(default)]
    room: Option<String>,
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
    /// An answer to a server offer may name it (`peer.answer` param `offer_id`).
    #[serde(default)]
    offer_id: Option<String>,
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
            if let Some(room) = p.room {
                match metadata.get(ROOM_METADATA_KEY) {
                    Some(other) if *other != room => {
                        return Err(RpcError::InvalidParams(
                            "param `room` and metadata `room` name different rooms".into(),
                        ))
                    }
                    _ => metadata.insert(ROOM_METADATA_KEY.to_owned(), room),
                };
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
                offer_id: p.offer_id,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
    fn the_room_is_a_param_or_metadata_and_both_must_agree() {
        for params in [
            json!({"peer_id": "a", "room": "r1"}),
            json!({"peer_id": "a", "metadata": {"room": "r1"}}),
            json!({"peer_id": "a", "room": "r1", "metadata": {"room": "r1"}}),
        ] {
            let Request::Announce(announce) = decoded("peer.announce", params) else {
                panic!("not an announce");
            };
            assert_eq!(announce.metadata["room"], "r1");
        }
        let both = json!({"peer_id": "a", "room": "r1", "metadata": {"room": "r2"}});
        assert!(matches!(
            decode(Step::Announce, both),
            Err(RpcError::InvalidParams(_))
        ));
    }
}
