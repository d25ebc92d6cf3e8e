//! One room: its participants, the tracks they publish, what each subscriber asked for, and
//! from that who gets what (mediasoup's *Router*, LiveKit's room in `pkg/rtc`).
//!
//! Sans-IO: every input is a method call, every consequence an [`RoomAction`] drained with
//! [`Room::poll_action`]; the adapter in `peer/` applies them to the connections. A forwarded
//! track is *negotiated* (an m-line in the subscriber's SDP) for every other participant's
//! track; whether RTP *flows* on it (active or paused) follows last-N, pins and `off`. So a
//! speaker change pauses and resumes streams without renegotiating.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::error::RoomError;
use super::limits::RoomLimits;
use super::messages::{ServerMessage, SubscribeMode, SubscribeRequest};
use super::names::{ParticipantId, RoomName};
use super::track::{MediaKind, Origin, Producer, ProducerId, PublishedTrack};

/// What the adapter must do after an input.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomAction {
    /// Add a sendonly forwarded track for `producer` to the subscriber's connection (an m-line;
    /// renegotiation follows). `paused`: send no RTP on it until [`RoomAction::Resume`].
    AddTrack {
        subscriber: ParticipantId,
        producer: ProducerId,
        paused: bool,
    },
    /// Remove the forwarded track (its m-line becomes recyclable; renegotiation follows).
    RemoveTrack {
        subscriber: ParticipantId,
        producer: ProducerId,
    },
    /// Stop sending RTP of `producer` to the subscriber (the m-line stays).
    Pause {
        subscriber: ParticipantId,
        producer: ProducerId,
    },
    /// Send RTP again; for video, from a keyframe (ask the publisher for one, bypassing the
    /// per-source PLI throttle, unless one is already in flight).
    Resume {
        subscriber: ParticipantId,
        producer: ProducerId,
        keyframe: bool,
    },
    /// The subscriber's highest wanted video layer changed (input to its layer choice).
    MaxHeight {
        subscriber: ParticipantId,
        producer: ProducerId,
        max_height: Option<u32>,
    },
    /// A room channel message for one participant.
    Send {
        to: ParticipantId,
        message: ServerMessage,
    },
}

/// What one subscriber asked for one publisher's track of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscription {
    pub mode: SubscribeMode,
    pub max_height: Option<u32>,
}

#[derive(Debug, Default)]
struct Participant {
    /// Join order: fills last-N video slots nobody's speech has claimed yet.
    joined: u64,
    /// Keyed by (publisher, kind); absent means `auto` without a height limit.
    subscriptions: BTreeMap<(ParticipantId, MediaKind), Subscription>,
    /// Producers with a forwarded m-line on this participant's connection.
    negotiated: BTreeSet<ProducerId>,
    /// The negotiated producers whose RTP flows to this participant now.
    active: BTreeSet<ProducerId>,
}

#[derive(Debug)]
struct ProducerState {
    producer: Producer,
    muted: bool,
}

/// A room's state on the worker that hosts it.
#[derive(Debug)]
pub struct Room {
    name: RoomName,
    /// `--room-video-last-n`: video from this many most recent speakers (0 = everyone's).
    video_last_n: usize,
    participants: BTreeMap<ParticipantId, Participant>,
    producers: BTreeMap<ProducerId, ProducerState>,
    next_producer: u64,
    next_join: u64,
    /// Participants by how recently they were among the active speakers, most recent first.
    recency: Vec<ParticipantId>,
    /// The active speaker list last told (a newcomer is told it at once).
    speakers: Vec<String>,
    /// Drained by the adapter after every input, so bounded by one input's consequences
    /// (at most a few per participant pair).
    actions: VecDeque<RoomAction>,
}

