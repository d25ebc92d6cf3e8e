//! A room participant of Janus' VideoRoom plugin over the Janus HTTP API: one session with a
//! publisher handle (`joinandconfigure` with the offer) and, once every publisher of the room
//! is in, one subscriber handle for all the others (Janus 1.x multistream: `join` as
//! `subscriber` with `streams: [{feed}…]`; Janus offers, the participant answers with `start`).
//! One publisher and one subscriber peer connection per participant: how VideoRoom is meant
//! to be used; our server's participant has one connection for both.
//!
//! libnice takes no trickle here: offers and answers carry every candidate.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use remotemedia_webrtc::client::SetupTimes;

use super::peer::{answer_offer, RoomPeer};
use crate::error::LoadgenError;
use crate::janus::{id, keep_alive, JanusApi};

/// How long a participant may take from session creation to connected, and to subscribed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
const PLUGIN: &str = "janus.plugin.videoroom";

/// A room the run created, destroyed when the run ends.
pub struct JanusRooms {
    api: JanusApi,
    session: u64,
    handle: u64,
    rooms: Vec<u64>,
}

impl JanusRooms {
    /// Creates `count` rooms of up to `publishers` publishers (Opus, no video) through one
    /// control session.
    ///
    /// # Errors
    /// HTTP or Janus errors.
    pub async fn create(
        api: &JanusApi,
        count: usize,
        publishers: usize,
    ) -> Result<Self, LoadgenError> {
        let session = id(&api.post("", json!({"janus": "create"})).await?)?;
        let handle = id(&api
            .post(
                &format!("/{session}"),
                json!({"janus": "attach", "plugin": PLUGIN}),
            )
            .await?)?;
        let base = u64::from(rand::random::<u32>()) * 10_000;
        let mut rooms = Vec::with_capacity(count);
        for r in 0..count as u64 {
            let room = base + r;
            let reply = api
                .post(
                    &format!("/{session}/{handle}"),
                    json!({"janus": "message", "body": {
                        "request": "create", "room": room, "publishers": publishers,
                        "audiocodec": "opus", "permanent": false,
                    }}),
                )
                .await?;
            plugin_error(&reply)?;
            rooms.push(room);
        }
        Ok(Self {
            api: api.clone(),
            session,
            handle,
            rooms,
        })
    }

    pub fn id(&self, index: usize) -> Option<u64> {
        self.rooms.get(index).copied()
    }

    /// Destroys the rooms and the control session.
    pub async fn destroy(self) {
        let path = format!("/{}/{}", self.session, self.handle);
        for room in self.rooms {
            let body = json!({"janus": "message", "body": {"request": "destroy", "room": room}});
            if let Err(err) = self.api.post(&path, body).await {
                tracing::debug!(%err, "destroying a VideoRoom room");
            }
        }
        let _ = self
            .api
            .post(&format!("/{}", self.session), json!({"janus": "destroy"}))
            .await;
    }
}

/// A participant's Janus session (both handles), kept alive until it leaves.
pub struct JanusParticipant {
    api: JanusApi,
    session: u64,
    poller: Option<JoinHandle<()>>,
}

impl JanusParticipant {
    /// Destroys the session (Janus hangs both peer connections up).
    pub async fn leave(self) {
        if let Some(poller) = self.poller {
            poller.abort();
        }
        let path = format!("/{}", self.session);
        if let Err(err) = self.api.post(&path, json!({"janus": "destroy"})).await {
            tracing::debug!(%err, "destroying a Janus session");
        }
    }
}

/// Publishes `publisher`'s track in `room`, adds its feed id to `feeds`, waits for the room's
/// other `others` feeds and subscribes to them with `subscriber`.
///
/// # Errors
/// HTTP or Janus errors, a WebRTC failure or a timeout.
pub async fn join(
    api: &JanusApi,
    room: u64,
    publisher: &mut RoomPeer,
    subscriber: &RoomPeer,
    feeds: &watch::Sender<Vec<u64>>,
    others: usize,
) -> Result<(JanusParticipant, SetupTimes), LoadgenError> {
    let session = id(&api.post("", json!({"janus": "create"})).await?)?;
    let mut participant = JanusParticipant {
        api: api.clone(),
        session,
        poller: None,
    };
    let setup = async {
        let (feed, times) = publish(api, session, room, publisher).await?;
        feeds.send_modify(|ids| ids.push(feed));
        let mut ready = feeds.subscribe();
        let others_ids: Vec<u64> = ready
            .wait_for(|ids| ids.len() > others)
            .await
            .map_err(|_| LoadgenError::Room("the room's feeds went away".into()))?
            .iter()
            .copied()
            .filter(|&id| id != feed)
            .collect();
        subscribe(api, session, room, &others_ids, subscriber).await?;
        Ok::<_, LoadgenError>(times)
    };
    match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(times)) => {
            participant.poller = Some(tokio::spawn(keep_alive(api.clone(), session)));
            Ok((participant, times))
        }
        Ok(Err(err)) => {
            participant.leave().await;
            Err(err)
        }
        Err(_) => {
            participant.leave().await;
            Err(LoadgenError::Room("VideoRoom setup timed out".into()))
        }
    }
}

