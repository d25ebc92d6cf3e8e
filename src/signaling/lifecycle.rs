//! A peer's life after its announce, as one state machine: which events move a registration
//! between connected, detached (in its resume grace) and ended, and the steps each move takes,
//! in order. [`super::core`] carries the steps out against the registry, the bus and the
//! session host; the rules live here, plain and tested without them.
//!
//! | from      | event                              | to        |
//! |-----------|------------------------------------|-----------|
//! | Connected | `StreamEnded`                      | Ended     |
//! | Connected | `StreamBroke`                      | Detached  |
//! | Detached  | `Resumed`                          | Connected |
//! | Detached  | `GraceExpired`, `RegistrationLost` | Ended     |
//! | Detached  | `TakenOver`                        | Ended (the id lives on in the new registration) |

use std::fmt;

/// Where a registration is, as its holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A stream holds the peer: notifications flow, its server session runs.
    Connected,
    /// The stream broke: the registration, its server session and its notifications are kept
    /// for the resume grace; nobody has been told it left.
    Detached,
    /// Gone for good (for a takeover: the old registration; the id lives on in the new one).
    Ended,
}

/// What happens to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The stream ended cleanly, or the stream's owner dropped it: a leave.
    StreamEnded,
    /// The stream broke while a resume grace is configured.
    StreamBroke,
    /// The registry no longer holds the detached registration (e.g. Redis lost it).
    RegistrationLost,
    /// The resume grace ran out (the sweeper, on whichever replica gets it first).
    GraceExpired,
    /// A new stream presented the peer's resume token.
    Resumed,
    /// A new stream without the token took the detached peer's id over.
    TakenOver,
}

/// One effect of a transition, carried out in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The peer's server session closes (on its worker, in a cluster).
    CloseSession,
    /// The stream's mailbox closes.
    CloseMailbox,
    /// The stream's mailbox is handed to the bus to keep what arrives, and the registry marks
    /// the registration detached until the grace ends.
    KeepMailbox,
    /// What was kept for the peer (notifications, pending offers) goes.
    DiscardKept,
    /// The registry forgets the peer id.
    Unregister,
    /// The other peers get `PeerLeft`.
    AnnounceLeft,
}

/// Where an event leads and what it takes to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub next: Stage,
    pub steps: &'static [Step],
}

/// An event that cannot happen in the stage it arrived in (a bug in the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Illegal {
    pub from: Stage,
    pub event: Event,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cannot happen to a {:?} peer",
            self.event, self.from
        )
    }
}

/// A leave: the session first (so it stops producing events for a peer that is going), then
/// the mailbox, what was kept, the registration, and last the others are told.
const LEAVE: &[Step] = &[
    Step::CloseSession,
    Step::CloseMailbox,
    Step::DiscardKept,
    Step::Unregister,
    Step::AnnounceLeft,
];
/// The end of a detached peer: a leave with no mailbox left to close.
const END_DETACHED: &[Step] = &[
    Step::CloseSession,
    Step::DiscardKept,
    Step::Unregister,
    Step::AnnounceLeft,
];
/// The old registration under a taken-over id: the registry already swapped in the new
/// record, so there is nothing to unregister; what was kept goes before the new mailbox opens.
const TAKEN_OVER: &[Step] = &[Step::CloseSession, Step::DiscardKept, Step::AnnounceLeft];

/// The rule for `event` in stage `from`.
///
/// # Errors
/// [`Illegal`] for an event that cannot happen in that stage.
pub fn transition(from: Stage, event: Event) -> Result<Transition, Illegal> {
    let (next, steps) = match (from, event) {
        (Stage::Connected, Event::StreamEnded) => (Stage::Ended, LEAVE),
        (Stage::Connected, Event::StreamBroke) => (Stage::Detached, &[Step::KeepMailbox][..]),
        (Stage::Detached, Event::GraceExpired | Event::RegistrationLost) => {
            (Stage::Ended, END_DETACHED)
        }
        (Stage::Detached, Event::Resumed) => (Stage::Connected, &[][..]),
        (Stage::Detached, Event::TakenOver) => (Stage::Ended, TAKEN_OVER),
        (from, event) => return Err(Illegal { from, event }),
    };
    Ok(Transition { next, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: [Stage; 3] = [Stage::Connected, Stage::Detached, Stage::Ended];
    const EVENTS: [Event; 6] = [
        Event::StreamEnded,
        Event::StreamBroke,
        Event::RegistrationLost,
        Event::GraceExpired,
        Event::Resumed,
        Event::TakenOver,
    ];

    fn go(from: Stage, event: Event) -> Transition {
        transition(from, event).unwrap_or_else(|e| panic!("{e}"))
    }

    fn position(steps: &[Step], step: Step) -> usize {
        steps
            .iter()
            .position(|s| *s == step)
            .unwrap_or_else(|| panic!("{step:?} missing from {steps:?}"))
    }

    #[test]
    fn a_leave_ends_everything_and_tells_the_others_last() {
        let t = go(Stage::Connected, Event::StreamEnded);
        assert_eq!(t.next, Stage::Ended);
        assert_eq!(position(t.steps, Step::CloseSession), 0);
        assert_eq!(position(t.steps, Step::AnnounceLeft), t.steps.len() - 1);
        for step in [Step::CloseMailbox, Step::DiscardKept, Step::Unregister] {
            position(t.steps, step);
        }
    }

    #[test]
    fn a_broken_stream_keeps_the_session_and_tells_nobody() {
        let t = go(Stage::Connected, Event::StreamBroke);
        assert_eq!(t.next, Stage::Detached);
        assert_eq!(t.steps, [Step::KeepMailbox]);
    }

    #[test]
    fn a_resume_takes_the_registration_back_as_it_was() {
        let t = go(Stage::Detached, Event::Resumed);
        assert_eq!(t.next, Stage::Connected);
        assert!(t.steps.is_empty(), "{:?}", t.steps);
    }

    #[test]
    fn an_expired_grace_and_a_lost_registration_end_like_a_leave_without_a_mailbox() {
        for event in [Event::GraceExpired, Event::RegistrationLost] {
            let t = go(Stage::Detached, event);
            assert_eq!(t.next, Stage::Ended);
            let mut leave = LEAVE.to_vec();
            leave.retain(|s| *s != Step::CloseMailbox);
            assert_eq!(t.steps, leave, "{event:?}");
        }
    }

    #[test]
    fn a_takeover_ends_the_old_registration_but_keeps_the_id() {
        let t = go(Stage::Detached, Event::TakenOver);
        assert_eq!(t.next, Stage::Ended);
        assert!(!t.steps.contains(&Step::Unregister), "{:?}", t.steps);
        assert!(
            position(t.steps, Step::DiscardKept) < position(t.steps, Step::AnnounceLeft),
            "the new stream must not inherit what was kept for the old one"
        );
        position(t.steps, Step::CloseSession);
    }

    #[test]
    fn nothing_happens_to_an_ended_peer_and_only_the_listed_moves_are_legal() {
        let legal = [
            (Stage::Connected, Event::StreamEnded),
            (Stage::Connected, Event::StreamBroke),
            (Stage::Detached, Event::RegistrationLost),
            (Stage::Detached, Event::GraceExpired),
            (Stage::Detached, Event::Resumed),
            (Stage::Detached, Event::TakenOver),
        ];
        for from in STAGES {
            for event in EVENTS {
                let result = transition(from, event);
                assert_eq!(
                    result.is_ok(),
                    legal.contains(&(from, event)),
                    "{from:?} + {event:?}: {result:?}"
                );
            }
        }
    }
}
