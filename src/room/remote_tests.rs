//! Tracks relayed from the room's other workers (#16): remote producers, subscribed to
//! exactly like local ones.

use super::*;
use crate::room::HeightLimit;

fn id(s: &str) -> ParticipantId {
    ParticipantId::parse(s).expect("valid test id")
}

fn audio(mid: &str) -> PublishedTrack {
    PublishedTrack {
        kind: MediaKind::Audio,
        track_id: "mic".into(),
        mid: mid.into(),
        layers: vec![],
    }
}

fn drain(room: &mut Room) -> Vec<RoomAction> {
    std::iter::from_fn(|| room.poll_action()).collect()
}

/// A room here with `alice` and `bob`, each publishing audio.
fn room() -> (Room, ProducerId, ProducerId) {
    let mut room = Room::new(RoomName::parse("r").expect("valid name"), 0);
    let limits = RoomLimits::default();
    room.join(id("alice"), &limits).expect("join");
    room.join(id("bob"), &limits).expect("join");
    let a = room.publish(&id("alice"), audio("0")).expect("publish");
    let b = room.publish(&id("bob"), audio("0")).expect("publish");
    drain(&mut room);
    (room, a, b)
}

#[test]
fn a_remote_track_goes_to_every_participant_here_as_a_local_one_would() {
    let (mut room, a, b) = room();
    let carol = room.publish_remote(id("carol"), audio("0"), "worker-b".into(), 7);
    let actions = drain(&mut room);
    for who in ["alice", "bob"] {
        assert!(
            actions.contains(&RoomAction::AddTrack {
                subscriber: id(who),
                producer: carol,
                paused: false,
            }),
            "{who}: {actions:?}"
        );
        assert!(room.receives(&id(who)).contains(&carol));
    }
    assert_eq!(actions.len(), 2, "nothing else: {actions:?}");
    let producer = room.producer(carol).expect("the remote producer");
    assert_eq!(producer.publisher, id("carol"));
    assert_eq!(
        producer.origin,
        Origin::Remote {
            worker: "worker-b".into(),
            producer: 7
        }
    );
    assert!(!room.contains(&id("carol")), "carol is no participant here");
    assert_eq!(room.len(), 2);
    // What this worker writes to the record: its own tracks, not the relayed one.
    let local: Vec<ProducerId> = room.local_producers().map(|p| p.id).collect();
    assert_eq!(local, vec![a, b]);
    assert_eq!(
        room.remote_producers().into_iter().collect::<Vec<_>>(),
        vec![(
            Origin::Remote {
                worker: "worker-b".into(),
                producer: 7
            },
            carol
        )]
    );
}

#[test]
fn a_remote_publisher_can_be_turned_off_and_its_unpublished_track_goes() {
    let (mut room, _, _) = room();
    let carol = room.publish_remote(id("carol"), audio("0"), "worker-b".into(), 7);
    drain(&mut room);
    let off = SubscribeRequest {
        peer: "carol".into(),
        kind: MediaKind::Audio,
        mode: SubscribeMode::Off,
        max_height: HeightLimit::Keep,
    };
    room.subscribe(&id("alice"), &off)
        .expect("a peer on another worker is known by its tracks");
    assert_eq!(
        drain(&mut room),
        vec![RoomAction::Pause {
            subscriber: id("alice"),
            producer: carol
        }]
    );
    let nobody = SubscribeRequest {
        peer: "dave".into(),
        ..off
    };
    assert!(room.subscribe(&id("alice"), &nobody).is_err());

    room.unpublish(carol);
    let actions = drain(&mut room);
    for who in ["alice", "bob"] {
        assert!(actions.contains(&RoomAction::RemoveTrack {
            subscriber: id(who),
            producer: carol
        }));
    }
    assert!(room.remote_producers().is_empty());
}

#[test]
fn a_participant_leaving_here_keeps_the_remote_tracks_and_the_last_one_empties_the_room() {
    let (mut room, _, b) = room();
    let carol = room.publish_remote(id("carol"), audio("0"), "worker-b".into(), 7);
    drain(&mut room);
    room.leave(&id("alice"));
    let actions = drain(&mut room);
    assert!(
        actions.contains(&RoomAction::RemoveTrack {
            subscriber: id("bob"),
            producer: ProducerId(0)
        }),
        "{actions:?}"
    );
    assert!(room.receives(&id("bob")).contains(&carol));
    assert_eq!(
        room.local_producers().map(|p| p.id).collect::<Vec<_>>(),
        vec![b]
    );
    room.leave(&id("bob"));
    assert!(room.is_empty(), "remote publishers do not keep a room here");
}

#[test]
fn last_n_counts_the_video_publishers_of_other_workers() {
    let mut room = Room::new(RoomName::parse("r").expect("valid name"), 2);
    room.join(id("alice"), &RoomLimits::default())
        .expect("join");
    let video = |mid: &str| PublishedTrack {
        kind: MediaKind::Video,
        ..audio(mid)
    };
    let carol = room.publish_remote(id("carol"), video("1"), "worker-b".into(), 1);
    let dave = room.publish_remote(id("dave"), video("1"), "worker-b".into(), 2);
    let erin = room.publish_remote(id("erin"), video("1"), "worker-c".into(), 1);
    drain(&mut room);
    let receives = room.receives(&id("alice"));
    assert_eq!(receives.len(), 2, "last-N of 2: {receives:?}");
    assert!(receives.contains(&carol) && receives.contains(&dave));
    assert!(!receives.contains(&erin));
}

#[test]
fn a_publisher_on_another_worker_is_an_active_speaker_and_leads_last_n() {
    let mut room = Room::new(RoomName::parse("r").expect("valid name"), 1);
    room.join(id("alice"), &RoomLimits::default())
        .expect("join");
    let video = |mid: &str| PublishedTrack {
        kind: MediaKind::Video,
        ..audio(mid)
    };
    let carol = room.publish_remote(id("carol"), video("1"), "worker-b".into(), 1);
    let erin = room.publish_remote(id("erin"), video("1"), "worker-c".into(), 1);
    drain(&mut room);
    assert!(room.receives(&id("alice")).contains(&carol), "first heard");
    // The list comes from the room's first worker: erin (on worker-c) speaks; an id that
    // is nobody here is left out.
    room.set_active_speakers(&[id("erin"), id("nobody")]);
    let actions = drain(&mut room);
    assert!(
        actions.contains(&RoomAction::Send {
            to: id("alice"),
            message: ServerMessage::ActiveSpeakers {
                peers: vec!["erin".into()]
            }
        }),
        "{actions:?}"
    );
    let receives = room.receives(&id("alice"));
    assert!(
        receives.contains(&erin) && !receives.contains(&carol),
        "last-N of 1 follows the remote speaker: {receives:?}"
    );
    // erin's worker dropped out: its track goes, and so does erin from the speakers, which
    // a newcomer is told.
    room.unpublish(erin);
    drain(&mut room);
    assert!(room.receives(&id("alice")).contains(&carol), "carol again");
    room.join(id("bob"), &RoomLimits::default()).expect("join");
    let told = drain(&mut room).into_iter().find_map(|a| match a {
        RoomAction::Send {
            to,
            message: ServerMessage::ActiveSpeakers { peers },
        } if to == id("bob") => Some(peers),
        _ => None,
    });
    assert!(
        told.is_none_or(|peers| peers.is_empty()),
        "erin is no speaker any more"
    );
}
