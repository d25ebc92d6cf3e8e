//! The rooms of this process: one task per room ([`RoomActor`]), found by name. A room is
//! created by the offer of its first participant (within `--max-rooms`) and deleted when its
//! last participant leaves; the session manager joins and leaves sessions here.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

use super::room_actor::{
    room_refusal, Command, Member, RoomActor, RoomContext, RoomPipelineChoice,
};
use super::room_relay_link::{RelayRequest, SpanHost};
use super::wiring::PublishedRemote;
use crate::metrics::{limit_hit, Limit};
use crate::room::{ParticipantId, RoomError, RoomName};
use crate::signaling::SessionError;

/// Commands queued for one room's task; senders wait when it is full.
const COMMAND_QUEUE: usize = 64;

struct Entry {
    commands: mpsc::Sender<Command>,
    /// The manifest the room's pipeline runs, if any (later joiners may only repeat it).
    manifest: Option<String>,
    /// Sessions joined (or joining): the room is deleted when this reaches zero.
    members: usize,
}

/// Rooms by name.
pub(crate) struct RoomHub {
    rooms: Mutex<HashMap<RoomName, Entry>>,
    context: Arc<RoomContext>,
}

impl RoomHub {
    pub fn new(context: RoomContext) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            context: Arc::new(context),
        }
    }

    /// Rooms alive now.
    pub fn len(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Joins `member`'s session to `room`, creating the room if it is the first, with the
    /// pipeline the member asks for (`room_manifest`) or else `--room-manifest`'s. Its
    /// published tracks arrive on `published`; it renegotiates once `state` is connected.
    ///
    /// # Errors
    /// `TooManyRooms` when the room would be one more than `--max-rooms`;
    /// `RoomManifestMismatch` when the room runs another pipeline than the one asked for; the
    /// room's refusal.
    pub async fn join(
        &self,
        room: &RoomName,
        member: Member,
        asked: Option<RoomPipelineChoice>,
        published: Option<mpsc::Receiver<PublishedRemote>>,
        state: watch::Receiver<RTCPeerConnectionState>,
    ) -> Result<(), SessionError> {
        let commands = self.enter(room, asked)?;
        let (peer, session, cancel) = (member.peer.clone(), member.session, member.cancel.clone());
        let (reply, joined) = oneshot::channel();
        let joined = match commands.send(Command::Join { member, reply }).await {
            Ok(()) => joined
                .await
                .unwrap_or_else(|_| Err(SessionError::Internal("the room ended".into()))),
            Err(_) => Err(SessionError::Internal("the room ended".into())),
        };
        if let Err(err) = joined {
            self.leave(room, &peer, session).await;
            return Err(err);
        }
        self.context.tasks.spawn(feed_member(
            commands, peer, session, published, state, cancel,
        ));
        Ok(())
    }

    /// Whether a participant asking for the room pipeline `asked` may join `room` as it is
    /// now (checked before its connection is made; [`Self::join`] checks again).
    ///
    /// # Errors
    /// `RoomManifestMismatch`.
    pub fn check_manifest(&self, room: &RoomName, asked: &str) -> Result<(), SessionError> {
        match self.rooms.lock().get(room) {
            Some(entry) => manifest_matches(room, entry, asked),
            None => Ok(()),
        }
    }

    /// The room's handle for one more session; creates the room if needed.
    fn enter(
        &self,
        room: &RoomName,
        asked: Option<RoomPipelineChoice>,
    ) -> Result<mpsc::Sender<Command>, SessionError> {
        let mut rooms = self.rooms.lock();
        if let Some(entry) = rooms.get_mut(room) {
            if let Some(asked) = &asked {
                manifest_matches(room, entry, &asked.name)?;
            }
            entry.members += 1;
            return Ok(entry.commands.clone());
        }
        if let Err(err) = self.context.limits.check_create(rooms.len()) {
            limit_hit(Limit::Rooms, 1);
            return Err(room_refusal(err));
        }
        let pipeline = asked.or_else(|| self.context.pipeline.clone());
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let manifest = pipeline.as_ref().map(|p| p.name.clone());
        let actor = RoomActor::new(
            room.clone(),
            Arc::clone(&self.context),
            pipeline,
            commands.downgrade(),
        );
        self.context.tasks.spawn(actor.run(receiver));
        rooms.insert(
            room.clone(),
            Entry {
                commands: commands.clone(),
                manifest,
                members: 1,
            },
        );
        Ok(commands)
    }

    /// A joined session ended: its tracks leave every other participant; the room is deleted
    /// with its last participant.
    pub async fn leave(&self, room: &RoomName, peer: &ParticipantId, session: u64) {
        let commands = {
            let mut rooms = self.rooms.lock();
            let Some(entry) = rooms.get_mut(room) else {
                return;
            };
            entry.members = entry.members.saturating_sub(1);
            let commands = entry.commands.clone();
            if entry.members == 0 {
                rooms.remove(room);
            }
            commands
        };
        let _ = commands
            .send(Command::Leave {
                peer: peer.clone(),
                session,
            })
            .await;
    }

    /// The participant's answer to its pending server offer.
    ///
    /// # Errors
    /// `FailedPrecondition` when no offer is pending or `offer_id` names another; `InvalidSdp`.
    pub async fn answer(
        &self,
        room: &RoomName,
        peer: &ParticipantId,
        offer_id: Option<&str>,
        sdp: String,
    ) -> Result<(), SessionError> {
        let no_offer = || room_refusal(RoomError::NoOfferPending);
        let commands = self.commands(room).ok_or_else(no_offer)?;
        let (reply, answered) = oneshot::channel();
        let command = Command::Answer {
            peer: peer.clone(),
            offer_id: offer_id.map(str::to_owned),
            sdp,
            reply,
        };
        commands.send(command).await.map_err(|_| no_offer())?;
        answered.await.unwrap_or_else(|_| Err(no_offer()))
    }

    /// The participant's offer on its live connection: the room answers it.
    ///
    /// # Errors
    /// `FailedPrecondition` "server offer pending" (glare); `InvalidSdp`.
    pub async fn client_offer(
        &self,
        room: &RoomName,
        peer: &ParticipantId,
        sdp: String,
    ) -> Result<String, SessionError> {
        let gone = || SessionError::Internal(format!("room {room} has ended"));
        let commands = self.commands(room).ok_or_else(gone)?;
        let (reply, answered) = oneshot::channel();
        let command = Command::ClientOffer {
            peer: peer.clone(),
            sdp,
            reply,
        };
        commands.send(command).await.map_err(|_| gone())?;
        answered.await.unwrap_or_else(|_| Err(gone()))
    }

    /// The video codec of `room` (its video publishers'), when it has any video.
    pub async fn video_codec(&self, room: &RoomName) -> Option<String> {
        let commands = self.commands(room)?;
        let (reply, codec) = oneshot::channel();
        commands.send(Command::VideoCodec { reply }).await.ok()?;
        codec.await.ok().flatten()
    }

    /// `peer`'s signaling stream broke (`true`, its resume grace) or came back.
    pub async fn set_detached(&self, room: &RoomName, peer: &ParticipantId, detached: bool) {
        if let Some(commands) = self.commands(room) {
            let command = Command::Detached {
                peer: peer.clone(),
                detached,
            };
            let _ = commands.send(command).await;
        }
    }

    /// Whether a server offer to `peer` waits for its answer (a client offer then is glare).
    pub async fn offer_pending(&self, room: &RoomName, peer: &ParticipantId) -> bool {
        let Some(commands) = self.commands(room) else {
            return false;
        };
        let (reply, pending) = oneshot::channel();
        let command = Command::OfferPending {
            peer: peer.clone(),
            reply,
        };
        commands.send(command).await.is_ok() && pending.await.unwrap_or(false)
    }

    /// Lets this process's rooms span workers through `host` (a worker's relay; once).
    pub fn set_span(&self, host: Arc<dyn SpanHost>) {
        let _ = self.context.span.set(host);
    }

    /// Another worker's relay request for `room`; false when the room has no participant
    /// here.
    pub async fn relay(&self, room: &RoomName, request: RelayRequest) -> bool {
        match self.commands(room) {
            Some(commands) => commands.send(Command::Relay(request)).await.is_ok(),
            None => false,
        }
    }

    fn commands(&self, room: &RoomName) -> Option<mpsc::Sender<Command>> {
        self.rooms.lock().get(room).map(|e| e.commands.clone())
    }
}

