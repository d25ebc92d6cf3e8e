//! The pieces together, as `peer/` is meant to drive them: a room, and per participant an
//! m-line plan and a renegotiation state, with a stand-in for the connection that numbers new
//! m-lines when it creates an offer. No network: this is the wiring the adapter will do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

#[derive(Debug)]
struct Connection {
    plan: MLinePlan,
    renegotiation: Renegotiation,
    /// Offers sent to the client, with the track map sent alongside each.
    offers: Vec<(String, ServerMessage)>,
    paused: BTreeSet<ProducerId>,
    next_mid: u32,
}

struct World {
    room: Room,
    connections: BTreeMap<ParticipantId, Connection>,
    limits: RoomLimits,
    now: Instant,
}

fn id(s: &str) -> ParticipantId {
    ParticipantId::parse(s).expect("valid test id")
}

impl World {
    fn new() -> Self {
        Self {
            room: Room::new(RoomName::parse("flow").expect("valid"), 0),
            connections: BTreeMap::new(),
            limits: RoomLimits::default(),
            now: Instant::now(),
        }
    }

    /// Joins, connects and publishes one audio track.
    fn join(&mut self, who: &str) -> ProducerId {
        self.room.join(id(who), &self.limits).expect("join");
        let mut renegotiation = Renegotiation::new(who);
        renegotiation.set_connected(true);
        self.connections.insert(
            id(who),
            Connection {
                plan: MLinePlan::new(self.limits.max_mlines()),
                renegotiation,
                offers: Vec::new(),
                paused: BTreeSet::new(),
                // The client's own m-lines come first.
                next_mid: 1,
            },
        );
        let track = PublishedTrack {
            kind: MediaKind::Audio,
            track_id: format!("{who}-mic"),
            mid: "0".into(),
            layers: vec![],
        };
        let producer = self.room.publish(&id(who), track).expect("publish");
        self.pump();
        producer
    }

    fn leave(&mut self, who: &str) {
        self.room.leave(&id(who));
        self.connections.remove(&id(who));
        self.pump();
    }

    /// Applies the room's actions, then each connection's renegotiation outputs.
    fn pump(&mut self) {
        while let Some(action) = self.room.poll_action() {
            match action {
                RoomAction::AddTrack {
                    subscriber,
                    producer,
                    paused,
                } => {
                    let Some(track) = self.room.producer(producer).map(ForwardedTrack::from) else {
                        continue;
                    };
                    let conn = self.connections.get_mut(&subscriber).expect("connected");
                    conn.plan.add(track).expect("within budget");
                    if paused {
                        conn.paused.insert(producer);
                    }
                    conn.renegotiation.request();
                }
                RoomAction::RemoveTrack {
                    subscriber,
                    producer,
                } => {
                    let conn = self.connections.get_mut(&subscriber).expect("connected");
                    conn.plan.remove(producer);
                    conn.renegotiation.request();
                }
                RoomAction::Pause {
                    subscriber,
                    producer,
                } => {
                    let conn = self.connections.get_mut(&subscriber).expect("connected");
                    conn.paused.insert(producer);
                }
                RoomAction::Resume {
                    subscriber,
                    producer,
                    ..
                } => {
                    let conn = self.connections.get_mut(&subscriber).expect("connected");
                    conn.paused.remove(&producer);
                }
                RoomAction::MaxHeight { .. } | RoomAction::Send { .. } => {}
            }
        }
        let now = self.now;
        for conn in self.connections.values_mut() {
            while let Some(output) = conn.renegotiation.poll_output() {
                match output {
                    RenegotiationOutput::CreateOffer { offer_id } => {
                        // The connection gives new lines their mids as it creates the offer.
                        for index in 0..conn.plan.lines().len() {
                            if conn.plan.lines()[index].mid.is_none() {
                                conn.plan.set_mid(index, conn.next_mid.to_string());
                                conn.next_mid += 1;
                            }
                        }
                        conn.plan.offer_created();
                        let sdp = format!("{offer_id}: {} lines", conn.plan.lines().len());
                        conn.renegotiation.offer_created(&offer_id, sdp, now);
                    }
                    RenegotiationOutput::SendOffer { offer_id, .. } => {
                        conn.offers.push((offer_id, conn.plan.track_map()));
                    }
                    RenegotiationOutput::AnswerTimeout => panic!("no timeouts in this test"),
                }
            }
        }
    }

