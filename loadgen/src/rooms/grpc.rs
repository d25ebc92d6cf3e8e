//! A room participant of our server: announce with metadata `room=<name>`, offer to
//! `remotemedia-server`, trickle candidates, then answer every server offer (each adds the
//! tracks of participants who joined since) until the participant leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use webrtc::peer_connection::RTCPeerConnection;

use remotemedia_webrtc::client::SetupTimes;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
    signaling_response::Response as Resp, web_rtc_signaling_client::WebRtcSignalingClient,
    SignalingRequest,
};
use remotemedia_webrtc::signaling::SERVER_PEER_ID;

use super::peer::{answer_offer, RoomPeer};
use crate::error::LoadgenError;

/// How long a participant may take from announce to connected.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A participant's signaling task, answering server offers until `leave`.
pub struct GrpcParticipant {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl GrpcParticipant {
    /// Ends the signaling stream (the server removes the participant).
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Joins `room` as `peer_id` with `peer` (which publishes one track); returns once connected.
///
/// # Errors
/// Signaling failures, an error response, a WebRTC failure or a timeout.
pub async fn join(
    channel: Channel,
    peer_id: String,
    room: String,
    peer: &mut RoomPeer,
) -> Result<(GrpcParticipant, SetupTimes), LoadgenError> {
    let candidates = peer
        .candidates
        .take()
        .ok_or_else(|| LoadgenError::Room("the peer joined twice".into()))?;
    let sdp = peer.offer(false).await?;
    let (times_tx, times_rx) = oneshot::channel();
    let stop = CancellationToken::new();
    let task = tokio::spawn(signal(
        Signaling {
            channel,
            peer_id,
            room,
            pc: Arc::clone(&peer.pc),
            candidates,
            stop: stop.clone(),
        },
        sdp,
        times_tx,
    ));
    let participant = GrpcParticipant { stop, task };
    let setup = async {
        let answered = times_rx
            .await
            .map_err(|_| LoadgenError::Room("signaling ended before the answer".into()))??;
        peer.connected().await?;
        Ok::<_, LoadgenError>(answered)
    };
    match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok((started, answer))) => Ok((
            participant,
            SetupTimes {
                answer,
                connected: started.elapsed(),
            },
        )),
        Ok(Err(err)) => {
            participant.leave().await;
            Err(err)
        }
        Err(_) => {
            participant.leave().await;
            Err(LoadgenError::Room("announce to connected timed out".into()))
        }
    }
}

struct Signaling {
    channel: Channel,
    peer_id: String,
    room: String,
    pc: Arc<RTCPeerConnection>,
    candidates: mpsc::Receiver<Option<webrtc::ice_transport::ice_candidate::RTCIceCandidateInit>>,
    stop: CancellationToken,
}

type Answered = Result<(Instant, Duration), LoadgenError>;

/// The participant's signaling stream: the setup, then server offers answered one by one.
async fn signal(s: Signaling, sdp: String, answered: oneshot::Sender<Answered>) {
    let mut answered = Some(answered);
    let result = run(s, sdp, &mut answered).await;
    if let (Err(err), Some(tx)) = (result, answered.take()) {
        let _ = tx.send(Err(err));
    }
}

async fn run(
    mut s: Signaling,
    sdp: String,
    answered: &mut Option<oneshot::Sender<Answered>>,
) -> Result<(), LoadgenError> {
    let mut grpc = WebRtcSignalingClient::new(s.channel.clone());
    let (outbound, rx) = mpsc::channel(16);
    let mut inbound = grpc.signal(ReceiverStream::new(rx)).await?.into_inner();
    let mut next_id = 0u64;
    let mut send = |request: Req| {
        next_id += 1;
        SignalingRequest {
            request_id: format!("r{next_id}"),
            request: Some(request),
        }
    };
    let closed = |_: mpsc::error::SendError<SignalingRequest>| {
        LoadgenError::Room("the signaling stream closed".into())
    };
    outbound
        .send(send(Req::Announce(pb::AnnounceRequest {
            peer_id: s.peer_id.clone(),
            capabilities: Some(pb::PeerCapabilities {
                audio: true,
                video: false,
                data: false,
                extensions: String::new(),
            }),
            metadata: HashMap::from([("room".to_owned(), s.room.clone())]),
        })))
        .await
        .map_err(closed)?;
    loop {
        let response = inbound
            .message()
            .await?
            .ok_or_else(|| LoadgenError::Room("the server ended the stream".into()))?;
        if response.request_id != "r1" {
            continue;
        }
        match response.response {
            Some(Resp::Ack(_)) => break,
            Some(Resp::Error(err)) => {
                return Err(LoadgenError::Room(format!("announce: {}", err.message)))
            }
            _ => {}
        }
    }
    let started = Instant::now();
    outbound
        .send(send(Req::Offer(pb::OfferRequest {
            to_peer_id: SERVER_PEER_ID.into(),
            sdp,
            r#type: "offer".into(),
        })))
        .await
        .map_err(closed)?;
    loop {
        tokio::select! {
            () = s.stop.cancelled() => return Ok(()),
            Some(candidate) = s.candidates.recv() => {
                let init = candidate.unwrap_or_default();
                outbound.send(send(Req::IceCandidate(pb::IceCandidateRequest {
                    to_peer_id: SERVER_PEER_ID.into(),
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid.unwrap_or_default(),
                    sdp_mline_index: u32::from(init.sdp_mline_index.unwrap_or(0)),
                }))).await.map_err(closed)?;
            }
            message = inbound.message() => {
                let Some(response) = message? else { return Ok(()) };
                match response.response {
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::Answer(a)),
                    })) if a.from_peer_id == SERVER_PEER_ID => {
                        s.pc.set_remote_description(
                            webrtc::peer_connection::sdp::session_description::RTCSessionDescription::answer(a.sdp)?,
                        ).await?;
                        if let Some(tx) = answered.take() {
                            let _ = tx.send(Ok((started, started.elapsed())));
                        }
                    }
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::Offer(offer)),
                    })) if offer.from_peer_id == SERVER_PEER_ID => {
                        let sdp = answer_offer(&s.pc, offer.sdp, false).await?;
                        outbound.send(send(Req::Answer(pb::AnswerRequest {
                            to_peer_id: SERVER_PEER_ID.into(),
                            sdp,
                            r#type: "answer".into(),
                            offer_id: Some(offer.offer_id),
                        }))).await.map_err(closed)?;
                    }
                    Some(Resp::Notification(pb::SignalingNotification {
                        notification: Some(Notification::IceCandidate(c)),
                    })) if c.from_peer_id == SERVER_PEER_ID && !c.candidate.is_empty() => {
                        s.pc.add_ice_candidate(webrtc::ice_transport::ice_candidate::RTCIceCandidateInit {
                            candidate: c.candidate,
                            sdp_mid: (!c.sdp_mid.is_empty()).then_some(c.sdp_mid),
                            sdp_mline_index: u16::try_from(c.sdp_mline_index).ok(),
                            username_fragment: None,
                        }).await?;
                    }
                    Some(Resp::Error(err)) => {
                        return Err(LoadgenError::Room(format!("signaling error: {}", err.message)));
                    }
                    _ => {}
                }
            }
        }
    }
}