/// A joiner's `room_manifest` must name the pipeline the room runs.
fn manifest_matches(room: &RoomName, entry: &Entry, asked: &str) -> Result<(), SessionError> {
    if entry.manifest.as_deref() == Some(asked) {
        return Ok(());
    }
    Err(room_refusal(RoomError::RoomManifestMismatch {
        room: room.to_string(),
        runs: entry
            .manifest
            .as_ref()
            .map_or_else(|| "no pipeline".to_owned(), |m| format!("pipeline {m:?}")),
        asked: asked.to_owned(),
    }))
}

/// Tells the room of one session's connection and of the tracks it publishes, until the
/// session ends.
async fn feed_member(
    commands: mpsc::Sender<Command>,
    peer: ParticipantId,
    session: u64,
    mut published: Option<mpsc::Receiver<PublishedRemote>>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    cancel: CancellationToken,
) {
    let mut connected = false;
    loop {
        let command = tokio::select! {
            () = cancel.cancelled() => break,
            now = state.wait_for(|s| *s == RTCPeerConnectionState::Connected), if !connected => {
                if now.is_err() {
                    break;
                }
                connected = true;
                Command::Connected { peer: peer.clone(), session }
            }
            track = next(&mut published) => match track {
                Some(published) => Command::Published { peer: peer.clone(), session, published },
                None => {
                    published = None;
                    continue;
                }
            },
        };
        if commands.send(command).await.is_err() {
            break;
        }
    }
}

async fn next<T>(receiver: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
