//! A participant's room channel (`remotemedia-room`): the data channel on which the room
//! tells it the track map, speakers, mutes and the pipeline's data, and reads its
//! subscription messages. Opened by the room on the participant's connection; its
//! messages go to the room's task as [`Command::Message`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webrtc::data_channel::RTCDataChannel;

use super::room_actor::{Command, Member};
use crate::proto::common::{data_buffer::DataType, DataBuffer, JsonData};
use crate::room::{ClientMessage, ParticipantId};

/// The room channel's label.
pub(crate) const ROOM_CHANNEL: &str = "remotemedia-room";
/// Room channel messages waiting for the channel to open or the client to take them; more
/// are dropped (a track map is sent again after every renegotiation). A newcomer is told
/// the speakers and every muted track of a full room at once: 2 × 16 + 1 fit.
const ROOM_CHANNEL_QUEUE: usize = 64;

/// Opens the room channel on the participant's connection (negotiated in its first server
/// offer when the client opened no channel) and starts the task that sends and reads on it.
pub(crate) async fn open_room_channel(
    member: &Member,
    tasks: &TaskTracker,
    commands: mpsc::WeakSender<Command>,
) -> Option<mpsc::Sender<String>> {
    let channel = match member.pc.create_data_channel(ROOM_CHANNEL, None).await {
        Ok(channel) => channel,
        Err(err) => {
            tracing::warn!(peer = %member.peer, %err, "no room channel");
            return None;
        }
    };
    let (open_tx, open_rx) = watch::channel(false);
    channel.on_open(Box::new(move || {
        let _ = open_tx.send(true);
        Box::pin(async {})
    }));
    let (tx, rx) = mpsc::channel(ROOM_CHANNEL_QUEUE);
    let reader = RoomChannelReader {
        peer: member.peer.clone(),
        session: member.session,
        commands,
    };
    tasks.spawn(run_room_channel(
        channel,
        open_rx,
        rx,
        reader,
        tasks.clone(),
        member.cancel.clone(),
    ));
    Some(tx)
}

/// Once the room channel is open: reads the client's messages on a task of its own, and
/// sends the room's as `DataBuffer{json{schema_type:"room"}}`.
async fn run_room_channel(
    channel: Arc<RTCDataChannel>,
    mut open: watch::Receiver<bool>,
    mut messages: mpsc::Receiver<String>,
    reader: RoomChannelReader,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    tokio::select! {
        opened = open.wait_for(|open| *open) => if opened.is_err() { return },
        () = cancel.cancelled() => return,
    }
    // Data channels are detached on this stack (peer/data_channel.rs): read them ourselves.
    match channel.detach().await {
        Ok(raw) => {
            tasks.spawn(reader.run(raw, cancel.clone()));
        }
        Err(err) => tracing::warn!(%err, "cannot read the room channel"),
    }
    loop {
        let json = tokio::select! {
            json = messages.recv() => match json { Some(json) => json, None => break },
            () = cancel.cancelled() => break,
        };
        let buffer = DataBuffer {
            data_type: Some(DataType::Json(JsonData {
                json_payload: json,
                schema_type: "room".into(),
            })),
            metadata: HashMap::default(),
        };
        let data = bytes::Bytes::from(prost::Message::encode_to_vec(&buffer));
        if let Err(err) = channel.send(&data).await {
            tracing::debug!(%err, "room channel send failed");
        }
    }
}

/// Hands a participant's room channel messages to its room.
struct RoomChannelReader {
    peer: ParticipantId,
    session: u64,
    commands: mpsc::WeakSender<Command>,
}

impl RoomChannelReader {
    /// Reads until the channel or the session ends. A message the room cannot take (too
    /// large, not JSON, an unknown type) is dropped, counted and logged; the channel stays.
    async fn run(
        self,
        channel: Arc<webrtc::data::data_channel::DataChannel>,
        cancel: CancellationToken,
    ) {
        // SCTP completes a message of any size up to its window; a smaller buffer would make
        // the read fail and close the channel, so read whole and judge the size after.
        let mut buffer = vec![0u8; ROOM_CHANNEL_READ_BYTES];
        loop {
            let received = channel.messages_received();
            let read = tokio::select! {
                read = channel.read_data_channel(&mut buffer) => read,
                () = cancel.cancelled() => break,
            };
            let (len, is_string) = match read {
                Ok((0, _)) if channel.messages_received() == received => break,
                Ok(read) => read,
                Err(err) => {
                    tracing::debug!(peer = %self.peer, %err, "room channel read ended");
                    break;
                }
            };
            let message = room_message_text(&buffer[..len], is_string)
                .and_then(|text| ClientMessage::parse(&text).map_err(|e| e.to_string()));
            let message = match message {
                Ok(message) => message,
                Err(why) => {
                    tracing::debug!(peer = %self.peer, %why, "room channel message dropped");
                    super::data_channel::dropped("malformed");
                    continue;
                }
            };
            let Some(commands) = self.commands.upgrade() else {
                break;
            };
            let command = Command::Message {
                peer: self.peer.clone(),
                session: self.session,
                message,
            };
            // Waiting here slows a client that floods the channel (SCTP flow control).
            if commands.send(command).await.is_err() {
                break;
            }
        }
    }
}

/// Largest room channel read: SCTP's receive window (see peer/data_channel.rs), so any
/// message the client completes is read; the room then refuses anything over 4 KiB.
const ROOM_CHANNEL_READ_BYTES: usize = 1024 * 1024;

/// The JSON text of a client's room channel message: a `DataBuffer` whose json's schema is
/// `room` (or text), or a plain text message.
fn room_message_text(message: &[u8], is_string: bool) -> Result<String, String> {
    if is_string {
        return std::str::from_utf8(message)
            .map(str::to_owned)
            .map_err(|e| e.to_string());
    }
    let buffer: DataBuffer = prost::Message::decode(message).map_err(|e| e.to_string())?;
    match buffer.data_type {
        Some(DataType::Json(json)) if json.schema_type == "room" => Ok(json.json_payload),
        Some(DataType::Json(json)) => {
            Err(format!("json schema {:?}, not \"room\"", json.schema_type))
        }
        Some(DataType::Text(text)) => String::from_utf8(text.text_data).map_err(|e| e.to_string()),
        _ => Err("a room message is JSON or text".into()),
    }
}
