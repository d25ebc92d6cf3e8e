//! A room participant for the cluster tests: announces `room=<name>` through a frontend,
//! speaks a tone, answers the server's offers (each renegotiation) and records what it hears
//! from each peer (by the forwarded track's msid stream: the publisher's id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use remotemedia_webrtc::media::dominant_frequency;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp,
};
use tokio_util::sync::CancellationToken;

use super::client::{connect_to_server, spawn_recording, spawn_tone_at, ClientOptions, ClientPeer};
use super::cluster::Node;
use super::eventually;
use super::signaling::{SignalingClient, SERVER};

/// What a participant sends on its microphone.
pub enum Voice {
    /// A 0.5 sine of this frequency (−9 dBov: a speaker to the room).
    Tone(f32),
    /// These 48 kHz mono samples, over and over.
    Recording(Arc<Vec<f32>>),
}

/// tests/data/speech_48k.wav: a recorded voice, 48 kHz mono.
pub fn recorded_speech() -> Vec<f32> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/speech_48k.wav");
    let mut reader = hound::WavReader::open(path).unwrap();
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

/// One participant; [`RoomSpeaker::leave`] (or dropping `stop`'s token) ends its session.
pub struct RoomSpeaker {
    pub id: String,
    /// Samples heard, by publisher id.
    pub heard: Arc<Mutex<HashMap<String, Vec<f32>>>>,
    /// Server offers answered (each renegotiation).
    pub answered: Arc<Mutex<usize>>,
    /// Notifications other than offers and candidates, in arrival order (PeerJoined,
    /// PeerLeft, PeerDisconnected...).
    pub notifications: Arc<Mutex<Vec<Notification>>>,
    /// The room channel's messages so far (active speakers, mutes, the pipeline's data).
    pub room_messages: Arc<Mutex<Vec<serde_json::Value>>>,
    pub stop: CancellationToken,
}

impl RoomSpeaker {
    /// Joins `room` through `frontend` as `id`, speaking `frequency` Hz.
    pub async fn join(frontend: &Node, room: &str, id: &str, frequency: f32) -> Self {
        let metadata = HashMap::from([("room".to_owned(), room.to_owned())]);
        Self::join_with(frontend, id, metadata, Voice::Tone(frequency)).await
    }

    /// [`RoomSpeaker::join`] with the announce's whole metadata and what it says.
    pub async fn join_with(
        frontend: &Node,
        id: &str,
        metadata: HashMap<String, String>,
        voice: Voice,
    ) -> Self {
        let (mut signaling, _) =
            SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        let stop = CancellationToken::new();
        let mic = peer.audio.clone().unwrap();
        match voice {
            Voice::Tone(frequency) => spawn_tone_at(mic, frequency, 0.5, stop.clone()),
            Voice::Recording(samples) => spawn_recording(mic, samples, stop.clone()),
        };
        let heard = Arc::clone(&peer.heard);
        let room_messages = Arc::clone(&peer.room_messages);
        let answered = Arc::new(Mutex::new(0));
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let (count, told, until) = (
            Arc::clone(&answered),
            Arc::clone(&notifications),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !until.is_cancelled() {
                let Some(next) = signaling.next_within(Duration::from_millis(20)).await else {
                    continue;
                };
                let Ok(Some(response)) = next else { break };
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::Offer(offer)),
                    })) if offer.from_peer_id == SERVER => {
                        let sdp = peer.answer_offer(offer.sdp).await;
                        let request = signaling.answer_server(sdp, Some(offer.offer_id)).await;
                        signaling.expect_ack(&request).await;
                        *count.lock() += 1;
                    }
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::IceCandidate(candidate)),
                    })) => peer.add_remote_candidate(&candidate).await,
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(other),
                    })) => told.lock().push(other),
                    _ => {}
                }
            }
            // Leaves the room as a client does: its server session ends (unless the server
            // already ended the stream: its worker was killed).
            let leave = pb::SignalingRequest {
                request_id: "leave".into(),
                request: Some(Req::Disconnect(pb::DisconnectRequest {
                    peer_id: SERVER.into(),
                })),
            };
            if signaling.try_send_raw(leave).await {
                let _ = signaling.next_within(Duration::from_secs(2)).await;
            }
            peer.close().await;
        });
        Self {
            id: id.to_owned(),
            heard,
            answered,
            notifications,
            room_messages,
            stop,
        }
    }

    /// Leaves the room (ends the server session and closes the connection).
    pub fn leave(&self) {
        self.stop.cancel();
    }

    /// Waits for a second of `from`'s audio and returns its dominant frequency.
    pub async fn hears(&self, from: &str) -> f32 {
        eventually(&format!("{} to hear {from}", self.id), || async {
            self.heard
                .lock()
                .get(from)
                .is_some_and(|s| s.len() >= 48_000)
        })
        .await;
        let heard = self.heard.lock();
        let samples = &heard[from];
        dominant_frequency(&samples[samples.len() - 48_000..], 48_000)
    }

    /// The latest active speaker list the room channel told (none before the first).
    pub fn speakers(&self) -> Option<Vec<String>> {
        self.room_messages
            .lock()
            .iter()
            .rev()
            .find(|m| m["type"] == "active_speakers")
            .map(|m| {
                m["peers"]
                    .as_array()
                    .map(|peers| {
                        peers
                            .iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            })
    }

    /// Clears what was heard so far, so the next [`RoomSpeaker::hears`] waits for fresh audio.
    pub fn forget_heard(&self) {
        self.heard.lock().clear();
    }
}