async fn publish(
    api: &JanusApi,
    session: u64,
    room: u64,
    peer: &mut RoomPeer,
) -> Result<(u64, SetupTimes), LoadgenError> {
    let handle = attach(api, session).await?;
    let sdp = peer.offer(true).await?;
    let started = Instant::now();
    api.post(
        &format!("/{session}/{handle}"),
        json!({
            "janus": "message",
            "body": {"request": "joinandconfigure", "room": room, "ptype": "publisher",
                     "audio": true, "video": false},
            "jsep": {"type": "offer", "sdp": sdp},
        }),
    )
    .await?;
    let event = wait_event(api, session, handle, |e| {
        e["jsep"]["type"] == "answer" || !plugin_data(e)["error"].is_null()
    })
    .await?;
    plugin_error(&event)?;
    let feed = plugin_data(&event)["id"]
        .as_u64()
        .ok_or_else(|| LoadgenError::Janus(format!("no publisher id in {event}")))?;
    let answer_sdp = event["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| LoadgenError::Janus(format!("no answer in {event}")))?;
    let answer = started.elapsed();
    peer.accept_answer(answer_sdp.to_owned()).await?;
    // Janus takes subscriptions to a feed only once its own side is up ("webrtcup"), which
    // may come after the client sees the connection up: wait for Janus' word.
    wait_event(api, session, handle, |e| e["janus"] == "webrtcup").await?;
    peer.connected().await?;
    Ok((
        feed,
        SetupTimes {
            answer,
            connected: started.elapsed(),
        },
    ))
}

async fn subscribe(
    api: &JanusApi,
    session: u64,
    room: u64,
    feeds: &[u64],
    peer: &RoomPeer,
) -> Result<(), LoadgenError> {
    let handle = attach(api, session).await?;
    let streams: Vec<Value> = feeds.iter().map(|feed| json!({"feed": feed})).collect();
    let path = format!("/{session}/{handle}");
    api.post(
        &path,
        json!({"janus": "message", "body": {
            "request": "join", "room": room, "ptype": "subscriber", "streams": streams,
        }}),
    )
    .await?;
    let event = wait_event(api, session, handle, |e| {
        e["jsep"]["type"] == "offer" || !plugin_data(e)["error"].is_null()
    })
    .await?;
    plugin_error(&event)?;
    let offer = event["jsep"]["sdp"]
        .as_str()
        .ok_or_else(|| LoadgenError::Janus(format!("no offer in {event}")))?;
    let answer = answer_offer(&peer.pc, offer.to_owned(), true).await?;
    api.post(
        &path,
        json!({
            "janus": "message",
            "body": {"request": "start"},
            "jsep": {"type": "answer", "sdp": answer},
        }),
    )
    .await?;
    Ok(())
}

async fn attach(api: &JanusApi, session: u64) -> Result<u64, LoadgenError> {
    id(&api
        .post(
            &format!("/{session}"),
            json!({"janus": "attach", "plugin": PLUGIN}),
        )
        .await?)
}

fn plugin_data(event: &Value) -> &Value {
    &event["plugindata"]["data"]
}

/// A VideoRoom error in a reply or event (`{"videoroom":"event","error_code":…}`).
fn plugin_error(event: &Value) -> Result<(), LoadgenError> {
    let data = plugin_data(event);
    match data["error"].as_str() {
        Some(error) => Err(LoadgenError::Janus(format!(
            "VideoRoom {}: {error}",
            data["error_code"]
        ))),
        None => Ok(()),
    }
}

/// Long-polls the session until an event of `handle` matches `wanted`; drops the others.
async fn wait_event(
    api: &JanusApi,
    session: u64,
    handle: u64,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value, LoadgenError> {
    loop {
        let events = api.request(&format!("/{session}?maxev=10"), None).await?;
        let events = match events {
            Value::Array(events) => events,
            event => vec![event],
        };
        if let Some(event) = events
            .into_iter()
            .find(|e| e["sender"].as_u64() == Some(handle) && wanted(e))
        {
            return Ok(event);
        }
    }
}
