use super::*;
use crate::room::HeightLimit;

fn id(s: &str) -> ParticipantId {
    ParticipantId::parse(s).expect("valid test id")
}

fn track(kind: MediaKind, mid: &str) -> PublishedTrack {
    PublishedTrack {
        kind,
        track_id: format!("{kind}-track"),
        mid: mid.into(),
        layers: vec![],
    }
}

fn room(last_n: usize) -> Room {
    Room::new(RoomName::parse("r").expect("valid name"), last_n)
}

fn drain(room: &mut Room) -> Vec<RoomAction> {
    std::iter::from_fn(|| room.poll_action()).collect()
}

/// Joins `names` and gives each an audio and a video track; returns their (audio, video) ids.
fn populated(last_n: usize, names: &[&str]) -> (Room, Vec<(ProducerId, ProducerId)>) {
    let mut room = room(last_n);
    let limits = RoomLimits::default();
    let mut ids = Vec::new();
    for name in names {
        room.join(id(name), &limits).expect("join");
        let audio = room
            .publish(&id(name), track(MediaKind::Audio, "0"))
            .expect("publish");
        let video = room
            .publish(&id(name), track(MediaKind::Video, "1"))
            .expect("publish");
        ids.push((audio, video));
    }
    drain(&mut room);
    (room, ids)
}

fn subscribe(room: &mut Room, who: &str, peer: &str, kind: MediaKind, mode: SubscribeMode) {
    let request = SubscribeRequest {
        peer: peer.into(),
        kind,
        mode,
        max_height: HeightLimit::Keep,
    };
    room.subscribe(&id(who), &request).expect("subscribe");
}

#[test]
fn everyone_gets_every_other_participants_tracks_and_never_its_own() {
    let (room, ids) = populated(0, &["alice", "bob", "carol"]);
    for (i, who) in ["alice", "bob", "carol"].into_iter().enumerate() {
        let expected: BTreeSet<ProducerId> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, (a, v))| [*a, *v])
            .collect();
        assert_eq!(room.receives(&id(who)), expected, "{who}");
        assert_eq!(room.negotiated(&id(who)), expected, "{who}");
    }
}

#[test]
fn a_late_joiner_is_given_existing_tracks_and_theirs_reach_everyone() {
    let (mut room, ids) = populated(0, &["alice", "bob"]);
    room.join(id("dave"), &RoomLimits::default()).expect("join");
    let added: BTreeSet<ProducerId> = drain(&mut room)
        .into_iter()
        .filter_map(|a| match a {
            RoomAction::AddTrack {
                subscriber,
                producer,
                paused: false,
            } if subscriber == id("dave") => Some(producer),
            _ => None,
        })
        .collect();
    let all: BTreeSet<ProducerId> = ids.iter().flat_map(|(a, v)| [*a, *v]).collect();
    assert_eq!(added, all);

    let dave_audio = room
        .publish(&id("dave"), track(MediaKind::Audio, "0"))
        .expect("publish");
    let actions = drain(&mut room);
    for who in ["alice", "bob"] {
        assert!(actions.contains(&RoomAction::AddTrack {
            subscriber: id(who),
            producer: dave_audio,
            paused: false
        }));
    }
    assert_eq!(actions.len(), 2, "not to dave itself: {actions:?}");
}

#[test]
fn leaving_removes_its_tracks_from_every_subscriber() {
    let (mut room, ids) = populated(0, &["alice", "bob", "carol"]);
    room.leave(&id("bob"));
    let actions = drain(&mut room);
    for who in ["alice", "carol"] {
        for producer in [ids[1].0, ids[1].1] {
            assert!(actions.contains(&RoomAction::RemoveTrack {
                subscriber: id(who),
                producer
            }));
        }
        assert!(!room.receives(&id(who)).contains(&ids[1].0));
    }
    assert_eq!(actions.len(), 4, "{actions:?}");
    assert!(room.producer(ids[1].0).is_none());
    room.leave(&id("bob"));
    assert!(drain(&mut room).is_empty(), "a second leave is a no-op");
    room.leave(&id("alice"));
    room.leave(&id("carol"));
    assert!(room.is_empty());
}

