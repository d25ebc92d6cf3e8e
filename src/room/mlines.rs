//! One subscriber's plan of forwarded m-lines: which line carries which publisher's track, so
//! its SDP tracks the live tracks, not the room's history.
//!
//! JSEP lets an offerer put a new track on an m-line whose previous track was removed in an
//! earlier, completed negotiation. A removed track's line is *stopping*: inactive in the next
//! offer created, and *free* once that offer is answered (a removal made while an offer is in
//! flight waits for the offer after it). The next track of the same kind takes a free line.
//! So a subscriber through any churn holds about as many lines as the room has tracks.
//! The connection chooses the mids of new lines when it creates an offer; the adapter reports
//! them with [`MLinePlan::set_mid`].

use super::error::RoomError;
use super::messages::{ServerMessage, TrackEntry};
use super::track::{MediaKind, Producer, ProducerId};

/// What one forwarded line carries: the msid and the track map are made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedTrack {
    pub producer: ProducerId,
    pub kind: MediaKind,
    /// The publisher's peer id: the msid stream id, so `streams[0].id` is the publisher.
    pub peer: String,
    /// The msid track id (the publisher's, or `<kind>-<mid>`).
    pub track: String,
}

impl From<&Producer> for ForwardedTrack {
    fn from(producer: &Producer) -> Self {
        Self {
            producer: producer.id,
            kind: producer.track.kind,
            peer: producer.publisher.to_string(),
            track: producer.track.msid_track(),
        }
    }
}

/// The state of one forwarded m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineState {
    /// Carries a forwarded track (`sendonly`, `a=msid:<peer> <track>`).
    Live(ForwardedTrack),
    /// Its track left: inactive in the next offer, reusable once that offer is answered.
    /// `offered`: an offer created since carries the line as inactive.
    Stopping { offered: bool },
    /// Inactive in the completed negotiation: the next new track of its kind takes it.
    Free,
}

/// One forwarded m-line of the subscriber's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MLine {
    pub kind: MediaKind,
    /// `None` until the offer that first carries the line was created.
    pub mid: Option<String>,
    pub state: LineState,
}

/// Where [`MLinePlan::add`] put a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The line's index among the forwarded lines (stable for the session).
    pub index: usize,
    /// The line was free and is recycled: replace its sender's track and msid instead of
    /// adding a transceiver.
    pub reused: bool,
}

/// A subscriber's forwarded m-lines, in the order they were first offered.
#[derive(Debug)]
pub struct MLinePlan {
    lines: Vec<MLine>,
    /// The subscriber's budget of forwarded lines ([`super::RoomLimits::max_mlines`]).
    max_lines: usize,
}

impl MLinePlan {
    pub fn new(max_lines: usize) -> Self {
        Self {
            lines: Vec::new(),
            max_lines,
        }
    }

    pub fn lines(&self) -> &[MLine] {
        &self.lines
    }

    /// Puts a track on a free line of its kind, or on a new line. Adding a track already
    /// placed returns its line.
    ///
    /// # Errors
    /// `TooManyMLines` when no line is free and the budget is spent.
    pub fn add(&mut self, track: ForwardedTrack) -> Result<Placement, RoomError> {
        if let Some(index) = self.index_of(track.producer) {
            return Ok(Placement {
                index,
                reused: false,
            });
        }
        let free = self
            .lines
            .iter()
            .position(|l| l.kind == track.kind && l.state == LineState::Free);
        if let Some(index) = free {
            self.lines[index].state = LineState::Live(track);
            return Ok(Placement {
                index,
                reused: true,
            });
        }
        if self.lines.len() >= self.max_lines {
            return Err(RoomError::TooManyMLines(self.max_lines));
        }
        self.lines.push(MLine {
            kind: track.kind,
            mid: None,
            state: LineState::Live(track),
        });
        Ok(Placement {
            index: self.lines.len() - 1,
            reused: false,
        })
    }

    /// Takes a track off its line (which goes inactive in the next offer). Returns the line.
    pub fn remove(&mut self, producer: ProducerId) -> Option<usize> {
        let index = self.index_of(producer)?;
        self.lines[index].state = LineState::Stopping { offered: false };
        Some(index)
    }

    /// The mid the connection gave a line in the offer it created.
    pub fn set_mid(&mut self, index: usize, mid: String) {
        if let Some(line) = self.lines.get_mut(index) {
            line.mid = Some(mid);
        }
    }

    /// An offer was created from the current lines (after [`MLinePlan::set_mid`] for new
    /// ones): the stopping lines it carries as inactive are freed by its answer.
    pub fn offer_created(&mut self) {
        for line in &mut self.lines {
            if let LineState::Stopping { offered } = &mut line.state {
                *offered = true;
            }
        }
    }

    /// The offer in flight was answered: the lines it stopped become free for new tracks.
    pub fn answered(&mut self) {
        for line in &mut self.lines {
            if line.state == (LineState::Stopping { offered: true }) {
                line.state = LineState::Free;
            }
        }
    }

    /// The line carrying `producer`.
    pub fn line_of(&self, producer: ProducerId) -> Option<&MLine> {
        self.index_of(producer).map(|i| &self.lines[i])
    }

    /// The room channel's track map: every live line with a mid.
    pub fn track_map(&self) -> ServerMessage {
        let tracks = self
            .lines
            .iter()
            .filter_map(|line| match (&line.state, &line.mid) {
                (LineState::Live(track), Some(mid)) => Some(TrackEntry {
                    mid: mid.clone(),
                    peer: track.peer.clone(),
                    kind: track.kind,
                    track: track.track.clone(),
                }),
                _ => None,
            })
            .collect();
        ServerMessage::Tracks { tracks }
    }

