//! Room limits: how many participants a room and how many rooms a process or worker takes.

use super::error::RoomError;
use super::names::RoomName;

/// The room limits of one process (`--max-room-participants`, `--max-rooms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Participants per room. Checked at announce, so every listed participant gets media;
    /// 16 because one core forwards roughly that many all-to-all.
    pub max_participants: usize,
    /// Rooms per process or worker, checked at the offer that would create one.
    pub max_rooms: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_participants: Self::DEFAULT_MAX_PARTICIPANTS,
            max_rooms: Self::DEFAULT_MAX_ROOMS,
        }
    }
}

/// M-lines beyond two per other participant: the room pipeline's track, the room channel's
/// application line and the subscriber's own published lines.
const MLINE_SLACK: usize = 8;

impl RoomLimits {
    pub const DEFAULT_MAX_PARTICIPANTS: usize = 16;
    pub const DEFAULT_MAX_ROOMS: usize = 1000;

    /// Whether one more participant may join `room`, which has `participants` now.
    ///
    /// # Errors
    /// `RoomFull` naming the room (RESOURCE_EXHAUSTED).
    pub fn check_join(&self, room: &RoomName, participants: usize) -> Result<(), RoomError> {
        if participants >= self.max_participants {
            return Err(RoomError::RoomFull {
                room: room.to_string(),
                max: self.max_participants,
            });
        }
        Ok(())
    }

    /// Whether one more room may be created while `rooms` exist.
    ///
    /// # Errors
    /// `TooManyRooms` (RESOURCE_EXHAUSTED).
    pub fn check_create(&self, rooms: usize) -> Result<(), RoomError> {
        if rooms >= self.max_rooms {
            return Err(RoomError::TooManyRooms(self.max_rooms));
        }
        Ok(())
    }

    /// M-lines a subscriber's SDP may hold: an audio and a video line per other participant
    /// plus slack. Answers to server offers are bounded by this, not by `--max-sdp-bytes`.
    pub fn max_mlines(&self) -> usize {
        2 * self.max_participants + MLINE_SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_participant_after_the_last_allowed_is_refused_naming_the_room() {
        let limits = RoomLimits {
            max_participants: 2,
            max_rooms: 1,
        };
        let room = RoomName::parse("standup").expect("valid name");
        assert!(limits.check_join(&room, 0).is_ok());
        assert!(limits.check_join(&room, 1).is_ok());
        let err = limits.check_join(&room, 2).expect_err("third participant");
        assert_eq!(
            err,
            RoomError::RoomFull {
                room: "standup".into(),
                max: 2
            }
        );
        assert!(err.to_string().contains("standup"));
    }

    #[test]
    fn the_room_after_the_last_allowed_is_refused() {
        let limits = RoomLimits {
            max_participants: 16,
            max_rooms: 3,
        };
        assert!(limits.check_create(2).is_ok());
        assert_eq!(limits.check_create(3), Err(RoomError::TooManyRooms(3)));
    }

    #[test]
    fn defaults_follow_the_contract() {
        let limits = RoomLimits::default();
        assert_eq!(limits.max_participants, 16);
        assert_eq!(limits.max_rooms, 1000);
        assert!(limits.max_mlines() >= 2 * 16);
    }
}