#[test]
fn join_refuses_duplicates_and_a_full_room() {
    let mut room = room(0);
    let limits = RoomLimits {
        max_participants: 2,
        max_rooms: 1,
    };
    room.join(id("a"), &limits).expect("first");
    assert_eq!(
        room.join(id("a"), &limits),
        Err(RoomError::AlreadyJoined("a".into()))
    );
    room.join(id("b"), &limits).expect("second");
    assert!(matches!(
        room.join(id("c"), &limits),
        Err(RoomError::RoomFull { max: 2, .. })
    ));
    assert_eq!(room.participants(), vec![&id("a"), &id("b")]);
}

#[test]
fn publishing_or_subscribing_from_outside_the_room_is_not_found() {
    let (mut room, _) = populated(0, &["alice"]);
    assert!(matches!(
        room.publish(&id("mallory"), track(MediaKind::Audio, "0")),
        Err(RoomError::UnknownParticipant(_))
    ));
    let request = SubscribeRequest {
        peer: "someone-elsewhere".into(),
        kind: MediaKind::Video,
        mode: SubscribeMode::Pin,
        max_height: HeightLimit::Keep,
    };
    assert_eq!(
        room.subscribe(&id("alice"), &request),
        Err(RoomError::UnknownParticipant("someone-elsewhere".into()))
    );
}

#[test]
fn video_is_limited_to_the_last_n_speakers_and_audio_is_not() {
    let names = ["a", "b", "c", "d", "e"];
    let (mut room, ids) = populated(2, &names);
    // Nobody has spoken: the earliest joiners other than oneself fill the slots.
    let video_of = |room: &Room, who: &str| -> Vec<usize> {
        let receives = room.receives(&id(who));
        (0..names.len())
            .filter(|i| receives.contains(&ids[*i].1))
            .collect()
    };
    assert_eq!(video_of(&room, "a"), vec![1, 2]);
    assert_eq!(video_of(&room, "c"), vec![0, 1]);
    for who in names {
        let audio = room
            .receives(&id(who))
            .iter()
            .filter(|p| ids.iter().any(|(a, _)| a == *p))
            .count();
        assert_eq!(audio, 4, "{who} hears everyone else");
    }

    // e then d speak: they take the slots, the others' video pauses.
    room.set_active_speakers(&[id("e")]);
    room.set_active_speakers(&[id("d")]);
    drain(&mut room);
    assert_eq!(video_of(&room, "a"), vec![3, 4]);
    // d itself gets the most recent speaker other than itself, then the next.
    assert_eq!(video_of(&room, "d"), vec![0, 4]);

    // b speaks: a's oldest slot (e) pauses, b resumes with a keyframe.
    room.set_active_speakers(&[id("b")]);
    let actions = drain(&mut room);
    assert!(actions.contains(&RoomAction::Pause {
        subscriber: id("a"),
        producer: ids[4].1
    }));
    assert!(actions.contains(&RoomAction::Resume {
        subscriber: id("a"),
        producer: ids[1].1,
        keyframe: true
    }));
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            RoomAction::AddTrack { .. } | RoomAction::RemoveTrack { .. }
        )),
        "a speaker change never renegotiates: {actions:?}"
    );
    assert_eq!(video_of(&room, "a"), vec![1, 3]);
}

#[test]
fn paused_video_streams_are_counted_and_audio_never_is() {
    let (mut room, _) = populated(1, &["a", "b", "c"]);
    // One video slot each: a and b see c's or the other's video, not both; every audio flows.
    assert_eq!(room.paused_video_streams(), 3);
    subscribe(&mut room, "a", "b", MediaKind::Audio, SubscribeMode::Off);
    assert_eq!(
        room.paused_video_streams(),
        3,
        "audio off is not paused video"
    );
    subscribe(&mut room, "a", "b", MediaKind::Video, SubscribeMode::Pin);
    subscribe(&mut room, "a", "c", MediaKind::Video, SubscribeMode::Pin);
    assert_eq!(room.paused_video_streams(), 2);
    room.leave(&id("c"));
    assert_eq!(room.paused_video_streams(), 0);
}