    fn index_of(&self, producer: ProducerId) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| matches!(&l.state, LineState::Live(t) if t.producer == producer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(producer: u64, kind: MediaKind, peer: &str) -> ForwardedTrack {
        ForwardedTrack {
            producer: ProducerId(producer),
            kind,
            peer: peer.into(),
            track: format!("{kind}-{producer}"),
        }
    }

    /// What the adapter does when it creates an offer: number the new lines.
    fn offer(plan: &mut MLinePlan) {
        for index in 0..plan.lines().len() {
            if plan.lines()[index].mid.is_none() {
                plan.set_mid(index, (index + 2).to_string());
            }
        }
        plan.offer_created();
    }

    #[test]
    fn a_removal_made_while_an_offer_is_in_flight_waits_for_the_next_offer() {
        let mut plan = MLinePlan::new(8);
        plan.add(fwd(1, MediaKind::Audio, "bob")).expect("add");
        offer(&mut plan);
        plan.answered();
        offer(&mut plan); // some other change in flight
        plan.remove(ProducerId(1));
        plan.answered(); // the answer to the offer that still had bob live
        let placed = plan.add(fwd(2, MediaKind::Audio, "carol")).expect("add");
        assert!(!placed.reused, "bob's line was never offered inactive");
        offer(&mut plan);
        plan.answered();
        let placed = plan.add(fwd(3, MediaKind::Audio, "dave")).expect("add");
        assert_eq!(
            placed,
            Placement {
                index: 0,
                reused: true
            }
        );
    }

    #[test]
    fn a_departed_tracks_line_is_reused_only_after_the_offer_removing_it_was_answered() {
        let mut plan = MLinePlan::new(8);
        plan.add(fwd(1, MediaKind::Audio, "bob")).expect("add");
        offer(&mut plan);
        plan.answered();
        assert_eq!(plan.remove(ProducerId(1)), Some(0));
        // Same offer: the stopping line cannot carry the new track yet.
        let placed = plan.add(fwd(2, MediaKind::Audio, "carol")).expect("add");
        assert_eq!(
            placed,
            Placement {
                index: 1,
                reused: false
            }
        );
        offer(&mut plan);
        plan.answered();
        plan.remove(ProducerId(2));
        offer(&mut plan);
        plan.answered();
        let placed = plan.add(fwd(3, MediaKind::Audio, "dave")).expect("add");
        assert_eq!(
            placed,
            Placement {
                index: 0,
                reused: true
            }
        );
        assert_eq!(
            plan.line_of(ProducerId(3)).and_then(|l| l.mid.as_deref()),
            Some("2")
        );
    }

    #[test]
    fn lines_are_reused_by_kind_only() {
        let mut plan = MLinePlan::new(8);
        plan.add(fwd(1, MediaKind::Video, "bob")).expect("add");
        offer(&mut plan);
        plan.answered();
        plan.remove(ProducerId(1));
        offer(&mut plan);
        plan.answered();
        let placed = plan.add(fwd(2, MediaKind::Audio, "bob")).expect("add");
        assert!(!placed.reused, "an audio track never takes a video line");
        let placed = plan.add(fwd(3, MediaKind::Video, "carol")).expect("add");
        assert!(placed.reused);
    }

    #[test]
    fn churn_of_50_joins_and_leaves_keeps_the_sdp_bounded() {
        let mut plan = MLinePlan::new(34);
        // Two participants stay; 50 others come and go, each with audio and video.
        for (p, kind) in [(0, MediaKind::Audio), (1, MediaKind::Video)] {
            plan.add(fwd(p, kind, "stays")).expect("add");
        }
        offer(&mut plan);
        plan.answered();
        for i in 0..50u64 {
            let (audio, video) = (100 + 2 * i, 101 + 2 * i);
            plan.add(fwd(audio, MediaKind::Audio, "guest"))
                .expect("join");
            plan.add(fwd(video, MediaKind::Video, "guest"))
                .expect("join");
            offer(&mut plan);
            plan.answered();
            plan.remove(ProducerId(audio));
            plan.remove(ProducerId(video));
            offer(&mut plan);
            plan.answered();
        }
        assert_eq!(plan.lines().len(), 4, "2 live lines and 2 recycled ones");
    }

    #[test]
    fn the_budget_refuses_one_line_too_many() {
        let mut plan = MLinePlan::new(2);
        plan.add(fwd(1, MediaKind::Audio, "a")).expect("add");
        plan.add(fwd(2, MediaKind::Audio, "b")).expect("add");
        assert_eq!(
            plan.add(fwd(3, MediaKind::Audio, "c")),
            Err(RoomError::TooManyMLines(2))
        );
        assert_eq!(
            plan.add(fwd(1, MediaKind::Audio, "a")),
            Ok(Placement {
                index: 0,
                reused: false
            }),
            "adding a placed track again is no new line"
        );
    }

    #[test]
    fn the_track_map_lists_live_lines_with_mids() {
        let mut plan = MLinePlan::new(8);
        plan.add(fwd(1, MediaKind::Audio, "bob")).expect("add");
        plan.add(fwd(2, MediaKind::Video, "bob")).expect("add");
        offer(&mut plan);
        plan.add(fwd(3, MediaKind::Audio, "carol")).expect("add");
        plan.remove(ProducerId(2));
        let json: serde_json::Value =
            serde_json::from_str(&plan.track_map().to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"tracks","tracks":[
                {"mid":"2","peer":"bob","kind":"audio","track":"audio-1"}
            ]}),
            "the stopped line and the line without a mid yet are not listed"
        );
    }
}
