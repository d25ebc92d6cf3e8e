//! The JSON-RPC dialects of WebSocket signaling. RemoteMedia clients and servers have spoken
//! three over the years, all JSON-RPC 2.0 over a WebSocket with the same five steps
//! (announce, offer, answer, ICE candidate, disconnect) but different names and shapes.
//! `/ws` reads every dialect ([`requests`]) and answers each client in the dialect it spoke
//! ([`answers`]); `--mode websocket` joins a signaling server of any of them ([`client`]).
//! docs/signaling.md has the tables.

pub mod answers;
pub mod client;
pub mod requests;

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::proto::signaling::PeerCapabilities;

/// One dialect of JSON-RPC signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// This server's: `peer.*` methods, capabilities as an object, `metadata`, `to`,
    /// `sdp_mline_index`, an `offer_id` on every offer.
    #[default]
    RemoteMedia,
    /// The original's WebSocket client and its later in-process server: `peer.*` methods,
    /// capabilities as `["audio", …]`, `user_data`, `from` and `to` on every message,
    /// `sdp_m_line_index`, `success: true` in results, `list_peers`.
    Original,
    /// The original's bundled Node signaling server: bare method names (`announce`,
    /// `offer`, …, `list_peers`), `to_peer_id` in requests, `from_peer_id` in notifications,
    /// `peer_joined`/`peer_left`/`peer_disconnected`.
    Node,
}

impl Dialect {
    /// Its name as `--signaling-dialect` spells it (also a metric and log label).
    pub fn name(self) -> &'static str {
        match self {
            Self::RemoteMedia => "remotemedia",
            Self::Original => "original",
            Self::Node => "node",
        }
    }
}

/// `--signaling-dialect`: the dialect `--mode websocket` speaks to its signaling server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DialectChoice {
    /// This server's `/ws` dialect.
    Remotemedia,
    /// The original's WebSocket client / in-process server (`peer.*`, string capabilities).
    Original,
    /// The original's bundled Node signaling server (`announce`, `offer`, `to_peer_id`).
    Node,
    /// `peer.announce` in the original's shape (which this server's `/ws` takes too); on
    /// -32601 (no such method) `announce` as the Node server wants; on -32602 (a server
    /// that wants capabilities as an object) `peer.announce` in this server's shape.
    #[default]
    Auto,
}

/// The capabilities the three dialects name; anything else is kept in `extensions`.
const KNOWN: [&str; 3] = ["audio", "video", "data"];

/// Capabilities in the original's shape, `["audio", "video", …]`. Names other than audio,
/// video and data go to `extensions` as a JSON array, so they come back out in this shape.
pub(crate) fn capabilities_from_names(names: &[String]) -> PeerCapabilities {
    let has = |name: &str| names.iter().any(|n| n == name);
    let others: Vec<&String> = names
        .iter()
        .filter(|n| !KNOWN.contains(&n.as_str()))
        .collect();
    PeerCapabilities {
        audio: has("audio"),
        video: has("video"),
        data: has("data"),
        extensions: if others.is_empty() {
            String::new()
        } else {
            json!(others).to_string()
        },
    }
}

/// The original's shape of `c`: the names of what it has, then any names kept in
/// `extensions` (a JSON array of strings; other extensions have no name to give).
pub(crate) fn capability_names(c: &PeerCapabilities) -> Vec<String> {
    let flags = [c.audio, c.video, c.data];
    let mut names: Vec<String> = KNOWN
        .iter()
        .zip(flags)
        .filter(|(_, on)| *on)
        .map(|(name, _)| (*name).to_owned())
        .collect();
    if let Ok(others) = serde_json::from_str::<Vec<String>>(&c.extensions) {
        names.extend(others);
    }
    names
}

/// This server's shape of capabilities (also what the Node server echoed).
pub(crate) fn capabilities_object(c: &PeerCapabilities) -> Value {
    json!({"audio": c.audio, "video": c.video, "data": c.data, "extensions": c.extensions})
}

/// The original's `user_data` (any JSON values) as metadata (strings): strings as they are,
/// anything else as its JSON text.
pub(crate) fn metadata_from_user_data(
    user_data: HashMap<String, Value>,
) -> HashMap<String, String> {
    user_data
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip_through_the_proto() {
        let names: Vec<String> = ["audio", "data", "screen"].map(String::from).to_vec();
        let caps = capabilities_from_names(&names);
        assert!(caps.audio && caps.data && !caps.video);
        assert_eq!(caps.extensions, r#"["screen"]"#);
        assert_eq!(capability_names(&caps), names);
        // An object-style `extensions` (this server's clients) has no names to list.
        let caps = PeerCapabilities {
            video: true,
            extensions: "{}".into(),
            ..Default::default()
        };
        assert_eq!(capability_names(&caps), ["video"]);
    }

    #[test]
    fn user_data_values_become_strings() {
        let user_data = HashMap::from([
            ("name".to_owned(), json!("kiosk")),
            ("seats".to_owned(), json!(4)),
        ]);
        let metadata = metadata_from_user_data(user_data);
        assert_eq!(metadata["name"], "kiosk");
        assert_eq!(metadata["seats"], "4");
    }
}