#[test]
fn last_n_zero_forwards_all_video() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let (room, _) = populated(0, &names);
    assert_eq!(room.receives(&id("a")).len(), 10);
}

#[test]
fn pinned_video_flows_beyond_last_n_and_off_never_flows() {
    let (mut room, ids) = populated(1, &["a", "b", "c", "d"]);
    room.set_active_speakers(&[id("b")]);
    subscribe(&mut room, "a", "d", MediaKind::Video, SubscribeMode::Pin);
    let actions = drain(&mut room);
    assert!(actions.contains(&RoomAction::Resume {
        subscriber: id("a"),
        producer: ids[3].1,
        keyframe: true
    }));
    let receives = room.receives(&id("a"));
    assert!(receives.contains(&ids[1].1), "last-N speaker");
    assert!(receives.contains(&ids[3].1), "pinned");
    assert!(!receives.contains(&ids[2].1), "neither");

    // Off wins even over being the active speaker, for video and for audio.
    subscribe(&mut room, "a", "b", MediaKind::Video, SubscribeMode::Off);
    subscribe(&mut room, "a", "b", MediaKind::Audio, SubscribeMode::Off);
    room.set_active_speakers(&[id("b")]);
    let receives = room.receives(&id("a"));
    assert!(!receives.contains(&ids[1].1));
    assert!(!receives.contains(&ids[1].0));
    assert!(
        room.negotiated(&id("a")).contains(&ids[1].1),
        "the m-line stays"
    );
    // Others are not affected by a's choices.
    assert!(room.receives(&id("c")).contains(&ids[1].1));

    // Back to auto: b's audio flows again, no keyframe needed for audio.
    subscribe(&mut room, "a", "b", MediaKind::Audio, SubscribeMode::Auto);
    let actions = drain(&mut room);
    assert!(actions.contains(&RoomAction::Resume {
        subscriber: id("a"),
        producer: ids[1].0,
        keyframe: false
    }));
}

#[test]
fn a_paused_track_is_added_paused() {
    let (mut room, _) = populated(1, &["a", "b"]);
    room.join(id("c"), &RoomLimits::default()).expect("join");
    drain(&mut room);
    let video = room
        .publish(&id("c"), track(MediaKind::Video, "1"))
        .expect("publish");
    let actions = drain(&mut room);
    // a's one video slot is b's (earlier joiner): c's video arrives paused.
    assert!(actions.contains(&RoomAction::AddTrack {
        subscriber: id("a"),
        producer: video,
        paused: true
    }));
}

#[test]
fn max_height_is_passed_on_for_the_named_kind_only() {
    let (mut room, ids) = populated(0, &["a", "b"]);
    let request = SubscribeRequest {
        peer: "b".into(),
        kind: MediaKind::Video,
        mode: SubscribeMode::Auto,
        max_height: HeightLimit::AtMost(360),
    };
    room.subscribe(&id("a"), &request).expect("subscribe");
    assert_eq!(
        drain(&mut room),
        vec![RoomAction::MaxHeight {
            subscriber: id("a"),
            producer: ids[1].1,
            max_height: Some(360)
        }]
    );
    room.subscribe(&id("a"), &request).expect("again");
    assert!(drain(&mut room).is_empty(), "unchanged: nothing to do");
    assert_eq!(
        room.subscription(&id("a"), &id("b"), MediaKind::Video)
            .max_height,
        Some(360)
    );
    // Absent keeps the limit; null lifts it.
    let keep = SubscribeRequest {
        max_height: HeightLimit::Keep,
        ..request.clone()
    };
    room.subscribe(&id("a"), &keep).expect("keep");
    assert!(drain(&mut room).is_empty(), "kept: nothing to do");
    let lift = SubscribeRequest {
        max_height: HeightLimit::Lift,
        ..request
    };
    room.subscribe(&id("a"), &lift).expect("lift");
    assert_eq!(
        drain(&mut room),
        vec![RoomAction::MaxHeight {
            subscriber: id("a"),
            producer: ids[1].1,
            max_height: None
        }]
    );
}

