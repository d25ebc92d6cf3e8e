//! Room names and participant ids: what may travel in metadata, msid lines and Redis keys.

use std::fmt;

use super::error::RoomError;

/// Longest room name and participant id, in characters (all ASCII, so also bytes).
pub const MAX_NAME_LEN: usize = 64;

/// A validated room name: 1–64 characters of `[A-Za-z0-9_-]`, safe in Redis keys and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(String);

impl RoomName {
    /// Checks a room name from announce metadata or a token claim.
    ///
    /// # Errors
    /// `InvalidRoomName` when it is empty, longer than 64 or has other characters.
    pub fn parse(name: &str) -> Result<Self, RoomError> {
        if valid(name, |c| matches!(c, '_' | '-')) {
            Ok(Self(name.to_owned()))
        } else {
            Err(RoomError::InvalidRoomName(truncated(name)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room participant's peer id, valid as an msid id (RFC 8830 allows more, but browsers and
/// SDP parsers are happiest with this alphabet): 1–64 characters of `[A-Za-z0-9._-]`.
/// Stricter than a lobby peer id (no `:`, at most 64), hence checked at announce.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(String);

impl ParticipantId {
    /// Checks that a peer id can join a room.
    ///
    /// # Errors
    /// `InvalidParticipantId` when it is empty, longer than 64 or has other characters.
    pub fn parse(id: &str) -> Result<Self, RoomError> {
        if valid(id, |c| matches!(c, '.' | '_' | '-')) {
            Ok(Self(id.to_owned()))
        } else {
            Err(RoomError::InvalidParticipantId(truncated(id)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid(s: &str, extra: impl Fn(char) -> bool) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || extra(c))
}

/// The refused value as it goes into the error message: bounded, so a peer cannot make the
/// server echo a megabyte back.
fn truncated(s: &str) -> String {
    s.chars().take(MAX_NAME_LEN + 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_1_to_64_of_alnum_underscore_dash() {
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse("Team_room-7").is_ok());
        assert!(RoomName::parse(&"r".repeat(64)).is_ok());
        for bad in ["", "a b", "a.b", "a:b", "a/b", "é", "room\n"] {
            assert_eq!(
                RoomName::parse(bad),
                Err(RoomError::InvalidRoomName(bad.into())),
                "{bad:?}"
            );
        }
        assert!(RoomName::parse(&"r".repeat(65)).is_err());
    }

    #[test]
    fn participant_ids_are_msid_ids_of_1_to_64_characters() {
        assert!(ParticipantId::parse("alice").is_ok());
        assert!(ParticipantId::parse("a.b_c-9").is_ok());
        assert!(ParticipantId::parse(&"p".repeat(64)).is_ok());
        // A lobby peer id may have ':' and 128 characters; a participant's may not.
        for bad in ["", "a:b", "a b", "a/b", "é"] {
            assert!(matches!(
                ParticipantId::parse(bad),
                Err(RoomError::InvalidParticipantId(_))
            ));
        }
        assert!(ParticipantId::parse(&"p".repeat(65)).is_err());
    }

    #[test]
    fn a_refused_value_is_echoed_bounded() {
        let Err(RoomError::InvalidRoomName(echo)) = RoomName::parse(&"x ".repeat(10_000)) else {
            panic!("a long name with spaces must be refused");
        };
        assert_eq!(echo.len(), MAX_NAME_LEN + 1);
    }
}
