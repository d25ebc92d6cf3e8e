//! The room channel's messages (`remotemedia-room` data channel), both ways.
//!
//! They travel as `DataBuffer{json{schema_type:"room", json_payload}}` or as plain text JSON;
//! the adapter unwraps that and hands the JSON text here.

use serde::{Deserialize, Serialize};

use super::error::RoomError;
use super::names::ParticipantId;
use super::track::MediaKind;

/// Largest client message accepted: a subscribe request is under 200 bytes.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Whose each forwarded mid is, after every renegotiation (for clients that ignore msid).
    Tracks { tracks: Vec<TrackEntry> },
    /// Participants speaking now, loudest first, at most 5.
    ActiveSpeakers { peers: Vec<String> },
    /// A publisher stopped or resumed sending a track.
    Muted {
        peer: String,
        kind: MediaKind,
        muted: bool,
    },
    /// The room pipeline's data output.
    Pipeline { data: serde_json::Value },
}

impl ServerMessage {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (string keys, no maps of non-strings).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One forwarded m-line of a subscriber's SDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackEntry {
    pub mid: String,
    pub peer: String,
    pub kind: MediaKind,
    pub track: String,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Subscribe(SubscribeRequest),
}

/// `{"type":"subscribe","peer":"bob","kind":"video","mode":"pin","max_height":360}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscribeRequest {
    pub peer: String,
    pub kind: MediaKind,
    pub mode: SubscribeMode,
    /// Highest video layer wanted: absent keeps the current limit, `null` lifts it.
    #[serde(default, deserialize_with = "HeightLimit::deserialize_present")]
    pub max_height: HeightLimit,
}

/// What a subscribe request says about the highest simulcast layer wanted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeightLimit {
    /// `max_height` absent: the limit set before stays.
    #[default]
    Keep,
    /// `"max_height": null`: no limit (the highest layer the path carries).
    Lift,
    /// `"max_height": 360`: layers at most this many pixels tall.
    AtMost(u32),
}

impl HeightLimit {
    /// Runs only when the field is present (absent is [`HeightLimit::Keep`], the default).
    fn deserialize_present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<u32>::deserialize(d)?.map_or(Self::Lift, Self::AtMost))
    }

    /// The limit after this request, given the one before.
    pub fn apply(self, before: Option<u32>) -> Option<u32> {
        match self {
            Self::Keep => before,
            Self::Lift => None,
            Self::AtMost(height) => Some(height),
        }
    }
}

/// How a subscriber wants one publisher's track of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeMode {
    /// Video when the publisher is among the last-N speakers; audio always.
    #[default]
    Auto,
    /// Always, whatever last-N says.
    Pin,
    /// Never.
    Off,
}

impl ClientMessage {
    /// Parses a client's room channel message.
    ///
    /// # Errors
    /// `InvalidMessage` with serde's reason (unknown type, missing field, bad mode), when the
    /// text is larger than [`MAX_CLIENT_MESSAGE_BYTES`] or the peer is no valid participant id.
    pub fn parse(text: &str) -> Result<Self, RoomError> {
        if text.len() > MAX_CLIENT_MESSAGE_BYTES {
            return Err(RoomError::InvalidMessage(format!(
                "{} bytes, the limit is {MAX_CLIENT_MESSAGE_BYTES}",
                text.len()
            )));
        }
        let message: Self =
            serde_json::from_str(text).map_err(|e| RoomError::InvalidMessage(e.to_string()))?;
        match &message {
            Self::Subscribe(request) => {
                ParticipantId::parse(&request.peer)
                    .map_err(|e| RoomError::InvalidMessage(e.to_string()))?;
            }
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(message: &ServerMessage) -> serde_json::Value {
        serde_json::from_str(&message.to_json()).expect("server messages are JSON")
    }

    #[test]
    fn server_messages_have_the_contract_shapes() {
        let tracks = ServerMessage::Tracks {
            tracks: vec![TrackEntry {
                mid: "3".into(),
                peer: "bob".into(),
                kind: MediaKind::Audio,
                track: "mic".into(),
            }],
        };
        assert_eq!(
            value(&tracks),
            json!({"type":"tracks","tracks":[{"mid":"3","peer":"bob","kind":"audio","track":"mic"}]})
        );
        let speakers = ServerMessage::ActiveSpeakers {
            peers: vec!["bob".into(), "alice".into()],
        };
        assert_eq!(
            value(&speakers),
            json!({"type":"active_speakers","peers":["bob","alice"]})
        );
        let muted = ServerMessage::Muted {
            peer: "bob".into(),
            kind: MediaKind::Video,
            muted: true,
        };
        assert_eq!(
            value(&muted),
            json!({"type":"muted","peer":"bob","kind":"video","muted":true})
        );
        let pipeline = ServerMessage::Pipeline {
            data: json!({"text":"hi"}),
        };
        assert_eq!(
            value(&pipeline),
            json!({"type":"pipeline","data":{"text":"hi"}})
        );
    }

    #[test]
    fn subscribe_parses_with_and_without_max_height() {
        let parsed = ClientMessage::parse(
            r#"{"type":"subscribe","peer":"bob","kind":"video","mode":"pin","max_height":360}"#,
        );
        assert_eq!(
            parsed,
            Ok(ClientMessage::Subscribe(SubscribeRequest {
                peer: "bob".into(),
                kind: MediaKind::Video,
                mode: SubscribeMode::Pin,
                max_height: HeightLimit::AtMost(360),
            }))
        );
        let parsed = ClientMessage::parse(
            r#"{"type":"subscribe","peer":"bob","kind":"audio","mode":"off"}"#,
        );
        assert!(matches!(
            parsed,
            Ok(ClientMessage::Subscribe(SubscribeRequest {
                mode: SubscribeMode::Off,
                max_height: HeightLimit::Keep,
                ..
            }))
        ));
        let parsed = ClientMessage::parse(
            r#"{"type":"subscribe","peer":"bob","kind":"video","mode":"auto","max_height":null}"#,
        );
        assert!(matches!(
            parsed,
            Ok(ClientMessage::Subscribe(SubscribeRequest {
                max_height: HeightLimit::Lift,
                ..
            }))
        ));
    }

    #[test]
    fn bad_messages_get_errors_that_say_what_is_wrong() {
        let cases = [
            (r#"{"type":"unsubscribe"}"#, "unsubscribe"),
            (
                r#"{"type":"subscribe","peer":"bob","kind":"video"}"#,
                "mode",
            ),
            (
                r#"{"type":"subscribe","peer":"bob","kind":"video","mode":"always"}"#,
                "always",
            ),
            (
                r#"{"type":"subscribe","peer":"bob","kind":"screen","mode":"auto"}"#,
                "screen",
            ),
            (
                r#"{"type":"subscribe","peer":"a:b","kind":"video","mode":"auto"}"#,
                "a:b",
            ),
            ("not json", "expected"),
        ];
        for (text, mentions) in cases {
            let err = ClientMessage::parse(text).expect_err(text);
            assert!(matches!(err, RoomError::InvalidMessage(_)), "{text}");
            assert!(err.to_string().contains(mentions), "{text}: {err}");
        }
        let huge = format!(
            r#"{{"type":"subscribe","peer":"bob","kind":"video","mode":"auto","x":"{}"}}"#,
            "x".repeat(MAX_CLIENT_MESSAGE_BYTES)
        );
        assert!(ClientMessage::parse(&huge).is_err());
    }
}