#[test]
fn muted_changes_are_told_to_the_others_once() {
    let (mut room, ids) = populated(0, &["a", "b", "c"]);
    room.set_muted(ids[0].0, true);
    room.set_muted(ids[0].0, true);
    let actions = drain(&mut room);
    assert_eq!(actions.len(), 2, "{actions:?}");
    for who in ["b", "c"] {
        assert!(actions.contains(&RoomAction::Send {
            to: id(who),
            message: ServerMessage::Muted {
                peer: "a".into(),
                kind: MediaKind::Audio,
                muted: true
            }
        }));
    }
}

#[test]
fn active_speakers_are_told_to_everyone() {
    let (mut room, _) = populated(0, &["a", "b"]);
    room.set_active_speakers(&[id("b"), id("a")]);
    let sends: Vec<_> = drain(&mut room)
        .into_iter()
        .filter(|a| matches!(a, RoomAction::Send { .. }))
        .collect();
    assert_eq!(sends.len(), 2);
    assert!(sends.contains(&RoomAction::Send {
        to: id("a"),
        message: ServerMessage::ActiveSpeakers {
            peers: vec!["b".into(), "a".into()]
        }
    }));
}

#[test]
fn a_newcomer_is_told_the_current_speakers_and_muted_tracks_at_once() {
    let (mut room, ids) = populated(0, &["a", "b", "c"]);
    room.set_active_speakers(&[id("b"), id("a")]);
    room.set_muted(ids[2].1, true);
    room.leave(&id("a"));
    drain(&mut room);
    room.join(id("d"), &RoomLimits::default()).expect("join");
    let sends: Vec<_> = drain(&mut room)
        .into_iter()
        .filter(|a| matches!(a, RoomAction::Send { .. }))
        .collect();
    // The speaker who left is not in the list; only c's video is muted; only d is told.
    assert_eq!(
        sends,
        vec![
            RoomAction::Send {
                to: id("d"),
                message: ServerMessage::ActiveSpeakers {
                    peers: vec!["b".into()]
                }
            },
            RoomAction::Send {
                to: id("d"),
                message: ServerMessage::Muted {
                    peer: "c".into(),
                    kind: MediaKind::Video,
                    muted: true
                }
            },
        ]
    );
}

#[test]
fn a_newcomer_to_a_quiet_room_is_told_nothing() {
    let (mut room, _) = populated(0, &["a", "b"]);
    room.set_active_speakers(&[id("a")]);
    room.set_active_speakers(&[]);
    drain(&mut room);
    room.join(id("c"), &RoomLimits::default()).expect("join");
    assert!(!drain(&mut room)
        .iter()
        .any(|a| matches!(a, RoomAction::Send { .. })));
}

#[test]
fn the_rooms_own_track_reaches_every_participant_and_newcomers() {
    let (mut room, _) = populated(0, &["a", "b"]);
    let bot = room.publish_room_track(id("remotemedia-room"), track(MediaKind::Audio, "x"));
    for who in ["a", "b"] {
        assert!(
            room.receives(&id(who)).contains(&bot),
            "{who} gets the room's track"
        );
    }
    room.join(id("c"), &RoomLimits::default()).expect("join");
    assert!(room.receives(&id("c")).contains(&bot));
    room.leave(&id("a"));
    assert!(
        room.producer(bot).is_some(),
        "the room's track outlives its participants"
    );
}

#[test]
fn layer_heights_are_recorded_per_rid() {
    let (mut room, _) = populated(0, &["a"]);
    let mut simulcast = track(MediaKind::Video, "2");
    simulcast.layers = ["q", "h", "f"]
        .into_iter()
        .map(|rid| crate::room::Layer {
            rid: rid.into(),
            height: None,
        })
        .collect();
    let producer = room.publish(&id("a"), simulcast).expect("publish");
    assert!(room.set_layer_height(producer, "h", 360));
    assert!(!room.set_layer_height(producer, "h", 360), "unchanged");
    assert!(!room.set_layer_height(producer, "x", 360), "no such rid");
    let layers = &room.producer(producer).expect("published").track.layers;
    assert_eq!(layers[1].height, Some(360));
    assert_eq!(layers[0].height, None);
}