    /// The client answers the pending offer.
    fn answer(&mut self, who: &str) {
        let conn = self.connections.get_mut(&id(who)).expect("connected");
        let offer_id = conn
            .renegotiation
            .pending_offer_id()
            .expect("an offer is pending")
            .to_owned();
        conn.renegotiation.answer(Some(&offer_id)).expect("answer");
        conn.plan.answered();
        self.pump();
    }

    fn answer_all(&mut self) {
        let pending: Vec<String> = self
            .connections
            .iter()
            .filter(|(_, c)| c.renegotiation.pending_offer_id().is_some())
            .map(|(who, _)| who.to_string())
            .collect();
        for who in pending {
            self.answer(&who);
        }
    }

    fn offers(&self, who: &str) -> usize {
        self.connections[&id(who)].offers.len()
    }

    /// (mid, peer) of the track map sent with `who`'s latest offer.
    fn track_map(&self, who: &str) -> Vec<(String, String)> {
        let Some((_, ServerMessage::Tracks { tracks })) = self.connections[&id(who)].offers.last()
        else {
            return Vec::new();
        };
        tracks
            .iter()
            .map(|t| (t.mid.clone(), t.peer.clone()))
            .collect()
    }
}

fn peers(map: &[(String, String)]) -> Vec<&str> {
    let mut peers: Vec<&str> = map.iter().map(|(_, p)| p.as_str()).collect();
    peers.sort_unstable();
    peers
}

#[test]
fn three_join_a_fourth_comes_late_one_leaves_and_its_line_is_recycled() {
    let mut w = World::new();
    w.join("alice");
    w.join("bob");
    w.join("carol");
    // alice was offered bob's track and, coalesced after her answer, carol's.
    assert_eq!(w.offers("alice"), 1, "one offer in flight");
    w.answer_all();
    w.answer_all();
    assert_eq!(
        w.offers("alice"),
        2,
        "bob's and carol's changes in two offers, not more"
    );
    for (who, others) in [
        ("alice", ["bob", "carol"]),
        ("bob", ["alice", "carol"]),
        ("carol", ["alice", "bob"]),
    ] {
        assert_eq!(
            peers(&w.track_map(who)),
            others,
            "{who} gets the others, never itself"
        );
    }

    w.join("dave");
    w.answer_all();
    assert_eq!(peers(&w.track_map("alice")), ["bob", "carol", "dave"]);
    assert_eq!(peers(&w.track_map("dave")), ["alice", "bob", "carol"]);

    let bobs_mid_at_alice = w
        .track_map("alice")
        .into_iter()
        .find(|(_, p)| p == "bob")
        .map(|(mid, _)| mid)
        .expect("bob's line");
    w.leave("bob");
    assert_eq!(
        peers(&w.track_map("alice")),
        ["carol", "dave"],
        "removed by renegotiation"
    );
    w.answer_all();

    w.join("erin");
    w.answer_all();
    let map = w.track_map("alice");
    assert_eq!(peers(&map), ["carol", "dave", "erin"]);
    assert!(
        map.contains(&(bobs_mid_at_alice, "erin".to_owned())),
        "erin's track takes the line bob's left: {map:?}"
    );
    assert_eq!(
        w.connections[&id("alice")].plan.lines().len(),
        3,
        "no line of history"
    );
}

#[test]
fn a_client_that_never_answers_is_closed_after_the_resend() {
    let mut w = World::new();
    w.join("alice");
    w.join("bob");
    let conn = w.connections.get_mut(&id("alice")).expect("connected");
    let deadline = conn.renegotiation.poll_timeout().expect("timer runs");
    conn.renegotiation.handle_timeout(deadline);
    assert!(matches!(
        conn.renegotiation.poll_output(),
        Some(RenegotiationOutput::SendOffer { .. })
    ));
    conn.renegotiation
        .handle_timeout(deadline + Duration::from_secs(10));
    assert_eq!(
        conn.renegotiation.poll_output(),
        Some(RenegotiationOutput::AnswerTimeout)
    );
}