impl Room {
    pub fn new(name: RoomName, video_last_n: usize) -> Self {
        Self {
            name,
            video_last_n,
            participants: BTreeMap::new(),
            producers: BTreeMap::new(),
            next_producer: 0,
            next_join: 0,
            recency: Vec::new(),
            speakers: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// Participants in join order.
    pub fn participants(&self) -> Vec<&ParticipantId> {
        let mut ids: Vec<_> = self.participants.iter().collect();
        ids.sort_by_key(|(_, p)| p.joined);
        ids.into_iter().map(|(id, _)| id).collect()
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// An empty room is deleted by its owner (compare-and-delete of its record).
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn contains(&self, id: &ParticipantId) -> bool {
        self.participants.contains_key(id)
    }

    /// Adds a participant; it is given every track already published (as `AddTrack` actions)
    /// and told the current active speakers and muted tracks, which are otherwise only sent
    /// when they change.
    ///
    /// # Errors
    /// `RoomFull` at the limit, `AlreadyJoined` for a duplicate id.
    pub fn join(&mut self, id: ParticipantId, limits: &RoomLimits) -> Result<(), RoomError> {
        if self.participants.contains_key(&id) {
            return Err(RoomError::AlreadyJoined(id.to_string()));
        }
        limits.check_join(&self.name, self.participants.len())?;
        let joined = self.next_join;
        self.next_join += 1;
        self.participants.insert(
            id.clone(),
            Participant {
                joined,
                ..Participant::default()
            },
        );
        self.tell_state(&id);
        self.reconcile();
        Ok(())
    }

    /// The room's current speakers and muted tracks, for a participant that just joined.
    fn tell_state(&mut self, newcomer: &ParticipantId) {
        if !self.speakers.is_empty() {
            self.actions.push_back(RoomAction::Send {
                to: newcomer.clone(),
                message: ServerMessage::ActiveSpeakers {
                    peers: self.speakers.clone(),
                },
            });
        }
        for state in self.producers.values().filter(|s| s.muted) {
            self.actions.push_back(RoomAction::Send {
                to: newcomer.clone(),
                message: ServerMessage::Muted {
                    peer: state.producer.publisher.to_string(),
                    kind: state.producer.track.kind,
                    muted: true,
                },
            });
        }
    }

    /// Removes a participant and everything it published from every subscriber.
    /// Leaving twice is harmless (stream end and session close may both report it).
    pub fn leave(&mut self, id: &ParticipantId) {
        if self.participants.remove(id).is_none() {
            return;
        }
        self.producers
            .retain(|_, state| &state.producer.publisher != id);
        self.recency.retain(|p| p != id);
        let left = id.to_string();
        self.speakers.retain(|p| *p != left);
        for participant in self.participants.values_mut() {
            participant
                .subscriptions
                .retain(|(publisher, _), _| publisher != id);
        }
        self.reconcile();
    }

    /// Records a track a participant publishes; every other participant gets it.
    ///
    /// # Errors
    /// `UnknownParticipant` when the publisher is not in the room.
    pub fn publish(
        &mut self,
        publisher: &ParticipantId,
        track: PublishedTrack,
    ) -> Result<ProducerId, RoomError> {
        if !self.participants.contains_key(publisher) {
            return Err(RoomError::UnknownParticipant(publisher.to_string()));
        }
        Ok(self.add_producer(publisher.clone(), track, Origin::Local))
    }

    /// A track published on another worker of the room (`origin`: that worker and its
    /// producer id there), relayed here: every participant here gets it, exactly as a local
    /// participant's. Its publisher is no participant here (it joined on its own worker;
    /// signaling tells the clients about it, not the room).
    pub fn publish_remote(
        &mut self,
        publisher: ParticipantId,
        track: PublishedTrack,
        worker: String,
        remote_producer: u64,
    ) -> ProducerId {
        let origin = Origin::Remote {
            worker,
            producer: remote_producer,
        };
        self.add_producer(publisher, track, origin)
    }

    /// The remote producers here, by their origin.
    pub fn remote_producers(&self) -> BTreeMap<Origin, ProducerId> {
        self.producers
            .values()
            .filter(|s| s.producer.origin != Origin::Local)
            .map(|s| (s.producer.origin.clone(), s.producer.id))
            .collect()
    }

    /// The local producers (published by participants here, and the room's own track when
    /// its pipeline runs here), in publishing order: what this worker lists in the room's
    /// record.
    pub fn local_producers(&self) -> impl Iterator<Item = &Producer> {
        self.producers
            .values()
            .map(|s| &s.producer)
            .filter(|p| p.origin == Origin::Local)
    }

    /// The room's own track (its pipeline's audio), published as `publisher`, a name that is
    /// no participant's: every participant gets it.
    pub fn publish_room_track(
        &mut self,
        publisher: ParticipantId,
        track: PublishedTrack,
    ) -> ProducerId {
        self.add_producer(publisher, track, Origin::Local)
    }

    /// A new producer every participant but its publisher gets.
    fn add_producer(
        &mut self,
        publisher: ParticipantId,
        track: PublishedTrack,
        origin: Origin,
    ) -> ProducerId {
        let id = ProducerId(self.next_producer);
        self.next_producer += 1;
        let producer = Producer {
            id,
            publisher,
            track,
            origin,
        };
        self.producers.insert(
            id,
            ProducerState {
                producer,
                muted: false,
            },
        );
        self.reconcile();
        id
    }

    /// Removes a published track from every subscriber (the publisher removed its m-line).
    pub fn unpublish(&mut self, producer: ProducerId) {
        let Some(state) = self.producers.remove(&producer) else {
            return;
        };
        // A publisher on another worker whose last track went is gone from here: out of the
        // speakers and the last-N order too.
        let publisher = state.producer.publisher;
        if !self.is_member(&publisher) {
            self.recency.retain(|p| *p != publisher);
            let gone = publisher.to_string();
            self.speakers.retain(|p| *p != gone);
        }
        self.reconcile();
    }

    /// A simulcast layer's height, read from its latest VP8 keyframe header (layer choice
    /// compares it with each subscriber's `max_height`). Returns whether it changed.
    pub fn set_layer_height(&mut self, producer: ProducerId, rid: &str, height: u32) -> bool {
        let Some(layer) = self
            .producers
            .get_mut(&producer)
            .and_then(|s| s.producer.track.layers.iter_mut().find(|l| l.rid == rid))
        else {
            return false;
        };
        let changed = layer.height != Some(height);
        layer.height = Some(height);
        changed
    }

    pub fn producer(&self, id: ProducerId) -> Option<&Producer> {
        self.producers.get(&id).map(|state| &state.producer)
    }

    /// The producers with a forwarded m-line on `subscriber`'s connection.
    pub fn negotiated(&self, subscriber: &ParticipantId) -> BTreeSet<ProducerId> {
        self.participants
            .get(subscriber)
            .map(|p| p.negotiated.clone())
            .unwrap_or_default()
    }

    /// The producers whose RTP `subscriber` receives now (who gets what).
    pub fn receives(&self, subscriber: &ParticipantId) -> BTreeSet<ProducerId> {
        self.participants
            .get(subscriber)
            .map(|p| p.active.clone())
            .unwrap_or_default()
    }

    /// Forwarded video streams paused now: negotiated on a subscriber's connection, sending
    /// no RTP (last-N, `off`).
    pub fn paused_video_streams(&self) -> usize {
        self.participants
            .values()
            .map(|p| {
                p.negotiated
                    .difference(&p.active)
                    .filter(|id| {
                        self.producers
                            .get(id)
                            .is_some_and(|s| s.producer.track.kind == MediaKind::Video)
                    })
                    .count()
            })
            .sum()
    }

    /// What `subscriber` asked for `publisher`'s track of `kind` (the default: auto, no limit).
    pub fn subscription(
        &self,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        kind: MediaKind,
    ) -> Subscription {
        self.participants
            .get(subscriber)
            .and_then(|p| p.subscriptions.get(&(publisher.clone(), kind)))
            .copied()
            .unwrap_or_default()
    }

    /// A subscriber's `subscribe` message from the room channel.
    ///
    /// # Errors
    /// `UnknownParticipant` when the subscriber or the named peer is not in this room (a peer
    /// of another room is NOT_FOUND, as if it did not exist). A peer on another worker of the
    /// room is known here by its relayed tracks.
    pub fn subscribe(
        &mut self,
        subscriber: &ParticipantId,
        request: &SubscribeRequest,
    ) -> Result<(), RoomError> {
        let publisher = ParticipantId::parse(&request.peer)
            .map_err(|_| RoomError::UnknownParticipant(request.peer.clone()))?;
        if !self.participants.contains_key(&publisher)
            && self.producers_of(&publisher).next().is_none()
        {
            return Err(RoomError::UnknownParticipant(request.peer.clone()));
        }
        let participant = self
            .participants
            .get_mut(subscriber)
            .ok_or_else(|| RoomError::UnknownParticipant(subscriber.to_string()))?;
        let entry = participant
            .subscriptions
            .entry((publisher.clone(), request.kind))
            .or_default();
        entry.mode = request.mode;
        let max_height = request.max_height.apply(entry.max_height);
        let height_changed = entry.max_height != max_height;
        entry.max_height = max_height;
        if height_changed {
            let producers: Vec<ProducerId> = self
                .producers_of(&publisher)
                .filter(|p| p.track.kind == request.kind)
                .map(|p| p.id)
                .collect();
            for producer in producers {
                self.actions.push_back(RoomAction::MaxHeight {
                    subscriber: subscriber.clone(),
                    producer,
                    max_height,
                });
            }
        }
        self.reconcile();
        Ok(())
    }

    /// The speaker detector's new list (loudest first): tells everyone and moves those
    /// speakers to the front of the last-N order.
    pub fn set_active_speakers(&mut self, speakers: &[ParticipantId]) {
        let speakers: Vec<&ParticipantId> = speakers.iter().filter(|s| self.is_member(s)).collect();
        for speaker in speakers.iter().rev() {
            self.recency.retain(|p| p != *speaker);
            self.recency.insert(0, (*speaker).clone());
        }
        let peers: Vec<String> = speakers.iter().map(ToString::to_string).collect();
        self.speakers.clone_from(&peers);
        for to in self.participants.keys() {
            self.actions.push_back(RoomAction::Send {
                to: to.clone(),
                message: ServerMessage::ActiveSpeakers {
                    peers: peers.clone(),
                },
            });
        }
        self.reconcile();
    }

    /// A participant here, or the publisher of a track relayed from another worker of the
    /// room: who may be among the speakers and in the last-N order.
    fn is_member(&self, id: &ParticipantId) -> bool {
        self.participants.contains_key(id)
            || self
                .producers
                .values()
                .any(|s| s.producer.origin != Origin::Local && s.producer.publisher == *id)
    }

    /// A publisher stopped (`true`) or resumed sending a track: the others are told once per
    /// change.
    pub fn set_muted(&mut self, producer: ProducerId, muted: bool) {
        let Some(state) = self.producers.get_mut(&producer) else {
            return;
        };
        if state.muted == muted {
            return;
        }
        state.muted = muted;
        let publisher = state.producer.publisher.clone();
        let kind = state.producer.track.kind;
        for to in self.participants.keys().filter(|p| **p != publisher) {
            self.actions.push_back(RoomAction::Send {
                to: to.clone(),
                message: ServerMessage::Muted {
                    peer: publisher.to_string(),
                    kind,
                    muted,
                },
            });
        }
    }

    /// The next action for the adapter, in the order they arose.
    pub fn poll_action(&mut self) -> Option<RoomAction> {
        self.actions.pop_front()
    }

    fn producers_of<'a>(
        &'a self,
        publisher: &'a ParticipantId,
    ) -> impl Iterator<Item = &'a Producer> {
        self.producers
            .values()
            .map(|s| &s.producer)
            .filter(move |p| &p.publisher == publisher)
    }

    /// Publishers whose video `subscriber` gets under last-N: the most recent speakers, then
    /// (so a quiet room still shows faces) the earliest joiners here, then the publishers on
    /// the room's other workers; never itself.
    fn last_n_video(&self, subscriber: &ParticipantId) -> BTreeSet<ParticipantId> {
        let remote: BTreeSet<&ParticipantId> = self
            .producers
            .values()
            .filter(|s| s.producer.origin != Origin::Local)
            .map(|s| &s.producer.publisher)
            .filter(|p| !self.participants.contains_key(*p))
            .collect();
        let others = self.participants.len().saturating_sub(1) + remote.len();
        let n = if self.video_last_n == 0 {
            others
        } else {
            self.video_last_n.min(others)
        };
        let heard = self.recency.iter().filter(|p| *p != subscriber);
        let unheard = self
            .participants()
            .into_iter()
            .chain(remote)
            .filter(|p| *p != subscriber && !self.recency.contains(*p));
        heard.chain(unheard).take(n).cloned().collect()
    }

    /// Who gets what: brings every participant's negotiated and active sets in line with the
    /// room's tracks and the subscriptions, queueing the differences as actions.
    fn reconcile(&mut self) {
        let ids: Vec<ParticipantId> = self.participants.keys().cloned().collect();
        for subscriber in ids {
            let video_slots = self.last_n_video(&subscriber);
            let mut negotiated = BTreeSet::new();
            let mut active = BTreeSet::new();
            for state in self.producers.values() {
                let producer = &state.producer;
                if producer.publisher == subscriber {
                    continue;
                }
                negotiated.insert(producer.id);
                let mode = self
                    .subscription(&subscriber, &producer.publisher, producer.track.kind)
                    .mode;
                let flows = match (mode, producer.track.kind) {
                    (SubscribeMode::Off, _) => false,
                    (SubscribeMode::Pin, _) | (SubscribeMode::Auto, MediaKind::Audio) => true,
                    (SubscribeMode::Auto, MediaKind::Video) => {
                        video_slots.contains(&producer.publisher)
                    }
                };
                if flows {
                    active.insert(producer.id);
                }
            }
            let Some(participant) = self.participants.get_mut(&subscriber) else {
                continue;
            };
            let mut actions = Vec::new();
            for &producer in participant.negotiated.difference(&negotiated) {
                actions.push(RoomAction::RemoveTrack {
                    subscriber: subscriber.clone(),
                    producer,
                });
            }
            for &producer in negotiated.difference(&participant.negotiated) {
                actions.push(RoomAction::AddTrack {
                    subscriber: subscriber.clone(),
                    producer,
                    paused: !active.contains(&producer),
                });
            }
            for &producer in participant.negotiated.intersection(&negotiated) {
                match (
                    participant.active.contains(&producer),
                    active.contains(&producer),
                ) {
                    (true, false) => actions.push(RoomAction::Pause {
                        subscriber: subscriber.clone(),
                        producer,
                    }),
                    (false, true) => {
                        let keyframe = self
                            .producers
                            .get(&producer)
                            .is_some_and(|s| s.producer.track.kind == MediaKind::Video);
                        actions.push(RoomAction::Resume {
                            subscriber: subscriber.clone(),
                            producer,
                            keyframe,
                        });
                    }
                    _ => {}
                }
            }
            participant.negotiated = negotiated;
            participant.active = active;
            self.actions.extend(actions);
        }
    }
}

#[cfg(test)]
#[path = "room_state_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "remote_tests.rs"]
mod remote_tests;
